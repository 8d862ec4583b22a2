"""Fit a model version's candidate generators from clicks and item embeddings.

One function for both places that need them: `streamrec train` (on all training sessions, the
version it publishes) and the ranker (on its base split, so that its examples never see their own
sessions). Whatever differs between the two is a parameter here, never a second copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from candidates.bundle import ModelBundle
from candidates.index import CandidateIndex, build_index
from candidates.session_knn import SessionKNN
from streamrec.artifacts import ModelArtifacts
from streamrec.interactions import Interactions
from training.covisitation import build_covisitation
from training.popularity import item_popularity, most_popular, recent_item_popularity

N_POPULAR = 1000


def fit_generators(data: Interactions, item_ids: np.ndarray, embeddings: np.ndarray, *, version: str,
                   path: Path, meta: dict[str, Any] | None = None, window: int = 3, covisit_top_k: int = 50,
                   target_recall: float = 0.95, index_k: int = 100) -> ModelBundle:
    """Artifacts (popularity, co-visitation, categories), FAISS index and session-kNN of `data`;
    rows aligned with `item_ids` (the embeddings' rows). No ranker: it is fitted on top of these."""
    popularity = item_popularity(data, item_ids)
    artifacts = ModelArtifacts(
        version=version, path=Path(path), item_ids=item_ids, item_embeddings=embeddings,
        item_popularity=popularity, popular=most_popular(data, N_POPULAR),
        covisit=build_covisitation(data, item_ids, window=window, top_k=covisit_top_k), meta=dict(meta or {}),
        item_recent_popularity=recent_item_popularity(data, item_ids),
        item_categories=np.array([data.categories.get(i, -1) for i in item_ids.tolist()])
        if data.categories else None)  # -1 = feature_repo's CATEGORY_UNKNOWN
    index, info = build_index(embeddings, item_ids, target_recall=target_recall, k=index_k)
    artifacts.meta["index"] = {key: info.get(key) for key in ("type", "recall_at_k", "ef_search", "nlist", "nprobe", "k")}
    return ModelBundle(artifacts, CandidateIndex(index, info), SessionKNN().fit(data))
