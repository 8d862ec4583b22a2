"""Train the learned ranker (LightGBM LambdaRank) over the candidate generators' union.

Leakage-free by construction: training sessions are split by time into base (80%), ranker-train
(10%) and ranker-validation (10%). The generators (embeddings, co-visitation, session-kNN, index)
are fitted on base only; examples come from the later sessions' prefixes, with candidates and
features from `candidates.features` — the same code the API runs. Early stopping and the
reported figures use the validation split only; test data is never seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from candidates.features import FEATURE_NAMES, STREAMING_FEATURES, CandidateGenerators, merge_session_items
from candidates.ranker_model import RankerModel
from streamrec import quality
from streamrec.interactions import Interactions, next_item_rows

K = 20

# (item ids, unix-second times) of all (case, candidate) rows → {feature: column}; point-in-time
StreamingFeatureFn = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass
class Examples:
    features: np.ndarray  # float32 [rows, len(FEATURE_NAMES)]
    labels: np.ndarray  # int [rows]
    groups: np.ndarray  # rows per case, for cases whose label is among the candidates
    cases: int  # all cases, including those whose label no generator found
    item_ids: np.ndarray
    times: np.ndarray


def split_cases(examples: Examples, newest_share: float) -> tuple[Examples, Examples]:
    """(older cases, the newest `newest_share` of them) by case time; cases whose label no generator
    found are shared out in proportion."""
    times = case_times(examples)
    newest = np.zeros(len(times), dtype=bool)
    newest[np.argsort(times, kind="stable")[len(times) - int(round(len(times) * newest_share)):]] = True
    return _split(examples, newest)


def _split(examples: Examples, chosen: np.ndarray) -> tuple[Examples, Examples]:
    """(the cases not chosen, the chosen cases): `chosen` is a mask over labelled cases."""
    row_chosen = np.repeat(chosen, examples.groups)

    def part(cases: np.ndarray, rows: np.ndarray) -> Examples:
        share = cases.sum() / max(1, len(cases))
        return Examples(examples.features[rows], examples.labels[rows], examples.groups[cases],
                        int(round(examples.cases * share)), examples.item_ids[rows], examples.times[rows])

    return part(~chosen, ~row_chosen), part(chosen, row_chosen)


def concat_examples(*parts: Examples) -> Examples:
    """One example set from several (cases keep their rows and times)."""
    return Examples(np.vstack([p.features for p in parts]), np.concatenate([p.labels for p in parts]),
                    np.concatenate([p.groups for p in parts]), sum(p.cases for p in parts),
                    np.concatenate([p.item_ids for p in parts]), np.concatenate([p.times for p in parts]))


def case_times(examples: Examples) -> np.ndarray:
    """Each labelled case's time (its prefix's last click), in build order."""
    starts = np.concatenate(([0], np.cumsum(examples.groups)[:-1])).astype(np.int64)
    return examples.times[starts] if len(starts) else np.zeros(0)


def newest_cases(examples: Examples, max_cases: int, *, before: float | None = None) -> Examples:
    """The newest `max_cases` labelled cases of `examples` (all of them when fewer), only those at or
    before `before` when given; cases whose label no generator found are shared out in proportion."""
    keep = case_times(examples) <= before if before is not None else np.ones(len(examples.groups), bool)
    if not keep.all():
        examples = _split(examples, keep)[1]
    if len(examples.groups) <= max_cases:
        return examples
    return split_cases(examples, max_cases / len(examples.groups))[1]


def split_three(data: Interactions) -> tuple[Interactions, Interactions, Interactions]:
    from streamrec.interactions import split_by_time

    rest, valid = split_by_time(data, 0.1)
    base, train = split_by_time(rest, 1 / 9)
    return base, train, valid


def base_generators(base: Interactions, algorithm: str, factors: int, tmp: Path, ann_k: int) -> CandidateGenerators:
    """Generators fitted on the base split, in memory, by the code that fits the published ones."""
    from training.embeddings import fit_item_factors, session_item_matrix
    from training.generators import fit_generators

    matrix, item_ids = session_item_matrix(base)
    embeddings = fit_item_factors(matrix, algorithm, factors)
    return fit_generators(base, item_ids, embeddings, version="ranker-base", path=tmp).generators(ann_k)


def build_examples(generators: CandidateGenerators, data: Interactions, max_cases: int, decay: float,
                   max_session_items: int, seed: int, log: Callable[[str], None] | None = None,
                   name: str = "examples") -> Examples:
    """Every prefix of `data`'s sessions → candidates + features, sampled to `max_cases` cases;
    `log` hears progress about every 3 s (this loop is the ranker's slowest step)."""

    targets, firsts = next_item_rows(data, max_cases, seed)
    blocks, labels, groups, items_col, times_col = [], [], [], [], []
    started = last_log = time.perf_counter()
    for done, (target, first) in enumerate(zip(targets, firsts)):
        if log is not None and time.perf_counter() - last_log > 3:
            last_log = time.perf_counter()
            log(f"ranker: {name} {done:,}/{len(targets):,} cases ({last_log - started:.0f}s)")
        prefix = [int(i) for i in data.item_ids[first:target]]
        candidates = generators.for_session(merge_session_items([], prefix, max_session_items), decay)
        if candidates is None:
            continue
        label = candidates.item_ids == data.item_ids[target]
        if not label.any():
            continue
        blocks.append(candidates.matrix())
        labels.append(label.astype(np.int32))
        groups.append(len(label))
        items_col.append(candidates.item_ids)
        times_col.append(np.full(len(label), data.timestamps[target - 1]))
    if not blocks:
        raise ValueError("no training example has its label among the candidates")
    return Examples(np.vstack(blocks), np.concatenate(labels), np.asarray(groups), len(targets),
                    np.concatenate(items_col), np.concatenate(times_col))


def add_streaming(examples: Examples, streaming: StreamingFeatureFn | None) -> None:
    if streaming is None:
        return
    columns = streaming(examples.item_ids, examples.times)
    for name in STREAMING_FEATURES:
        examples.features[:, FEATURE_NAMES.index(name)] = columns[name]


def ranking_quality(scores: np.ndarray, examples: Examples) -> dict[str, float]:
    """HR/MRR/NDCG@20 over all cases (a case whose label had no candidate counts as a miss; ties
    between the label and other candidates are broken at random, in expectation)."""
    ranks = np.zeros(examples.cases)
    bounds = np.concatenate(([0], np.cumsum(examples.groups)))
    for case, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        ranks[case] = quality.rank_by_score(scores[start:end], examples.labels[start:end] == 1)
    return quality.report(ranks, K)


class FittedRanker:
    """A LightGBM booster with the columns it reads."""

    def __init__(self, booster, columns: list[int]) -> None:
        self.booster, self.columns = booster, columns

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.booster.predict(features[:, self.columns], num_iteration=self.booster.best_iteration)


def fit_lambdarank(train: Examples, valid: Examples, columns: list[int], seed: int, *, threads: int = 2,
                   log: Callable[[str], None] | None = None, name: str = "ranker", init_model: Any = None,
                   rounds: int = 600, patience: int = 40) -> FittedRanker:
    """LambdaRank with early stopping on `valid` (after `patience` rounds without a gain); `log`
    hears the validation NDCG every 25 rounds.
    `init_model` (a booster reading the same `columns`): continue it with up to `rounds` more
    trees instead of starting from nothing (the stateful path, training.continual)."""
    import lightgbm as lgb

    started = time.perf_counter()

    def report_progress(env) -> None:
        if log is not None and (env.iteration + 1) % 25 == 0 and env.evaluation_result_list:
            _, metric, value, _ = env.evaluation_result_list[0]
            log(f"{name}: round {env.iteration + 1} valid {metric} {value:.4f} "
                f"({time.perf_counter() - started:.0f}s)")

    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [K], "learning_rate": 0.05,
              "num_leaves": 31, "min_data_in_leaf": 100, "feature_fraction": 0.9, "bagging_fraction": 0.8,
              "bagging_freq": 1, "lambdarank_truncation_level": 30, "seed": seed, "num_threads": threads,
              "verbose": -1}
    train_set = lgb.Dataset(train.features[:, columns], train.labels, group=train.groups)
    valid_set = lgb.Dataset(valid.features[:, columns], valid.labels, group=valid.groups, reference=train_set)
    booster = lgb.train(params, train_set, num_boost_round=rounds, valid_sets=[valid_set], init_model=init_model,
                        callbacks=[lgb.early_stopping(patience, verbose=False), report_progress])
    return FittedRanker(booster, columns)


def train_ranker(data: Interactions, folder: Path, *, algorithm: str, factors: int, decay: float,
                 ann_k: int = 100, max_session_items: int = 50, train_cases: int = 20_000, valid_cases: int = 8_000,
                 streaming: StreamingFeatureFn | None = None, seed: int = 0, ablation: bool = False,
                 skew_check: bool = False, threads: int = 2,
                 log: Callable[[str], None] = print) -> RankerFit:
    """Fit and validate the ranker; the caller saves it with its model version (`ModelBundle`).

    `ablation` also fits the twin without the streaming features (for `streamrec evaluate`'s
    ablation); serving never reads it, so plain training skips it. `skew_check` scores the same
    validation cases once more with generators refitted on base + ranker-train sessions, as
    serving refits them on all sessions: the report's `valid_refitted_generators` against `valid`
    is the cost (or gain) of that train/serve difference in feature scales.
    `threads`: LightGBM's num_threads (results can differ in the last digits between counts)."""
    started = time.perf_counter()
    base, train_split, valid_split = split_three(data)
    generators = base_generators(base, algorithm, factors, folder, ann_k)
    log(f"ranker: generators fitted on {base.n_sessions:,} base sessions in {time.perf_counter() - started:.0f}s")
    train = build_examples(generators, train_split, train_cases, decay, max_session_items, seed, log, "train")
    valid = build_examples(generators, valid_split, valid_cases, decay, max_session_items, seed + 1, log, "valid")
    log(f"ranker: examples built ({time.perf_counter() - started:.0f}s)")
    use_streaming = streaming is not None and not data.synthetic_clock
    if use_streaming:
        log(f"ranker: streaming features of {len(train.labels) + len(valid.labels):,} rows, point-in-time "
            f"through Feast's offline store …")
    add_streaming(train, streaming if use_streaming else None)
    add_streaming(valid, streaming if use_streaming else None)
    if use_streaming:
        log(f"ranker: streaming features read ({time.perf_counter() - started:.0f}s)")
    log(f"ranker: {len(train.groups):,} train / {len(valid.groups):,} valid cases with the label among "
        f"candidates ({len(train.labels):,} rows); candidate recall on valid "
        f"{100 * len(valid.groups) / valid.cases:.1f}%")

    all_columns = list(range(len(FEATURE_NAMES)))
    batch_columns = [i for i, n in enumerate(FEATURE_NAMES) if n not in STREAMING_FEATURES]
    columns = all_columns if use_streaming else batch_columns
    ranker = fit_lambdarank(train, valid, columns, seed, threads=threads, log=log)
    report: dict[str, Any] = {
        "features": [FEATURE_NAMES[i] for i in columns], "streaming_features": use_streaming,
        "best_iteration": int(ranker.booster.best_iteration or ranker.booster.current_iteration()),
        "valid": ranking_quality(ranker.predict(valid.features), valid),
        "valid_session_knn_only": ranking_quality(valid.features[:, FEATURE_NAMES.index("session_knn")], valid),
        "valid_best_single_feature": best_single_feature(valid, columns),
        "candidate_recall_valid": round(100 * len(valid.groups) / valid.cases, 2),
        "train_rows": int(len(train.labels)),
    }
    if use_streaming and ablation:  # on the same validation rows; kept so evaluation can repeat it on test
        without = fit_lambdarank(train, valid, batch_columns, seed, threads=threads, log=log,
                                 name="ranker without streaming")
        report["valid_without_streaming"] = ranking_quality(without.predict(valid.features), valid)
        report["batch_only_features"] = [FEATURE_NAMES[i] for i in batch_columns]
    if skew_check:
        from streamrec.interactions import split_by_time

        rest, _ = split_by_time(data, 0.1)  # base + ranker-train: what the valid split follows
        refitted = base_generators(rest, algorithm, factors, folder, ann_k)
        again = build_examples(refitted, valid_split, valid_cases, decay, max_session_items, seed + 1, log, "valid'")
        add_streaming(again, streaming if use_streaming else None)
        report["valid_refitted_generators"] = ranking_quality(ranker.predict(again.features), again)
    report["seconds"] = round(time.perf_counter() - started, 1)
    log(f"ranker: valid HR@20 {report['valid']['HR@20']} MRR@20 {report['valid']['MRR@20']} "
        f"(session-kNN alone {report['valid_session_knn_only']['HR@20']} / "
        f"{report['valid_session_knn_only']['MRR@20']}) in {report['seconds']}s")
    return RankerFit(report, RankerModel(ranker.booster, tuple(report["features"])),
                     RankerModel(without.booster, tuple(report["batch_only_features"]))
                     if use_streaming and ablation else None)


@dataclass
class RankerFit:
    report: dict[str, Any]
    ranker: RankerModel
    batch_only: RankerModel | None


def best_single_feature(valid: Examples, columns: list[int]) -> dict[str, Any]:
    """The best ranking any one feature gives on its own (either sign), by MRR@20: the floor the
    ranker must clear to be worth its cost."""
    best: dict[str, Any] = {}
    for column in columns:
        for sign in (1.0, -1.0):
            figures = ranking_quality(sign * valid.features[:, column], valid)
            if not best or figures[f"MRR@{K}"] > best[f"MRR@{K}"]:
                best = {"feature": ("" if sign > 0 else "-") + FEATURE_NAMES[column], **figures}
    return best
