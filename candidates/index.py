"""The FAISS item index: exact for small catalogues, HNSW or IVF with measured, tuned recall above that.

The search parameter (efSearch for HNSW, nprobe for IVF) is chosen at build time by measuring
recall@k against exact search on item vectors and on session-like mixtures of items, and stored
with the index so serving reproduces the measured recall.

Which index, by catalogue size (measured by `streamrec bench retrieval`, 2 shared cores, 64 dims):
below 20k items exact search is fast enough; up to 200k HNSW; from 200k on IVFFlat, because
HNSW's build outgrows the 5-minute training budget (87 s at 200k items, 647 s at 1M, and p99
7.9 ms at the efSearch 384 its tuning needs) while IVF builds 1M items in 97 s and answers in
p99 0.4 ms at recall@100 0.97. IVF relies on the clustering of trained embeddings (on isotropic
random vectors it needs most of its lists), which is why HNSW stays in charge below 200k.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from streamrec.artifacts import INDEX, INDEX_META

EXACT_MAX_ITEMS = 20_000
IVF_MIN_ITEMS = 200_000
EF_GRID = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)
NPROBE_GRID = (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 2048)
IVF_TRAIN_POINTS_PER_LIST = 64  # k-means sample per list: cell quality saturates well before 256
BUILD_THREADS = faiss.omp_get_max_threads()  # before any CandidateIndex pins OpenMP to 1 thread


def _inner(index: faiss.Index) -> faiss.Index:
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def _hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    inner = _inner(index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    inner = _inner(index)
    return inner if isinstance(inner, faiss.IndexIVF) else None


def set_ef_search(index: faiss.Index, ef: int) -> None:
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.hnsw.efSearch = int(ef)


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = int(nprobe)


def ivf_lists(n: int, min_points_per_list: int = 39) -> int:
    """nlist ≈ 4·√n as a power of two, with at least FAISS's 39 training points per list."""
    target = 2 ** int(round(np.log2(4.0 * np.sqrt(max(n, 1)))))
    cap = 2 ** int(np.floor(np.log2(max(1, n // min_points_per_list))))
    return max(1, min(target, cap))


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


def recall_against(index: faiss.Index, embeddings: np.ndarray, item_ids: np.ndarray, k: int,
                   n_queries: int = 1000, seed: int = 0) -> float:
    """Recall@k of `index` on session-like queries over `embeddings`, against their exact top-k among
    `embeddings`: what the index finds for these vectors, whatever vectors it was built from."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    exact = faiss.IndexIDMap(faiss.IndexFlatIP(x.shape[1]))
    exact.add_with_ids(x, np.asarray(item_ids, dtype=np.int64))
    queries = recall_queries(x, n_queries, seed)
    k = min(k, len(x))
    _, truth = exact.search(queries, k)
    return measure_recall(index, truth, queries, k)


def new_hnsw(x: np.ndarray, ids: np.ndarray, m: int = 32, ef_construction: int = 120) -> faiss.Index:
    """Inner-product HNSW over the rows, id-mapped."""
    hnsw = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = ef_construction
    index = faiss.IndexIDMap(hnsw)
    index.add_with_ids(x, ids)
    return index


def new_ivf(x: np.ndarray, ids: np.ndarray, nlist: int, codec: str = "Flat", seed: int = 0) -> faiss.Index:
    """Inner-product IVF (exact coarse quantizer, k-means on a sample), id-mapped; `codec` e.g. Flat, SQ8."""
    index = faiss.index_factory(x.shape[1], f"IDMap,IVF{nlist},{codec}", faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(seed).choice(len(x), min(len(x), IVF_TRAIN_POINTS_PER_LIST * nlist),
                                                replace=False)
    index.train(x[np.sort(sample)])
    index.add_with_ids(x, ids)
    return index


def _smallest_reaching(apply: Callable[[int], None], grid: Sequence[int], recall_at: Callable[[], float],
                       target: float) -> tuple[int, dict[int, float]]:
    """Walk the grid up to the first value whose recall reaches `target` (else the last); leave it applied."""
    measured: dict[int, float] = {}
    for value in grid:
        apply(value)
        measured[value] = round(recall_at(), 4)
        if measured[value] >= target:
            break
    chosen = list(measured)[-1]
    apply(chosen)
    return chosen, measured


def tune_search(index: faiss.Index, queries: np.ndarray, exact_ids: np.ndarray, k: int,
                target_recall: float) -> dict[str, Any]:
    """Set the smallest efSearch (HNSW) or nprobe (IVF) reaching `target_recall`; what was measured."""
    def recall_at() -> float:
        return measure_recall(index, exact_ids, queries, k)

    hnsw, ivf = _hnsw(index), _ivf(index)
    if hnsw is not None:
        grid = [e for e in EF_GRID if e >= min(k, EF_GRID[-1])] or [EF_GRID[-1]]
        ef, measured = _smallest_reaching(lambda e: set_ef_search(index, e), grid, recall_at, target_recall)
        return {"type": "hnsw", "ef_search": ef, "recall_at_k": measured[ef],
                "recall_by_ef": {str(e): r for e, r in measured.items()}, "n_queries": len(queries)}
    if ivf is not None:
        grid = [p for p in NPROBE_GRID if p < ivf.nlist] + [ivf.nlist]
        nprobe, measured = _smallest_reaching(lambda p: set_nprobe(index, p), grid, recall_at, target_recall)
        return {"type": "ivf", "nlist": int(ivf.nlist), "nprobe": nprobe, "ef_search": None,
                "recall_at_k": measured[nprobe], "recall_by_nprobe": {str(p): r for p, r in measured.items()},
                "n_queries": len(queries)}
    raise TypeError(f"no search parameter to tune on {type(_inner(index)).__name__}")


def build_index(embeddings: np.ndarray, item_ids: np.ndarray, *, target_recall: float = 0.95, k: int = 100,
                m: int = 32, ef_construction: int = 120, exact_max_items: int = EXACT_MAX_ITEMS,
                ivf_min_items: int = IVF_MIN_ITEMS, n_queries: int = 1000,
                seed: int = 0) -> tuple[faiss.Index, dict[str, Any]]:
    """Inner-product index over L2-normalised rows, id-mapped to item ids, plus measured info."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    ids = np.asarray(item_ids, dtype=np.int64)
    n, dim = x.shape
    k_eval = min(k, n)
    previous_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(BUILD_THREADS)
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
        del exact
        if n >= ivf_min_items:
            index = new_ivf(x, ids, ivf_lists(n), seed=seed)
        else:
            index = new_hnsw(x, ids, m, ef_construction)
            info.update(M=m, ef_construction=ef_construction)
        info.update(tune_search(index, queries, truth, k_eval, target_recall))
        return index, info
    finally:
        faiss.omp_set_num_threads(previous_threads)


def save_index(index: faiss.Index, info: dict[str, Any], folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / INDEX))
    (folder / INDEX_META).write_text(json.dumps(info, indent=2))


def load_index(folder: Path) -> tuple[faiss.Index, dict[str, Any]]:
    """Read index and info; efSearch is not reliably persisted by FAISS, so re-apply it (and nprobe)."""
    folder = Path(folder)
    if not (folder / INDEX).exists():
        raise FileNotFoundError(f"no index at {folder}: run `streamrec train` first")
    index = faiss.read_index(str(folder / INDEX))
    info = json.loads((folder / INDEX_META).read_text()) if (folder / INDEX_META).exists() else {}
    if info.get("ef_search"):
        set_ef_search(index, info["ef_search"])
    if info.get("nprobe"):
        set_nprobe(index, info["nprobe"])
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

    def extended(self, vectors: np.ndarray, item_ids: np.ndarray) -> "CandidateIndex":
        """A copy with these items added (FAISS adds to a trained IVF or an HNSW graph in place;
        nothing is rebuilt, the search settings stay); this index is left as it is."""
        index = faiss.clone_index(self.index)
        if len(item_ids):
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(item_ids, dtype=np.int64))
        return CandidateIndex(index, {**self.info, "n": int(index.ntotal), "added_items": int(len(item_ids))})

    def item_ids(self) -> np.ndarray:
        """The ids this index holds (int64)."""
        if isinstance(self.index, faiss.IndexIDMap):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return np.arange(len(self), dtype=np.int64)

    def updated(self, vectors: np.ndarray, item_ids: np.ndarray, *, target_recall: float,
                k: int) -> tuple["CandidateIndex | None", float]:
        """(a copy holding the refined `vectors` of `item_ids` in the graph built from the old ones, with
        the items it lacked added; its measured recall@`k` over them) when it reaches `target_recall`;
        (None, recall) when it does not, is no HNSW graph or holds an item outside `item_ids`: rebuild.
        A warm version moves known items' vectors little (median cosine ~0.99 to the champion's):
        searching the old graph over the new vectors (its storage refilled in the graph's order, FAISS's
        public `storage`) measured 0.945–0.96 recall@100 after one or two Diginetica versions, where the
        old vectors alone gave 0.72–0.84; ~1 s instead of a ~7 s rebuild."""
        from streamrec.item_rows import ItemRows

        item_ids = np.asarray(item_ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.clone_index(self.index)
        hnsw = _hnsw(index)
        held = self.item_ids()
        rows = ItemRows(item_ids).rows(held)
        if hnsw is None or not isinstance(index, faiss.IndexIDMap) or (rows < 0).any():
            return None, 0.0
        storage = faiss.downcast_index(hnsw.storage)
        storage.reset()
        storage.add(vectors[rows])  # graph node i is the i-th vector added: the id map's order
        new = ~np.isin(item_ids, held)
        if new.any():
            index.add_with_ids(vectors[new], item_ids[new])
        recall = round(recall_against(index, vectors, item_ids, k), 4)
        if recall < target_recall:
            return None, recall
        return CandidateIndex(index, {**self.info, "n": int(index.ntotal), "recall_at_k": recall,
                                      "added_items": int(new.sum())}), recall

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
