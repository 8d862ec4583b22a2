"""Score retrieved candidates from batch and streaming features.

A transparent weighted blend: the session-kNN score, similarity to the session embedding (stage 2), co-visitation with
the session's recent items and training popularity (stage 1, batch), and the item's click count
in the last hour from the stream (stage 3). Inputs are normalised per request so the weights
mean the same thing on any catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CandidateFeatures:
    """Per-candidate feature columns, aligned with `item_ids`."""

    item_ids: np.ndarray  # int64
    session_knn: np.ndarray  # session-kNN score (0 when not a neighbour-session item)
    similarity: np.ndarray  # cosine to the session embedding
    covisitation: np.ndarray  # co-visitation score with the recent items (0 when none)
    popularity: np.ndarray  # training clicks
    trending_1h: np.ndarray  # streaming clicks in the last hour (0 when unknown)


@dataclass(frozen=True)
class ScoreWeights:
    """Set a priori (session-kNN leads, embeddings and co-visitation refine, popularity and trending
    break ties); a learned ranker tuned on a validation split is to replace them."""

    session_knn: float = 1.0
    similarity: float = 0.3
    covisitation: float = 0.3
    popularity: float = 0.02
    trending: float = 0.05


def _unit(values: np.ndarray) -> np.ndarray:
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values, dtype=np.float32)


def score_candidates(features: CandidateFeatures, weights: ScoreWeights = ScoreWeights()) -> np.ndarray:
    return (
        weights.session_knn * _unit(features.session_knn.astype(np.float32))
        + weights.similarity * features.similarity.astype(np.float32)
        + weights.covisitation * _unit(features.covisitation.astype(np.float32))
        + weights.popularity * _unit(np.log1p(features.popularity.astype(np.float32)))
        + weights.trending * _unit(np.log1p(features.trending_1h.astype(np.float32)))
    )


def top_k(item_ids: np.ndarray, scores: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
    """Best k (item, score) pairs, skipping excluded items."""
    order = np.argsort(-scores, kind="stable")
    out: list[tuple[int, float]] = []
    for position in order:
        item = int(item_ids[position])
        if item in exclude:
            continue
        out.append((item, float(scores[position])))
        if len(out) == k:
            break
    return out
