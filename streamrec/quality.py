"""Ranking quality of next-item predictions (HR, MRR, NDCG @k), computed in one place.

Every evaluator (training's validation figures, the session-kNN tuning, the ranker's report,
`streamrec evaluate`) reduces its predictions to the 1-based rank of the true next item (0 = not
in the top k) and reads the figures from here, so that "HR@20" means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np


def rank_of(label: int, recommended: np.ndarray, k: int) -> int:
    """1-based position of `label` in the first `k` recommended items, 0 when absent."""
    where = np.flatnonzero(np.asarray(recommended)[:k] == label)
    return int(where[0]) + 1 if len(where) else 0


def rank_by_score(scores: np.ndarray, is_label: np.ndarray) -> float:
    """Expected 1-based rank of the labelled candidate when candidates are ordered by score and
    ties are broken at random (a constant feature must not look like a perfect one); 0 when no
    candidate is the label."""
    positive = np.flatnonzero(is_label)
    if len(positive) == 0:
        return 0.0
    score = scores[positive[0]]
    return float((scores > score).sum()) + 1.0 + float((scores == score).sum() - 1) / 2.0


def hit_rate(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks)
    return float(((ranks > 0) & (ranks <= k)).mean()) if len(ranks) else 0.0


def mrr(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = (ranks > 0) & (ranks <= k)
    return float(np.where(hit, 1.0 / np.maximum(ranks, 1), 0.0).mean()) if len(ranks) else 0.0


def ndcg(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = (ranks > 0) & (ranks <= k)
    return float(np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0).mean()) if len(ranks) else 0.0


def report(ranks: np.ndarray, k: int) -> dict[str, float]:
    """{"HR@k", "MRR@k", "NDCG@k"} in percent, rounded to 2 decimals: the figures reports print."""
    return {f"HR@{k}": round(100 * hit_rate(ranks, k), 2), f"MRR@{k}": round(100 * mrr(ranks, k), 2),
            f"NDCG@{k}": round(100 * ndcg(ranks, k), 2)}


def curves(ranks: np.ndarray, k: int) -> dict[str, list[float]]:
    """HR@1..k and MRR@1..k in percent (for the evaluation's plots)."""
    return {"HR": [round(100 * hit_rate(ranks, j), 3) for j in range(1, k + 1)],
            "MRR": [round(100 * mrr(ranks, j), 3) for j in range(1, k + 1)]}
