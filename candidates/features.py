"""Candidate generation and per-candidate features: one code path for serving and ranker training.

Generators: FAISS kNN over the session embedding, session-kNN, co-visitation of the recent items.
Their union is scored by the ranker on the features below; the streaming features (clicks_5m, clicks_1h)
are filled by the caller — from the online store when serving, from Feast's offline store
(point-in-time) when training — so that offline and online features are the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from candidates.fallbacks import Fallbacks
from candidates.index import CandidateIndex
from candidates.session_knn import SessionKNN
from streamrec import feature_schema as s
from streamrec.artifacts import ModelArtifacts
from streamrec.item_rows import ItemRows

FEATURE_NAMES = (
    "session_knn", "session_knn_rank", "similarity", "similarity_last", "covisitation", "popularity",
    "in_session", "since_seen", "session_length", s.CLICKS_5M, s.CLICKS_1H,
    "session_knn_relative", "recent_popularity",
)
STREAMING_FEATURES = s.TRENDING_COUNTS  # filled from the stream (serving) or Feast point-in-time (training)
ABSENT_RANK = 1000.0


@dataclass
class CandidateSet:
    item_ids: np.ndarray  # int64
    features: dict[str, np.ndarray]  # name -> float32 column aligned with item_ids
    sources: dict[str, np.ndarray] = field(default_factory=dict)  # generator -> the item ids it proposed

    def matrix(self, names: tuple[str, ...] = FEATURE_NAMES) -> np.ndarray:
        return np.column_stack([self.features[name] for name in names]).astype(np.float32)


def session_embedding(embeddings: np.ndarray, decay: float) -> np.ndarray | None:
    """Recency-weighted mean of item embeddings (last item weight 1, previous `decay`, ...)."""
    if len(embeddings) == 0:
        return None
    matrix = np.asarray(embeddings, dtype=np.float32)
    weights = decay ** np.arange(len(matrix) - 1, -1, -1, dtype=np.float32)
    vector = weights @ matrix
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else None


class CandidateGenerators:
    """The generators of one model version (or of a training split, when training the ranker)."""

    def __init__(self, model: ModelArtifacts, index: CandidateIndex, session_knn: SessionKNN | None, *,
                 ann_k: int = 100, knn_k: int = 100, covisit_k: int = 100) -> None:
        self.model = model
        self.index = index
        self.session_knn = session_knn
        self.fallbacks = Fallbacks(model)
        self.ann_k, self.knn_k, self.covisit_k = ann_k, knn_k, covisit_k
        self.log_popularity = np.log1p(model.item_popularity.astype(np.float32))
        self.log_recent_popularity = np.log1p(np.asarray(model.item_recent_popularity, dtype=np.float32))

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Model rows of candidate ids (every generator proposes catalogue items only)."""
        rows = self.model.rows_of(item_ids)
        if len(rows) and rows.min() < 0:
            raise KeyError(f"candidates outside the catalogue: {np.asarray(item_ids)[rows < 0][:5].tolist()}")
        return rows

    def for_session(self, items: list[int], decay: float) -> CandidateSet | None:
        """Candidates for `items` with the session embedding from the model's own vectors (offline
        use: ranker training, evaluation); None when no item is known."""
        rows = [r for r in (self.model.row_of(i) for i in items) if r is not None]
        embedding = session_embedding(self.model.item_embeddings[rows], decay) if rows else None
        return None if embedding is None else self.generate(items, embedding)

    def generate(self, items: list[int], embedding: np.ndarray) -> CandidateSet:
        """Union of the generators' candidates for session `items` (oldest first), with features."""
        ann_ids, _ = self.index.search(embedding, self.ann_k)
        if self.session_knn is not None:
            knn_ids, knn_scores = self.session_knn.recommend(items, self.knn_k)
        else:
            knn_ids, knn_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
        co_ids, co_scores = self.fallbacks.covisited_arrays(items, self.covisit_k)
        co_scores = co_scores.astype(np.float32)
        ids = np.unique(np.concatenate([ann_ids.astype(np.int64), knn_ids.astype(np.int64), co_ids]))

        rows = self.rows(ids)
        vectors = self.model.item_embeddings[rows]
        last_row = self.model.row_of(items[-1]) if items else None
        # clicks since each session item was last seen (1 = the last item), looked up per candidate
        latest_first, latest_at = np.unique(np.asarray(items[::-1], dtype=np.int64), return_index=True)
        since_seen = _lookup(ids, latest_first, (latest_at + 1).astype(np.float32), ABSENT_RANK)
        knn = _lookup(ids, knn_ids, knn_scores, 0.0)
        features = {
            "session_knn": knn,
            "session_knn_rank": _lookup(ids, knn_ids, np.arange(1, len(knn_ids) + 1, dtype=np.float32),
                                        ABSENT_RANK),
            "similarity": vectors @ embedding,
            "similarity_last": vectors @ self.model.item_embeddings[last_row] if last_row is not None
            else np.zeros(len(ids), np.float32),
            "covisitation": _lookup(ids, co_ids, co_scores, 0.0),
            "popularity": self.log_popularity[rows],
            "in_session": (since_seen < ABSENT_RANK).astype(np.float32),
            "since_seen": since_seen,
            "session_length": np.full(len(ids), len(items), np.float32),
            s.CLICKS_5M: np.zeros(len(ids), np.float32),
            s.CLICKS_1H: np.zeros(len(ids), np.float32),
            # scores relative to the session's best: comparable across sessions of any length
            "session_knn_relative": knn / knn.max() if len(knn) and knn.max() > 0 else np.zeros(len(ids), np.float32),
            "recent_popularity": self.log_recent_popularity[rows],
        }
        sources = {"faiss": ann_ids.astype(np.int64), "session_knn": knn_ids.astype(np.int64), "covisitation": co_ids}
        return CandidateSet(ids, {k: np.asarray(v, dtype=np.float32) for k, v in features.items()}, sources)


def _lookup(ids: np.ndarray, keys: np.ndarray, values: np.ndarray, default: float) -> np.ndarray:
    """values[keys == id] for each id (default when absent); keys need not be sorted."""
    if len(keys) == 0:
        return np.full(len(ids), default, dtype=np.float32)
    rows = ItemRows(keys).rows(ids)
    return np.where(rows >= 0, np.asarray(values, dtype=np.float32)[rows], np.float32(default)).astype(np.float32)


def merge_session_items(stream_items: list[int], request_items: list[int], limit: int) -> list[int]:
    """Stream items then request items, oldest first, each item once at its latest position."""
    merged: dict[int, None] = {}
    for item in [*stream_items, *request_items]:
        merged.pop(item, None)
        merged[item] = None
    return list(merged)[-limit:]
