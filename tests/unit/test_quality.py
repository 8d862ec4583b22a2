"""The one definition of HR/MRR/NDCG@k every report uses (streamrec/quality.py)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec import quality


def test_rank_of_is_one_based_and_cut_at_k() -> None:
    assert quality.rank_of(7, np.array([3, 7, 9]), 20) == 2
    assert quality.rank_of(8, np.array([3, 7]), 20) == 0
    assert quality.rank_of(9, np.array([3, 7, 9]), 2) == 0  # beyond k is a miss


def test_metrics_from_ranks() -> None:
    ranks = np.array([1, 2, 0, 20, 21])
    assert quality.hit_rate(ranks, 20) == pytest.approx(3 / 5)
    assert quality.mrr(ranks, 20) == pytest.approx((1 + 1 / 2 + 1 / 20) / 5)
    assert quality.ndcg(ranks, 20) == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(21)) / 5)
    assert quality.report(ranks, 20) == {"HR@20": 60.0, "MRR@20": round(100 * (1.55 / 5), 2),
                                         "NDCG@20": round(100 * quality.ndcg(ranks, 20), 2)}
    curves = quality.curves(ranks, 20)
    assert curves["HR"][0] == 20.0 and curves["HR"][1] == 40.0 and curves["HR"][-1] == 60.0


def test_ties_in_scores_get_their_expected_rank() -> None:
    # a constant feature must not look perfect: the label among 4 equal scores ranks 2.5 on average
    assert quality.rank_by_score(np.zeros(4), np.array([0, 0, 1, 0], bool)) == 2.5
    assert quality.rank_by_score(np.array([0.9, 0.1, 0.5]), np.array([0, 0, 1], bool)) == 2.0
    assert quality.rank_by_score(np.array([0.9, 0.1]), np.array([0, 0], bool)) == 0.0


def test_empty_input_scores_zero() -> None:
    assert quality.hit_rate(np.zeros(0), 20) == 0.0 and quality.mrr(np.zeros(0), 20) == 0.0
