"""Stateful training: a new model version warm-started from the champion and a window of new clicks.

A full retrain (training.pipeline) re-reads all history, searches the embedding algorithm and
fits every generator and the ranker from nothing. The stateful path starts from the champion:
- embeddings: ALS over the session memory + the window, initialised with the champion's item
  vectors, for a few iterations and no algorithm search; items the memory no longer holds keep
  their vectors; new items start from the mean vector of the items their sessions also clicked;
- co-visitation: the champion's lists × a decay + the window's lists;
- popularity: the champion's counts × the same decay + the window's; "recent" popularity is
  counted over the newest share of the session memory, as a full retrain counts it over its data
  (not over the window alone, whose size follows the triggers: the ranker would see its scale move);
- session-kNN: its memory (the champion's sessions, `SessionKNN.memory`) gains the window's
  sessions, capped to the newest `memory_sessions`;
- the FAISS index: the champion's, with the new items added, while its recall over the refined
  vectors (re-measured each version) still reaches the target; else rebuilt over them;
- the ranker continues the champion's booster (`init_model`) on fresh examples whose candidates
  come from a version that never saw them (no leakage): the recent gates' hold-outs, which the
  learner pools (older ones replayed, the newest third for early stopping), or else cases cut from
  the window with the champion's generators;
- after the gate, `fold_in` counts the hold-out into the passed version (counts, session-kNN memory,
  new items added to the index; embeddings and ranker as gated): that is what serves;
- a light version (new items, between warm ones) is `fold_in` of the window onto the warm version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from candidates.bundle import ModelBundle
from candidates.features import FEATURE_NAMES, STREAMING_FEATURES
from candidates.index import CandidateIndex, build_index
from candidates.ranker_model import RankerModel
from candidates.session_knn import SessionKNN
from streamrec.artifacts import ModelArtifacts
from streamrec.interactions import Interactions, split_by_time
from streamrec.item_rows import ItemRows
from training.covisitation import build_covisitation, merge_covisitation
from training.embeddings import fit_item_factors, normalise, session_item_matrix
from training.generators import N_POPULAR
from training.popularity import item_popularity, recent_item_popularity
from training.ranker import Examples


MIN_RANKER_CASES = 200  # fewer labelled cases than this: the champion's ranker is kept as it is


@dataclass(frozen=True)
class WarmStart:
    """The stateful path's knobs (defaults: see the module docstring for what each keeps)."""

    # The champion's algorithm continues from its vectors (a BPR champion as BPR: a few ALS sweeps
    # from BPR vectors make another model than the full retrain chooses), with the full training's
    # parameters and fewer iterations (ALS sweeps; BPR epochs of SGD over the memory).
    als_iterations: int = 3
    bpr_iterations: int = 20
    # BPR's step for those epochs: from a converged champion, the full training's 0.05 left known
    # items at a median cosine of 0.996 to its vectors, and the test set behind a refit from scratch
    # by 0.35 HR@20 (Diginetica, the continual champion after the stream: 20 epochs at 0.05 gave
    # 53.86, at 0.2 54.25 with a cosine of 0.983, a 100-epoch refit 54.31 at 4.5 times the CPU).
    bpr_learning_rate: float = 0.2
    # Refit the embeddings from scratch (the champion's algorithm and size, its full iterations, no
    # algorithm search) instead: the learner asks for it when drift fired. Warm BPR leaves known
    # items within a cosine of ~0.99 of the champion's vectors, and drift says those are out of date.
    refit_embeddings: bool = False
    # Old counts (co-visitation, popularity) weigh 0.5 ** (new clicks / half-life): forgetting per
    # click, not per version, so it does not depend on how often the triggers fire. None: no
    # forgetting, the counts a full retrain on all the data would have. (A per-version 0.8 left the
    # first version's counts at 0.8^8 after two slices of Diginetica and trailed the full retrain.)
    half_life_clicks: int | None = None
    memory_sessions: int | None = None  # None: keep every session (as a full retrain would see)
    covisit_window: int = 3
    covisit_top_k: int = 50
    # The ranker continues on the window's newest cases, a few trees at a time: measured on YooChoose
    # (one version from 8k new clicks), 3,000/1,500 cases with a patience of 10 rounds gave the same
    # hold-out HR@20 as 6,000/3,000 with 40 (68.7 vs 68.5) at a third of the CPU (9 vs 27 s) and
    # 25 trees added instead of 112, so the served model grows slowly.
    ranker_train_cases: int = 3000
    ranker_valid_cases: int = 1500
    ranker_rounds: int = 150
    ranker_patience: int = 10  # rounds without a validation gain before the continuation stops
    ranker_threads: int = 1  # the learner runs beside the API and the worker: OpenMP on every core crawls when one is busy
    target_recall: float = 0.95
    index_k: int = 100


def concat(*parts: Interactions) -> Interactions:
    """One `Interactions` of several (session ids become strings, so codes cannot collide)."""
    parts = tuple(p for p in parts if len(p))
    if not parts:
        return Interactions(np.zeros(0, str), np.zeros(0, np.int64), np.zeros(0))
    categories: dict[int, int] = {}
    for p in parts:
        categories.update(p.categories)
    return Interactions(np.concatenate([p.session_ids.astype(str) for p in parts]),
                        np.concatenate([p.item_ids for p in parts]),
                        np.concatenate([p.timestamps for p in parts]), categories, parts[-1].name,
                        all(p.synthetic_clock for p in parts))


def newest_sessions(data: Interactions, limit: int | None) -> Interactions:
    """The `limit` sessions whose last click is newest (all when `limit` is None)."""
    if limit is None or data.n_sessions <= limit:
        return data
    starts = data.session_starts()
    last = data.timestamps[np.append(starts[1:], len(data)) - 1]
    keep = np.zeros(len(starts), dtype=bool)
    keep[np.argsort(-last, kind="stable")[:limit]] = True
    return data.subset_sessions(keep)


def known_and_new_vectors(champion: ModelArtifacts, matrix, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, known) over `item_ids` (sorted, ⊇ the champion's): the champion's vectors, and for a
    new item the mean of the known items its sessions clicked (`matrix`: sessions × `item_ids`);
    zero when its sessions clicked no known item."""
    old_rows = champion.rows_of(item_ids)
    known = old_rows >= 0
    vectors = np.zeros((len(item_ids), champion.dim), np.float32)
    vectors[known] = champion.item_embeddings[old_rows[known]]
    item_means = matrix.T @ (matrix @ vectors)
    vectors[~known] = normalise(np.asarray(item_means[~known]))  # a zero row stays zero
    return vectors, known


def warm_embeddings(champion: ModelArtifacts, memory: Interactions, item_ids: np.ndarray,
                    config: WarmStart) -> tuple[np.ndarray, dict[str, Any]]:
    """Item vectors for `item_ids` (sorted, ⊇ the champion's): the champion's algorithm (ALS or BPR)
    warm-started from its vectors."""
    matrix, _ = session_item_matrix(memory, item_ids)
    init, known = known_and_new_vectors(champion, matrix, item_ids)
    algorithm = champion.meta.get("algorithm", "als")
    if config.refit_embeddings:  # a new space: only items the memory holds can be placed in it
        vectors = fit_item_factors(matrix, algorithm, champion.dim)
    else:
        iterations = config.bpr_iterations if algorithm == "bpr" else config.als_iterations
        vectors = fit_item_factors(matrix, algorithm, champion.dim, iterations=iterations, init=init,
                                   learning_rate=config.bpr_learning_rate)
    in_memory = np.asarray(matrix.sum(axis=0)).ravel() > 0
    vectors[~in_memory] = init[~in_memory]  # nothing to refine them with: keep what was known
    drift = np.einsum("ij,ij->i", vectors[known & in_memory], init[known & in_memory])
    return vectors, {"algorithm": algorithm, "refit": config.refit_embeddings, "new_items": int((~known).sum()),
                     "refined_items": int((known & in_memory).sum()),
                     "kept_items": int((known & ~in_memory).sum()),
                     "median_cosine_to_champion": round(float(np.median(drift)), 4) if len(drift) else None}


def refreshed_index(old: CandidateIndex, embeddings: np.ndarray, item_ids: np.ndarray,
                    config: WarmStart) -> CandidateIndex:
    """The champion's index with the new items added while it still reaches the target recall over
    the refined vectors (`CandidateIndex.updated`); rebuilt (recall re-tuned) when it does not, or
    when the embeddings were refitted into a new space."""
    if not config.refit_embeddings:
        kept, _ = old.updated(embeddings, item_ids, target_recall=config.target_recall, k=config.index_k)
        if kept is not None:
            kept.info["rebuilt"] = False
            return kept
    index, info = build_index(embeddings, item_ids, target_recall=config.target_recall, k=config.index_k)
    return CandidateIndex(index, {**info, "rebuilt": True})


def forgetting(config: WarmStart, new_clicks: int) -> float:
    """The weight old counts keep after `new_clicks` more (1.0 without a half-life)."""
    return 1.0 if not config.half_life_clicks else 0.5 ** (new_clicks / config.half_life_clicks)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


def _window(parent: dict[str, Any], window: Interactions) -> dict[str, Any]:
    """The parent's data window extended to the new clicks' last time."""
    from training.pipeline import data_window

    new = data_window(window)
    return {"first": parent.get("first") or new["first"], "last": new["last"] or parent.get("last"),
            "synthetic_clock": bool(parent.get("synthetic_clock")) or new["synthetic_clock"]}


def counted_artifacts(old: ModelArtifacts, window: Interactions, memory: Interactions, item_ids: np.ndarray,
                      embeddings: np.ndarray, config: WarmStart, *, version: str, path: Path) -> ModelArtifacts:
    """`old`'s artifacts over `item_ids` (sorted, ⊇ old's) with `window`'s clicks counted in: popularity
    and co-visitation (old counts × the forgetting), categories, recent popularity over `memory`."""
    rows = ItemRows(item_ids).rows(old.item_ids)
    popularity = np.zeros(len(item_ids))
    keep = forgetting(config, window.n_clicks)
    popularity[rows] = old.item_popularity * keep
    popularity += item_popularity(window, item_ids)
    popular = item_ids[np.lexsort((item_ids, -popularity))[:N_POPULAR]]
    categories = None
    if old.item_categories is not None or window.categories:
        categories = np.full(len(item_ids), -1, np.int64)
        if old.item_categories is not None:
            categories[rows] = old.item_categories
        for i, item in enumerate(item_ids.tolist()):
            if item in window.categories:
                categories[i] = window.categories[item]
    covisit = merge_covisitation(old.covisit, old.item_ids,
                                 build_covisitation(window, item_ids, window=config.covisit_window,
                                                    top_k=config.covisit_top_k),
                                 item_ids, decay=keep, top_k=config.covisit_top_k)
    meta = {key: value for key, value in old.meta.items() if key not in ("timings_s", "ranker", "gate", "continual")}
    meta.update(n_items=int(len(item_ids)), n_clicks=int(old.meta.get("n_clicks", 0)) + int(window.n_clicks),
                n_sessions=int(memory.n_sessions), parent=old.version, trained_at=_now(),
                data_window=_window(old.meta.get("data_window") or {}, window))
    return ModelArtifacts(version=version, path=Path(path), item_ids=item_ids, item_embeddings=embeddings,
                          item_popularity=np.rint(popularity).astype(np.int64), popular=popular,
                          covisit=covisit, meta=meta,
                          item_recent_popularity=recent_item_popularity(memory, item_ids),
                          item_categories=categories)


def _memory(champion: ModelBundle, window: Interactions, config: WarmStart) -> tuple[Interactions, dict[str, Any]]:
    """The session-kNN memory with `window`'s sessions added (the newest `memory_sessions`), and its parameters."""
    knn_params = champion.session_knn.get_params() if champion.session_knn is not None else {}
    history = champion.session_knn.memory() if champion.session_knn is not None else Interactions(
        np.zeros(0, str), np.zeros(0, np.int64), np.zeros(0))
    return newest_sessions(concat(history, window), config.memory_sessions), knn_params


def fold_in(base: ModelBundle, clicks: Interactions, *, version: str, path: Path,
            config: WarmStart = WarmStart(), kind: str = "fold_in",
            log: Callable[[str], None] = print) -> ModelBundle:
    """`base` with `clicks` counted in (co-visitation, popularity, the session-kNN memory); its
    embeddings and ranker as they are; an item first seen in `clicks` gets the mean vector of the
    known items its sessions clicked and is added to a copy of the index (nothing is rebuilt, ~1 s).
    Two uses, both `kind`s the learner treats as overlays (the next warm version is built on the
    warm version under them and trains on their clicks for real):
    - "fold_in", test, then train: `base` is the version the gate has just scored on the hold-out
      `clicks`, so the champion knows the newest clicks now instead of one version later; the gate
      scored the version without them, so nothing was tested after it was trained on;
    - "light", new items within minutes: `base` is the warm version, `clicks` the window minus its
      hold-out (a warm start with one sweep cost ~9 s of wall time and ~15 s of CPU more, for a
      version that lives until the next warm one).
    Not saved: call `.save()`."""
    started = time.perf_counter()
    old = base.artifacts
    memory, knn_params = _memory(base, clicks, config)
    item_ids = np.union1d(old.item_ids, np.unique(clicks.item_ids)).astype(np.int64)
    embeddings, known = known_and_new_vectors(old, session_item_matrix(clicks, item_ids)[0], item_ids)
    placed = ~known & embeddings.any(axis=1)  # new items with a vector (their sessions clicked a known item)
    new_items, indexed = int((~known).sum()), int(placed.sum())
    artifacts = counted_artifacts(old, clicks, memory, item_ids, embeddings, config, version=version, path=path)
    artifacts.meta["index"] = {**(old.meta.get("index") or {}), "added_items": indexed}
    bundle = ModelBundle(artifacts, base.index.extended(embeddings[placed], item_ids[placed]),
                         SessionKNN(**knn_params).fit(memory), base.ranker,
                         ranker_report={**base.ranker_report, "kept": f"{kind}: the base version's"})
    seconds = round(time.perf_counter() - started, 2)
    artifacts.meta["continual"] = {"kind": kind, "base": old.version, "window_clicks": int(clicks.n_clicks),
                                   "window_sessions": int(clicks.n_sessions), "new_items": new_items,
                                   "indexed_new_items": indexed, "timings_s": {"total": seconds}}
    artifacts.meta["ranker"] = bundle.ranker_report
    artifacts.meta["timings_s"] = {"total": seconds}  # the registry's mark of a complete version
    log(f"continual: {version} ({kind}) folds {clicks.n_clicks:,} clicks into {old.version} in {seconds:.0f}s "
        f"({new_items:,} new items, {indexed:,} indexed)")
    return bundle


def warm_start(champion: ModelBundle, window: Interactions, *, version: str, path: Path,
               config: WarmStart = WarmStart(), decay: float = 0.7, ann_k: int = 100, max_session_items: int = 50,
               examples: Examples | None = None, log: Callable[[str], None] = print) -> ModelBundle:
    """A new version from `champion` and the new clicks in `window` (not yet saved: call `.save()`).
    `examples`: ranker examples from the recent gates' hold-outs (the learner's pool: the newest
    third no version trained on); without them the ranker's are cut from the window.
    Its `artifacts.meta["continual"]` says what was kept, refined and added, and how long each step took."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 2)
        return time.perf_counter()

    old = champion.artifacts
    memory, knn_params = _memory(champion, window, config)
    item_ids = np.union1d(old.item_ids, np.unique(window.item_ids)).astype(np.int64)
    t = lap("memory", started)

    embeddings, embedding_report = warm_embeddings(old, memory, item_ids, config)
    t = lap("embeddings", t)
    artifacts = counted_artifacts(old, window, memory, item_ids, embeddings, config, version=version, path=path)
    t = lap("covisitation", t)
    knn = SessionKNN(**knn_params).fit(memory)
    t = lap("session_knn", t)
    index = refreshed_index(champion.index, embeddings, item_ids, config)
    artifacts.meta["index"] = {key: index.info.get(key) for key in
                               ("type", "recall_at_k", "ef_search", "nlist", "nprobe", "k", "rebuilt", "added_items")}
    t = lap("index", t)
    bundle = ModelBundle(artifacts, index, knn)
    ranker_report = continue_ranker(champion, window, bundle, config, decay=decay, ann_k=ann_k,
                                    max_session_items=max_session_items, examples=examples, log=log)
    lap("ranker", t)
    timings["total"] = round(time.perf_counter() - started, 2)
    artifacts.meta["continual"] = {"config": asdict(config), "window_clicks": int(window.n_clicks),
                                   "window_sessions": int(window.n_sessions), "embeddings": embedding_report,
                                   "timings_s": timings}
    artifacts.meta["ranker"] = ranker_report
    artifacts.meta["timings_s"] = timings  # with "total": the registry's mark of a complete version
    log(f"continual: {version} from {old.version} in {timings['total']:.0f}s: "
        f"{embedding_report['new_items']:,} new items, {embedding_report['refined_items']:,} refined; "
        f"ranker {ranker_report.get('valid', {}).get('HR@20', 'n/a')}")
    return bundle


def streaming_features(bundle: ModelBundle, clicks: Interactions):
    """The streaming features of examples cut from `clicks` — what the stream showed at each case's
    time, from these clicks in memory — when `bundle`'s ranker reads them and the clicks have real
    time; else None (the columns stay 0, as for a ranker trained without them)."""
    from candidates.features import STREAMING_FEATURES
    from training.historical_features import TrendingHistory, history_features

    if bundle.ranker is None or clicks.synthetic_clock or not set(STREAMING_FEATURES) & set(bundle.ranker.features):
        return None
    return history_features(TrendingHistory.from_clicks(clicks))


def continue_ranker(champion: ModelBundle, window: Interactions, bundle: ModelBundle, config: WarmStart, *,
                    decay: float, ann_k: int, max_session_items: int, examples: Examples | None = None,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Continue the champion's ranker on the window (sets `bundle.ranker`); returns its report.
    Examples come from the champion's generators (fitted before the window: leakage-free), or are
    `examples` given (the recent gates' hold-outs: versions that had not trained on them proposed the
    candidates, and cutting them again cost ~12 s of a ~45 s Diginetica version); early stopping on
    the newest third of the cases. Without a champion ranker, or with a window too small to cut examples from,
    the champion's ranker is kept as it is."""
    from training.ranker import add_streaming, build_examples, fit_lambdarank, ranking_quality, split_cases

    if champion.ranker is None:
        return {"kept": "champion has no ranker"}
    columns = [FEATURE_NAMES.index(name) for name in champion.ranker.features]
    report: dict[str, Any] = {**champion.ranker_report, "features": list(champion.ranker.features),
                              "continued_from": champion.version}
    bundle.ranker, bundle.ranker_report = champion.ranker, report
    if config.ranker_rounds <= 0:
        report["kept"] = "ranker_rounds is 0: the champion's ranker as it is"
        return report
    if window.n_sessions < 20:
        report["kept"] = f"window of {window.n_sessions} sessions is too small to continue on"
        return report
    reused = examples is not None and len(examples.groups) >= MIN_RANKER_CASES * 3 // 2
    report["examples"] = "the recent gates' hold-outs" if reused else "cut from the window"
    if reused:  # their streaming features were counted at the gate, point-in-time
        train, valid = split_cases(examples, 1 / 3)
    else:
        train_part, valid_part = split_by_time(window, 0.3)
        generators = champion.generators(ann_k)
        try:
            train = build_examples(generators, train_part, config.ranker_train_cases, decay, max_session_items, 0)
            valid = build_examples(generators, valid_part, config.ranker_valid_cases, decay, max_session_items, 1)
        except ValueError as error:  # no case has its label among the champion's candidates
            report["kept"] = str(error)
            return report
    if len(train.groups) < MIN_RANKER_CASES or len(valid.groups) < MIN_RANKER_CASES // 2:
        report["kept"] = (f"{len(train.groups)} train / {len(valid.groups)} valid cases with the label among the "
                          f"candidates: too few to continue the ranker on")
        return report

    class Champion:  # the same interface as training.ranker.FittedRanker
        def predict(self, features: np.ndarray) -> np.ndarray:
            return champion.ranker.booster.predict(features[:, columns])

    if reused:
        columns_streaming = [FEATURE_NAMES.index(name) for name in STREAMING_FEATURES]
        report["streaming_features"] = bool(train.features[:, columns_streaming].any())
    else:
        streaming = streaming_features(champion, window)
        add_streaming(train, streaming)
        add_streaming(valid, streaming)
        report["streaming_features"] = streaming is not None
    before = ranking_quality(Champion().predict(valid.features), valid)
    fitted = fit_lambdarank(train, valid, columns, 0, threads=config.ranker_threads, log=log,
                            name="ranker (continued)", init_model=champion.ranker.booster,
                            rounds=config.ranker_rounds, patience=config.ranker_patience)
    after = ranking_quality(fitted.predict(valid.features), valid)
    added = int((fitted.booster.best_iteration or fitted.booster.current_iteration())
                - champion.ranker.booster.current_iteration())
    report.update(valid=after, valid_champion=before, trees_added=max(added, 0), train_rows=int(len(train.labels)),
                  best_iteration=int(fitted.booster.best_iteration or fitted.booster.current_iteration()))
    report.pop("kept", None)
    bundle.ranker = RankerModel(fitted.booster, champion.ranker.features)
    return report
