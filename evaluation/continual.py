"""`streamrec experiment continual`: frozen vs continual learning vs full retraining, on real drift.

The dataset's training sessions are in time order. The first `initial_share` trains the first
version; the rest is cut into `slices` consecutive slices, each replayed to the learner in
`checks_per_slice` steps (one `learn_check_s` of learner time each) while it runs with its
default triggers. Before a slice is trained on, it is scored (prequential) by three models:
(a) the frozen first version, (b) the learner's champion (continual learning, warm-started),
(c) a version retrained from scratch on everything before the slice. After the last slice the
three are scored on the dataset's test set through the serving `Recommender` (the learner first
runs on for `drain_checks` checks with no new clicks, as it would live: the clicks of the stream's
last minute are learned a minute later, while a full retrain takes minutes), with a latency
budget no machine load reaches (`OFFLINE_BUDGET_MS`: the models are compared, not the machine; a run
sharing its cores with other work fell back to cheaper answers under the API's 50 ms and read
44.7 for a model that reads 54.6 alone; served latency is `streamrec bench`'s). CPU time is
process time (all threads) of the continual learner (`continual_gate`: the part spent scoring
candidate and champion on the hold-out) and of the full retrains.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from candidates.bundle import ModelBundle
from streamrec.datasets import load_dataset
from streamrec.interactions import Interactions
from streamrec.model_registry import ModelRegistry
from streamrec.settings import Settings
from training.gate import version_quality
from training.continual import concat
from training.drift import ItemShift, UnknownItems, check_drift
from training.learn import DriftMonitor, Learner
from training.pipeline import train

ARMS = ("frozen", "continual", "full_retrain")
OFFLINE_BUDGET_MS = 60_000.0  # the test scoring's per-answer budget: the full pipeline, whatever the load


@dataclass
class Replay:
    """The learner's click source: the stream so far, as the archive would hold it."""

    data: Interactions
    upto: int = 0  # rows (in time order) streamed so far

    def __post_init__(self) -> None:
        order = np.argsort(self.data.timestamps, kind="stable")
        self.times = self.data.timestamps[order]
        self.rows = order

    def advance(self, rows: int) -> None:
        self.upto = min(len(self.rows), self.upto + rows)

    def since(self, ts: float | None) -> Interactions:
        streamed = np.zeros(len(self.data), dtype=bool)
        streamed[self.rows[:self.upto]] = True
        if ts is not None:
            streamed &= self.data.timestamps > ts
        return self.data.subset_rows(streamed)


def session_slices(data: Interactions, initial_share: float, slices: int) -> list[Interactions]:
    """[initial, slice 1, …]: consecutive groups of sessions by first-click time."""
    starts = data.session_starts()
    order = np.argsort(data.timestamps[starts], kind="stable")
    rank = np.empty(len(starts), dtype=np.int64)
    rank[order] = np.arange(len(starts))
    n = len(starts)
    bounds = [0, int(n * initial_share)] + [int(n * initial_share + (n - n * initial_share) * (i + 1) / slices)
                                             for i in range(slices)]
    return [data.subset_sessions((rank >= lo) & (rank < hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _arm_settings(settings: Settings, root: Path, arm: str) -> Settings:
    return settings.model_copy(update={"data_dir": root / arm})


def _cpu_train(settings: Settings, dataset: Path, data: Interactions) -> float:
    started = time.process_time()
    train(settings, dataset, data=data, streaming_features=False, progress=False)
    return time.process_time() - started


def run(settings: Settings, dataset: Path, *, initial_share: float = 0.4, slices: int = 3,
        checks_per_slice: int = 10, slice_cases: int = 5000, test_cases: int | None = None,
        log=print) -> dict[str, Any]:
    dataset = Path(dataset)
    root = settings.data_dir / "experiments" / "continual" / dataset.name
    shutil.rmtree(root, ignore_errors=True)
    arms = {arm: _arm_settings(settings, root, arm) for arm in ARMS}
    data = load_dataset(dataset, split="train")
    parts = session_slices(data, initial_share, slices)
    log(f"continual: {data.n_sessions:,} sessions → initial {parts[0].n_sessions:,} + "
        f"{', '.join(f'{p.n_sessions:,}' for p in parts[1:])}")

    cpu = {"initial": _cpu_train(arms["frozen"], dataset, parts[0]), "continual": 0.0, "full_retrain": 0.0}
    first = ModelRegistry(arms["frozen"].models_dir).champion()
    for arm in ("continual", "full_retrain"):  # all three start from the same first version
        arms[arm].models_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(arms["frozen"].models_dir / first, arms[arm].models_dir / first)
        ModelRegistry(arms[arm].models_dir).promote(first)

    replay = Replay(concat(*parts[1:]))
    clock = {"now": 0.0}
    learner = Learner(arms["continual"], replay.since, drift=DriftMonitor(), clock=lambda: clock["now"], log=log)
    per_check = int(np.ceil(len(replay.data) / (slices * checks_per_slice)))
    arrivals = NewItems(ModelBundle.load_current(arms["frozen"].models_dir).artifacts.item_ids)
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    full_wall: list[float] = []

    def one_check() -> dict[str, Any]:
        started, wall = time.process_time(), time.perf_counter()
        check = learner.check()
        cpu["continual"] += time.process_time() - started
        if check.promoted:
            arrivals.available(ModelBundle.load_current(arms["continual"].models_dir),
                               clock["now"] + time.perf_counter() - wall)
        return check.to_dict()

    for number, part in enumerate(parts[1:], start=1):
        scores = {}
        for arm in ARMS:
            bundle = ModelBundle.load_current(arms[arm].models_dir)
            scores[arm] = version_quality(bundle, part, max_cases=slice_cases, decay=settings.recency_decay,
                                          ann_k=settings.candidates_k, max_session_items=settings.max_session_items)
        rows.append({"slice": number, "sessions": part.n_sessions, **scores})
        log(f"continual: slice {number}: " + ", ".join(f"{arm} HR@20 {scores[arm]['HR@20']}" for arm in ARMS))
        for _ in range(checks_per_slice):
            before = replay.upto
            replay.advance(per_check)
            clock["now"] += settings.learn_check_s
            arrivals.note(replay, before, clock["now"] - settings.learn_check_s / 2)  # mid-interval, on average
            checks.append({"slice": number, **one_check()})
        started = time.perf_counter()
        cpu["full_retrain"] += _cpu_train(arms["full_retrain"], dataset, concat(*parts[:number + 1]))
        full_wall.append(time.perf_counter() - started)
    for _ in range(drain_checks(settings)):  # the stream has ended; the learner runs on, as it would live
        clock["now"] += settings.learn_check_s
        checks.append({"slice": slices, "drain": True, **one_check()})
    fired = [c["slice"] for c in checks if (c.get("drift") or {}).get("fired")]
    drained = [c for c in checks if c.get("drain")]
    report = {"dataset": str(dataset), "initial_share": initial_share, "slices": rows, "checks": checks,
              "cpu_s": cpu_report(cpu, checks),
              "drift": {"fired_on_shift": bool(fired), "fired_in_slices": sorted(set(fired)),
                        "fired_on_stationary": stationary_replay(parts[0], per_check, checks_per_slice)},
              "new_item_median_s": arrivals.median(), "new_items": arrivals.summary(),
              "drain": {"checks": len(drained), "learner_s": len(drained) * settings.learn_check_s,
                        "promoted": sum(bool(c.get("promoted")) for c in drained),
                        "full_retrain_wall_s": round(float(np.mean(full_wall)), 1)},
              "versions": {arm: ModelRegistry(arms[arm].models_dir).champion() for arm in ARMS}}
    report["test"], report["exploration"] = test_scores(settings, dataset, data, arms, test_cases, log)
    (root / "report.json").write_text(json.dumps(report, indent=2))
    report["plot"] = str(plot(report, root))
    return report


def drain_checks(settings: Settings) -> int:
    """Checks the learner runs after the stream's end, before the test is scored: as many as its
    new-items promise takes (`learn_new_items_s`), so the clicks of the last minute are learned as they
    would be live a minute later (a full retrain, ready at once here, takes minutes of wall time);
    none with that trigger off."""
    return int(np.ceil(settings.learn_new_items_s / settings.learn_check_s)) if settings.learn_new_items_s else 0


def cpu_report(cpu: dict[str, float], checks: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds per arm, and the continual learner's split into gating (scoring candidate and
    champion on each hold-out: evaluation, which a gated full retrain would pay too) and the rest."""
    gate = sum(c.get("gate_cpu_s", 0.0) for c in checks)
    return {**{k: round(v, 1) for k, v in cpu.items()}, "continual_gate": round(gate, 1),
            "continual_without_gate": round(cpu["continual"] - gate, 1)}


class NewItems:
    """When each item the first version did not know was first streamed, and when a promoted
    version first held it (learner time: simulated check intervals + real training time)."""

    def __init__(self, known: np.ndarray) -> None:
        self.known = set(np.asarray(known).tolist())
        self.first_seen: dict[int, float] = {}
        self.available_at: dict[int, float] = {}

    def note(self, replay: Replay, before: int, at: float) -> None:
        for item in np.unique(replay.data.item_ids[replay.rows[before:replay.upto]]).tolist():
            if item not in self.known and item not in self.first_seen:
                self.first_seen[item] = at

    def available(self, champion: ModelBundle, at: float) -> None:
        pending = [i for i in self.first_seen if i not in self.available_at]
        rows = champion.artifacts.rows_of(np.asarray(pending, dtype=np.int64)) if pending else np.zeros(0)
        for item, row in zip(pending, rows):
            if row >= 0:
                self.available_at[item] = at

    def delays(self) -> np.ndarray:
        return np.array([self.available_at[i] - self.first_seen[i] for i in self.available_at])

    def median(self) -> float | None:
        delays = self.delays()
        return round(float(np.median(delays)), 1) if len(delays) else None

    def summary(self) -> dict[str, Any]:
        delays = self.delays()
        return {"first_seen": len(self.first_seen), "became_available": len(self.available_at),
                "p90_s": round(float(np.quantile(delays, 0.9)), 1) if len(delays) else None}


def stationary_replay(initial: Interactions, per_check: int, checks: int, seed: int = 0) -> bool:
    """Does the drift check fire on stationary data? A random half of the first version's sessions is
    the reference (and catalogue), the other half is replayed in random session order (the same
    traffic, no change over time) in windows growing by `per_check` clicks."""
    rng = np.random.default_rng(seed)
    half = rng.random(initial.n_sessions) < 0.5
    reference, replay = initial.subset_sessions(half), initial.subset_sessions(~half)
    catalogue = np.unique(reference.item_ids)
    shift, unknown = ItemShift(reference, catalogue), UnknownItems(reference, catalogue)
    order = np.argsort(rng.permutation(replay.n_sessions)[replay.session_codes()], kind="stable")
    fired = False
    for step in range(1, checks + 1):
        rows = np.zeros(len(replay), dtype=bool)
        rows[order[:min(len(order), step * per_check)]] = True
        fired |= check_drift(shift, unknown, replay.subset_rows(rows)).fired
    return bool(fired)


def test_scores(settings: Settings, dataset: Path, data: Interactions, arms: dict[str, Settings],
                limit: int | None, log) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """HR/MRR@20 of each arm's final champion on the dataset's test cases, through the served Recommender
    (with its exploration slot, as the API answers), and what that slot costs and adds: the continual
    champion once more without it on the same cases (`evaluation.evaluate.exploration_report`)."""
    from rich.progress import Progress

    from evaluation.evaluate import (WITHOUT_EXPLORATION, catalogue_groups, exploration_report, load_test_cases,
                                     run_model, served_recommend)
    from serving.recommender import Recommender
    from serving.schemas import EXCLUDE_SEEN_DEFAULT
    from streamrec import quality

    cases = load_test_cases(dataset, data)
    if limit:
        cases = cases.head(limit)
    popular, n_items, head = catalogue_groups(data)
    strength = settings.explore_strength
    offline = {"latency_budget_ms": OFFLINE_BUDGET_MS}
    served = {arm: arms[arm].model_copy(update=offline) for arm in ARMS}
    if strength > 0:
        served[WITHOUT_EXPLORATION] = arms["continual"].model_copy(update={**offline, "explore_strength": 0.0})
    out, summaries, explored = {}, {}, {}
    with Progress(disable=True) as progress:
        for name, arm_settings in served.items():
            arm = "continual" if name == WITHOUT_EXPLORATION else name
            bundle = ModelBundle.load_current(arms[arm].models_dir)
            recommend = served_recommend(Recommender(arm_settings, None, bundle), EXCLUDE_SEEN_DEFAULT)
            result = run_model(name, recommend, cases, progress)
            summaries[name] = result.summary(popular, n_items, head)
            explored[name] = (recommend.explored, recommend.explore_ms)  # type: ignore[attr-defined]
            if name in ARMS:
                out[name] = {**quality.report(result.ranks, 20), "cases": int(len(cases.labels)),
                             "degraded": int(recommend.degraded)}  # type: ignore[attr-defined]
                log(f"continual: test {name}: HR@20 {out[name]['HR@20']} MRR@20 {out[name]['MRR@20']}")
    n = max(1, len(cases.labels))
    compared = {"streamrec": summaries["continual"],
                **({WITHOUT_EXPLORATION: summaries[WITHOUT_EXPLORATION]} if WITHOUT_EXPLORATION in summaries else {})}
    exploration = exploration_report(compared, strength, explored["continual"][0] / n, explored["continual"][1] / n)
    log(f"continual: exploration at strength {strength:g}: HR@20 cost {exploration['hr_cost']}, "
        f"coverage gain {exploration['coverage_gain']}")
    return out, exploration


def plot(report: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    slices = [row["slice"] for row in report["slices"]]
    for arm in ARMS:
        ax.plot(slices, [row[arm]["HR@20"] for row in report["slices"]], marker="o", label=arm)
    ax.set_xlabel("slice (scored before it is trained on)")
    ax.set_ylabel("HR@20 (%)")
    ax.set_xticks(slices)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(out_dir) / "hr_per_slice.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
