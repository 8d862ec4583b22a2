"""`streamrec train`: dataset → embeddings → co-visitation → popularity → artifacts + index + Feast files.

A run writes a new immutable version folder and only then promotes it (the model registry moves
CURRENT and records it in HISTORY), so servers either see the old complete model or the new
complete one. With `promote=False` the version is written beside the champion and nothing else
changes: the batch sources stay the champion's.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


from streamrec.artifacts import ModelArtifacts
from streamrec.model_registry import ModelRegistry
from streamrec.settings import Settings
from streamrec.datasets import load_dataset
from streamrec.interactions import Interactions

SYNTHETIC_KNOBS = ("n_sessions", "n_items", "n_topics", "seed")


def _version(now: datetime, data: Interactions, knobs: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps([data.name, data.n_clicks, now.isoformat(), sorted(knobs.items())],
                                     default=str).encode()).hexdigest()[:7]
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{digest}"


def data_window(data: Interactions) -> dict[str, Any]:
    """First and last event time of the training data (ISO, UTC); `synthetic_clock`: the loader
    made the times up (the dataset has none), so they only order the clicks."""
    if not len(data):
        return {"first": None, "last": None, "synthetic_clock": data.synthetic_clock}
    first, last = (datetime.fromtimestamp(float(t), timezone.utc).isoformat(timespec="seconds")
                   for t in (data.timestamps.min(), data.timestamps.max()))
    return {"first": first, "last": last, "synthetic_clock": bool(data.synthetic_clock)}


def train(settings: Settings, dataset: Path | None, *, progress: bool = True, promote: bool = True,
          data: Interactions | None = None, **knobs: Any) -> ModelArtifacts:
    """Train a model version and (`promote`, the default) make it the champion; knobs: candidates, max_cases, window, covisit_top_k,
    target_recall, index_k, split, n_sessions/n_items/n_topics/seed for synthetic data, and for
    the ranker: ranker (False: none), ranker_train_cases, ranker_valid_cases, ranker_threads,
    ranker_ablation (also fit the twin without streaming features: `streamrec evaluate` only),
    ranker_skew_check (score the ranker's validation with refitted generators, see train_ranker),
    streaming_features, before_feast (called before the first Feast/online-store access, e.g. to
    wait for a stack started in parallel). `data`: train on these clicks instead of loading
    `dataset` (which then only names the source in the version's meta)."""
    from rich.console import Console

    from training.batch_sources import write_batch_sources
    from training.embeddings import DEFAULT_CANDIDATES, train_embeddings
    from training.generators import fit_generators
    from streamrec.synthetic import generate_sessions

    console = Console(quiet=not progress, stderr=True)  # stdout stays free for --json
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 2)
        return time.perf_counter()

    t = time.perf_counter()
    if data is not None:
        pass
    elif dataset is None:
        data = generate_sessions(**{k: knobs[k] for k in SYNTHETIC_KNOBS if k in knobs})
    else:
        data = load_dataset(Path(dataset), split=knobs.get("split", "train"))
    console.print(f"[bold]dataset[/] {data.name}: {data.n_clicks:,} clicks, {data.n_sessions:,} sessions")
    t = lap("load", t)

    result = train_embeddings(data, candidates=knobs.get("candidates", DEFAULT_CANDIDATES),
                              max_cases=knobs.get("max_cases", 5000), decay=settings.recency_decay,
                              seed=knobs.get("seed", 0), progress=progress)
    t = lap("embeddings", t)
    item_ids = result.item_ids
    now = datetime.now(timezone.utc)
    version = _version(now, data, {k: v for k, v in knobs.items() if not callable(v)})
    meta: dict[str, Any] = {
        "dataset": str(dataset) if dataset is not None else "synthetic", "dataset_name": data.name,
        "algorithm": result.algorithm, "factors": result.factors, "validation": result.report,
        "n_items": int(len(item_ids)), "n_clicks": int(data.n_clicks), "n_sessions": int(data.n_sessions),
        "trained_at": now.isoformat(), "data_window": data_window(data),
    }
    bundle = fit_generators(data, item_ids, result.embeddings, version=version, path=settings.models_dir / version,
                            meta=meta, window=knobs.get("window", 3), covisit_top_k=knobs.get("covisit_top_k", 50),
                            target_recall=knobs.get("target_recall", 0.95), index_k=knobs.get("index_k", 100))
    artifacts, index_info = bundle.artifacts, bundle.index.info
    t = lap("generators", t)
    artifacts.meta["timings_s"] = timings
    bundle.save()
    if promote:  # the batch sources (what `feast materialize` puts online) are the champion's
        write_batch_sources(settings.batch_dir, item_ids, result.embeddings, artifacts.item_popularity,
                            data.categories, event_time=now)
    t = lap("write", t)
    if knobs.get("ranker", True):
        from training.ranker import train_ranker

        streaming = None
        if not data.synthetic_clock and knobs.get("streaming_features", True):
            from training.historical_features import feast_streaming_features

            if knobs.get("before_feast"):
                knobs["before_feast"]()
            console.print("ranker: backfilling the stream's item windows into Feast's offline store")
            streaming = feast_streaming_features(settings, data)
            artifacts.meta["feast_applied"] = True  # over this version's batch sources
            t = lap("backfill", t)
        fitted = train_ranker(
            data, artifacts.path, algorithm=result.algorithm, factors=result.factors, decay=settings.recency_decay,
            ann_k=settings.candidates_k, max_session_items=settings.max_session_items,
            train_cases=knobs.get("ranker_train_cases", 20_000), valid_cases=knobs.get("ranker_valid_cases", 8_000),
            streaming=streaming, ablation=knobs.get("ranker_ablation", False),
            skew_check=knobs.get("ranker_skew_check", False), threads=knobs.get("ranker_threads", 2),
            log=console.print)
        artifacts.meta["ranker"] = bundle.ranker_report = fitted.report
        bundle.ranker, bundle.ranker_batch_only = fitted.ranker, fitted.batch_only
        t = lap("ranker", t)
    artifacts.meta["timings_s"]["total"] = round(time.perf_counter() - started, 2)
    bundle.save()  # with the ranker, and meta with the complete timings
    if promote:
        ModelRegistry(settings.models_dir).promote(version)
    r, total = result.report, artifacts.meta["timings_s"]["total"]
    ef = f" ef={index_info['ef_search']}" if index_info.get("ef_search") else ""
    console.print(f"[bold green]model {version}[/] in {total:.0f}s: {result.algorithm} f={result.factors}, "
                  f"valid HR@{r['k']}={r['best_hr']:.3f} (popularity {r['popularity_hr']:.3f}); "
                  f"{len(item_ids):,} items; index {index_info['type']}{ef} "
                  f"recall@{index_info['k']}={index_info['recall_at_k']:.3f}")
    console.print(f"  → {artifacts.path}")
    return artifacts
