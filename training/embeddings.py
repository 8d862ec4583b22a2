"""Item embeddings from implicit-feedback factorisation, with the algorithm chosen by validation.

Sessions play the role of users: items clicked in the same sessions get similar factors, which
is what a session-embedding nearest-neighbour search needs. The last 10% of sessions (by time)
are held out; each candidate is scored by next-item HR@20 on them, the best is retrained on all.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's own threads do the parallel work

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from streamrec import quality
from streamrec.interactions import Interactions, next_item_cases, split_by_time
from streamrec.item_rows import ItemRows
from training.popularity import most_popular

DEFAULT_CANDIDATES: tuple[tuple[str, int], ...] = (("als", 64), ("bpr", 64), ("als", 128))
ITERATIONS = {"als": 15, "bpr": 100}
BPR_LEARNING_RATE = 0.05


@dataclass
class EmbeddingResult:
    """Chosen model's L2-normalised item embeddings (rows aligned with item_ids) and its report."""

    embeddings: np.ndarray
    item_ids: np.ndarray
    algorithm: str
    factors: int
    report: dict[str, Any] = field(default_factory=dict)


def session_item_matrix(data: Interactions, item_ids: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary session × item CSR matrix and the item id of each column: `data`'s items, or the
    sorted `item_ids` given (a superset of them: the warm start's catalogue)."""
    if item_ids is None:
        item_ids, cols = np.unique(data.item_ids, return_inverse=True)
    else:
        cols = ItemRows(item_ids).rows(data.item_ids)
    rows = data.session_codes()
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                           shape=(int(rows[-1]) + 1 if len(rows) else 0, len(item_ids)))
    matrix.data[:] = 1.0  # duplicates were summed: keep presence only
    return matrix, item_ids


def fit_item_factors(matrix: sp.csr_matrix, algorithm: str, factors: int, *, seed: int = 0,
                     iterations: int | None = None, on_iteration=None, init: np.ndarray | None = None,
                     learning_rate: float = BPR_LEARNING_RATE) -> np.ndarray:
    """Train one implicit model; return its L2-normalised item factors (BPR bias column dropped).
    `init`: item vectors (items × factors) to start from instead of random ones: the warm start
    (training.continual). implicit keeps item factors that are set before `fit` (both ALS and BPR).
    `learning_rate`: BPR's SGD step (ALS has none)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    iterations = iterations or ITERATIONS[algorithm]
    callback = (lambda *args: on_iteration()) if on_iteration else None
    with threadpool_limits(1, "blas"):
        if algorithm == "als":
            model = AlternatingLeastSquares(factors=factors, regularization=0.05, alpha=10.0,
                                            iterations=iterations, random_state=seed)
            if init is not None:
                model.item_factors = np.array(init, np.float32)
            model.fit(matrix, show_progress=False, callback=callback)
            item_factors = np.asarray(model.item_factors)
        elif algorithm == "bpr":
            model = BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate, regularization=0.01,
                                                iterations=iterations, random_state=seed)
            if init is not None:  # the item bias column starts at 0
                model.item_factors = np.hstack([np.asarray(init, np.float32), np.zeros((len(init), 1), np.float32)])
            model.fit(matrix, show_progress=False, callback=callback)
            item_factors = np.asarray(model.item_factors)[:, :-1]  # last column is the item bias
        else:
            raise ValueError(f"unknown algorithm {algorithm!r}; expected 'als' or 'bpr'")
    return normalise(item_factors)


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def hit_rate(embeddings: np.ndarray, item_ids: np.ndarray, prefixes: Sequence[np.ndarray],
             targets: np.ndarray, *, k: int = 20, decay: float = 0.7, exclude_seen: bool = True,
             batch: int = 1024) -> float:
    """HR@k of exact cosine search with a recency-weighted mean of the prefix's known items."""
    rows_of = ItemRows(item_ids)
    queries = np.zeros((len(targets), embeddings.shape[1]), dtype=np.float32)
    seen: list[np.ndarray] = []
    for q, prefix in enumerate(prefixes):
        rows = rows_of.rows(prefix)
        weights = decay ** np.arange(len(rows) - 1, -1, -1, dtype=np.float32)
        known = rows >= 0
        queries[q] = weights[known] @ embeddings[rows[known]] if known.any() else 0.0
        seen.append(rows[known])
    has_query = np.abs(queries).sum(axis=1) > 0
    ranks = np.zeros(len(targets), dtype=np.int64)
    for lo in range(0, len(targets), batch):
        scores = queries[lo:lo + batch] @ embeddings.T
        if exclude_seen:
            for q in range(scores.shape[0]):
                scores[q, seen[lo + q]] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        for q in range(scores.shape[0]):
            if has_query[lo + q]:
                ranks[lo + q] = quality.rank_of(int(targets[lo + q]), item_ids[top[q]], k)
    return quality.hit_rate(ranks, k)


def popularity_hit_rate(train: Interactions, prefixes: Sequence[np.ndarray], targets: np.ndarray,
                        k: int = 20) -> float:
    """HR@k of recommending the k most popular training items (a floor every model must beat)."""
    top = most_popular(train, k)
    return quality.hit_rate(np.array([quality.rank_of(int(t), top, k) for t in targets], dtype=np.int64), k)


def train_embeddings(data: Interactions, *, candidates: Sequence[tuple[str, int]] = DEFAULT_CANDIDATES,
                     k: int = 20, max_cases: int = 5000, decay: float = 0.7, seed: int = 0,
                     progress: bool = True) -> EmbeddingResult:
    """Pick the best (algorithm, factors) by validation HR@k, then retrain it on all of `data`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    train, valid = split_by_time(data)
    train_matrix, train_items = session_item_matrix(train)
    prefixes, targets = next_item_cases(valid, max_cases=max_cases, seed=seed)
    report: dict[str, Any] = {"k": k, "valid_sessions": valid.n_sessions, "valid_cases": len(targets),
                              "popularity_hr": popularity_hit_rate(train, prefixes, targets, k), "candidates": []}
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False, console=Console(stderr=True)) as bar:
        for algorithm, factors in candidates:
            task = bar.add_task(f"{algorithm} f={factors} (valid)", total=ITERATIONS[algorithm])
            started = time.perf_counter()
            emb = fit_item_factors(train_matrix, algorithm, factors, seed=seed,
                                   on_iteration=lambda t=task: bar.advance(t))
            hr = hit_rate(emb, train_items, prefixes, targets, k=k, decay=decay)
            bar.update(task, description=f"{algorithm} f={factors} HR@{k}={hr:.3f}")
            report["candidates"].append({"algorithm": algorithm, "factors": factors, "hr": round(hr, 4),
                                         "seconds": round(time.perf_counter() - started, 1)})
        best = max(report["candidates"], key=lambda c: c["hr"])
        matrix, item_ids = session_item_matrix(data)
        task = bar.add_task(f"{best['algorithm']} f={best['factors']} (all)", total=ITERATIONS[best["algorithm"]])
        embeddings = fit_item_factors(matrix, best["algorithm"], best["factors"], seed=seed,
                                      on_iteration=lambda: bar.advance(task))
    report.update(best_algorithm=best["algorithm"], best_factors=best["factors"], best_hr=best["hr"])
    return EmbeddingResult(embeddings, item_ids, best["algorithm"], best["factors"], report)
