"""Session-kNN hyper-parameters chosen on the training data's own validation split.

`tune` holds out the latest sessions of the training data (by time), fits `SessionKNN` once on the
rest and scores every grid point on the held-out next-item cases with `streamrec.quality`: no
constant is ever chosen by looking at test data.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from candidates.session_knn import DEFAULT_PARAMS, SessionKNN
from streamrec import quality
from streamrec.interactions import Interactions, next_item_cases, split_by_time
from training.popularity import most_popular


def evaluate(model: SessionKNN, prefixes: Sequence[Sequence[int]], targets: Sequence[int], *,
             k: int = 20, exclude_seen: bool = False) -> dict[str, float]:
    """HR@k, MRR@k (fractions) and per-query latency (ms) of `model` on (prefix → next item) cases."""
    ranks = np.zeros(len(targets), dtype=np.int64)  # 1-based rank, 0 = not in the top k
    latency = np.zeros(len(targets))
    for c, (prefix, target) in enumerate(zip(prefixes, targets)):
        started = time.perf_counter()
        items, _ = model.recommend(prefix, n=k, exclude=set(map(int, prefix)) if exclude_seen else None)
        latency[c] = time.perf_counter() - started
        ranks[c] = quality.rank_of(int(target), items, k)
    return {"hr": quality.hit_rate(ranks, k), "mrr": quality.mrr(ranks, k),
            "latency_ms_p50": float(np.percentile(latency, 50) * 1e3) if len(latency) else 0.0,
            "latency_ms_p99": float(np.percentile(latency, 99) * 1e3) if len(latency) else 0.0}


def popularity_scores(train: Interactions, targets: Sequence[int], k: int = 20) -> dict[str, float]:
    """HR@k / MRR@k (fractions) of recommending the k most clicked training items to everyone."""
    top = most_popular(train, k)
    ranks = np.array([quality.rank_of(int(t), top, k) for t in targets], dtype=np.int64)
    return {"hr": quality.hit_rate(ranks, k), "mrr": quality.mrr(ranks, k)}


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of a {param: [values]} grid, as dicts."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def tune(train: Interactions, grid: Mapping[str, Sequence[Any]], *, valid_share: float = 0.1,
         max_cases: int = 5000, seed: int = 0, metric: str = "mrr", k: int = 20,
         base: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grid-search SessionKNN on a time-based validation split of `train`; never touches test data.

    The last `valid_share` of sessions (by start time) are held out; every prefix of a held-out
    session → its next click is a case (full prefix, sampled to `max_cases`); the model is fitted
    once on the rest (hyper-parameters do not change the index). Parameters absent from `grid`
    come from `base` (default DEFAULT_PARAMS). The best point maximises `metric` @k — "mrr"
    (default: rank quality at the top, which a candidate generator feeding a ranker and an
    evaluation baseline both need) or "hr" — with the other metric breaking ties.
    Returns (best full parameter dict, report with every grid point's HR/MRR and popularity's).
    """
    if metric not in ("mrr", "hr"):
        raise ValueError("metric must be 'mrr' or 'hr'")
    fit_part, valid = split_by_time(train, valid_share)
    prefixes, targets = next_item_cases(valid, context=1 << 30, max_cases=max_cases, seed=seed)
    started = time.perf_counter()
    model = SessionKNN(**{**DEFAULT_PARAMS, **(base or {})}).fit(fit_part)
    fit_seconds = time.perf_counter() - started
    base_params = model.get_params()
    other = "hr" if metric == "mrr" else "mrr"
    results = []
    for point in grid_points(grid):
        model.set_params(**{**base_params, **point})
        scores = evaluate(model, prefixes, targets, k=k)
        results.append({"params": point, **{m: round(v, 5) for m, v in scores.items()}})
    if not results:
        raise ValueError("empty grid")
    best = max(results, key=lambda r: (r[metric], r[other]))
    report = {"metric": f"{metric}@{k}", "k": k, "valid_sessions": valid.n_sessions,
              "fit_sessions": fit_part.n_sessions, "valid_cases": len(targets),
              "fit_seconds": round(fit_seconds, 2), "popularity": popularity_scores(fit_part, targets, k),
              "results": results, "best": best}
    return {**base_params, **best["params"]}, report
