"""The FAISS item index: exact for small catalogues, HNSW with measured, tuned recall above that.

efSearch is chosen at build time by measuring recall@k against exact search on item vectors and
on session-like mixtures of items (what the API really queries with), and stored with the index
so serving reproduces the measured recall.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from streamrec.artifacts import INDEX, INDEX_META

EXACT_MAX_ITEMS = 20_000
EF_GRID = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)
_BUILD_THREADS = faiss.omp_get_max_threads()  # before any CandidateIndex pins OpenMP to 1 thread


def _hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def set_ef_search(index: faiss.Index, ef: int) -> None:
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.hnsw.efSearch = int(ef)


def recall_queries(embeddings: np.ndarray, n: int = 1000, seed: int = 0) -> np.ndarray:
    """Half single-item queries, half normalised means of 2-4 random items (session-like)."""
    rng = np.random.default_rng(seed)
    singles = embeddings[rng.integers(0, len(embeddings), n // 2)]
    mixes = np.stack([embeddings[rng.integers(0, len(embeddings), rng.integers(2, 5))].mean(axis=0)
                      for _ in range(n - n // 2)])
    queries = np.vstack([singles, mixes]).astype(np.float32)
    return queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)


def measure_recall(index: faiss.Index, exact_ids: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k ids that the index returns in its top-k."""
    _, found = index.search(queries, k)
    hits = sum(len(np.intersect1d(f[f >= 0], e[e >= 0])) for f, e in zip(found, exact_ids))
    return hits / max(1, int((exact_ids >= 0).sum()))


def build_index(embeddings: np.ndarray, item_ids: np.ndarray, *, target_recall: float = 0.95, k: int = 100,
                m: int = 32, ef_construction: int = 120, exact_max_items: int = EXACT_MAX_ITEMS,
                n_queries: int = 1000, seed: int = 0) -> tuple[faiss.Index, dict[str, Any]]:
    """Inner-product index over L2-normalised rows, id-mapped to item ids, plus measured info."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    ids = np.asarray(item_ids, dtype=np.int64)
    n, dim = x.shape
    k_eval = min(k, n)
    previous_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(_BUILD_THREADS)
    try:
        exact = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        exact.add_with_ids(x, ids)
        info: dict[str, Any] = {"n": n, "dim": dim, "k": k_eval, "metric": "inner_product",
                                "target_recall": target_recall}
        if n < exact_max_items:
            info.update(type="flat", recall_at_k=1.0, ef_search=None)
            return exact, info
        queries = recall_queries(x, n_queries, seed)
        _, truth = exact.search(queries, k_eval)
        index = faiss.IndexIDMap(faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT))
        _hnsw(index).hnsw.efConstruction = ef_construction
        index.add_with_ids(x, ids)
        measured: dict[int, float] = {}
        for ef in [e for e in EF_GRID if e >= min(k_eval, EF_GRID[-1])] or [EF_GRID[-1]]:
            set_ef_search(index, ef)
            measured[ef] = round(measure_recall(index, truth, queries, k_eval), 4)
            if measured[ef] >= target_recall:
                break
        ef = list(measured)[-1]  # the first reaching the target, else the largest tried
        set_ef_search(index, ef)
        info.update(type="hnsw", M=m, ef_construction=ef_construction, ef_search=ef, recall_at_k=measured[ef],
                    recall_by_ef={str(e): r for e, r in measured.items()}, n_queries=len(queries))
        return index, info
    finally:
        faiss.omp_set_num_threads(previous_threads)


def save_index(index: faiss.Index, info: dict[str, Any], folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / INDEX))
    (folder / INDEX_META).write_text(json.dumps(info, indent=2))


def load_index(folder: Path) -> tuple[faiss.Index, dict[str, Any]]:
    """Read index and info; efSearch is not reliably persisted by FAISS, so re-apply it."""
    folder = Path(folder)
    if not (folder / INDEX).exists():
        raise FileNotFoundError(f"no index at {folder}: run `streamrec train` first")
    index = faiss.read_index(str(folder / INDEX))
    info = json.loads((folder / INDEX_META).read_text()) if (folder / INDEX_META).exists() else {}
    if info.get("ef_search"):
        set_ef_search(index, info["ef_search"])
    return index, info


class CandidateIndex:
    """Per-request nearest-item search for one session embedding (single-threaded on purpose)."""

    def __init__(self, index: faiss.Index, info: dict[str, Any] | None = None) -> None:
        faiss.omp_set_num_threads(1)  # batch size 1: OpenMP fan-out only adds latency
        self.index = index
        self.info = info or {}
        self.dim = index.d

    @classmethod
    def load(cls, folder: Path) -> "CandidateIndex":
        return cls(*load_index(folder))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, session_embedding: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids (int64) and inner-product scores (float32); fewer if the index is small."""
        query = np.ascontiguousarray(np.asarray(session_embedding, dtype=np.float32).reshape(1, -1))
        if query.shape[1] != self.dim:
            raise ValueError(f"session embedding has dim {query.shape[1]}, index has {self.dim}")
        if k <= 0 or len(self) == 0 or not np.isfinite(query).all() or not query.any():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores, ids = self.index.search(query, int(k))
        valid = ids[0] >= 0
        return ids[0][valid].astype(np.int64), scores[0][valid].astype(np.float32)
