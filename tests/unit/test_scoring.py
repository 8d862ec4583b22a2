"""The scorer a model version asks for: its ranker, the blend, or popularity alone (a baseline)."""

from __future__ import annotations

import numpy as np

from candidates.features import CandidateSet
from serving.scoring import Scorer, top_k


def candidates() -> CandidateSet:
    n = 4
    features = {name: np.zeros(n, dtype=np.float32) for name in
                ("session_knn", "similarity", "covisitation", "popularity", "clicks_1h")}
    features["session_knn"][:] = [1.0, 0.5, 0.2, 0.0]  # what the session says
    features["popularity"][:] = [0.1, 0.2, 0.3, 5.0]  # what everyone clicks
    return CandidateSet(np.array([10, 11, 12, 13]), features)


def test_a_popularity_baseline_version_ranks_by_popularity_alone() -> None:
    scorer = Scorer.for_version(None, {"scorer": "popularity"})
    assert (scorer.kind, scorer.uses) == ("popularity", frozenset({"popularity"}))
    assert [i for i, _ in top_k(np.array([10, 11, 12, 13]), scorer.score(candidates()), 4, set())] == [13, 12, 11, 10]


def test_a_version_without_a_scorer_entry_keeps_the_blend() -> None:
    scorer = Scorer.for_version(None, {})
    assert scorer.kind == "blend"
    assert top_k(np.array([10, 11, 12, 13]), scorer.score(candidates()), 1, set())[0][0] == 10
