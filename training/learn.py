"""`streamrec learn`: new model versions from the stream by themselves — when, how, and whether to promote.

Every `learn_check_s` the learner reads the clicks archived since its cursor, measures drift
against the champion's own training window, and checks its triggers (schedule, volume, drift, new
items). A triggered check splits the new clicks by time: the newest clicks that give the gate its
`learn_gate_cases` cases (at most `learn_holdout_share` of them) are the hold-out, the rest trains a
candidate warm-started from the champion (training.continual). The gate (training.gate) scores
both on the hold-out, and a passed candidate is promoted through the registry (or becomes a bandit
arm), with the hold-out's clicks counted in first (`fold_in`: the gate has scored them, so they may
now be trained on). The cursor then moves to the hold-out's start, so every click is tested before
it is trained on, and the next warm version trains on it. Decisions are written with the
candidate (`meta.json` "gate") and appended to `LEARN_LOG.jsonl`; the latest check is
`LEARN_STATUS.json` (the operations page reads it) and Prometheus gauges.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from candidates.bundle import ModelBundle
from streamrec.artifacts import LEARN_STATUS
from streamrec.interactions import Interactions
from streamrec.model_registry import ModelRegistry, RoutingConfig, atomic_write
from streamrec.settings import Settings
from training.continual import WarmStart, fold_in, warm_start
from training.drift import DriftReport, ItemShift, RewardDrift, UnknownItems, check_drift
from training.drift_metrics import DriftGauges
from training.gate import scored_gate
from training.ranker import Examples, concat_examples, newest_cases

STATE = "LEARN_STATE.json"  # the cursor and the last version's time
STATUS = LEARN_STATUS  # the latest check (operations page)
LOG = "LEARN_LOG.jsonl"  # one line per produced version: triggers, drift, gate figures, decision

# clicks the learner reads: since (exclusive, event time in unix s; None = all) → Interactions
ClickSource = Callable[[float | None], Interactions]
# (latest window, champion) → its drift report (DriftMonitor is the one the job uses)
DriftCheck = Callable[[Interactions, ModelBundle], DriftReport]
# champion version → its 0/1 rewards per answer logged since the last call (the inference log)
RewardSource = Callable[[str], list[float]]


class DriftMonitor:
    """The champion's drift detectors (training.drift), rebuilt when the champion changes: the
    reference is the champion's own training window (its session-kNN memory), the catalogue its items."""

    def __init__(self, rewards: RewardSource | None = None, gauges: DriftGauges | None = None) -> None:
        self.rewards, self.gauges = rewards, gauges
        self.version: str | None = None
        self.item_shift: ItemShift | None = None
        self.unknown_items: UnknownItems | None = None
        self.reward_drift = RewardDrift() if rewards is not None else None

    def __call__(self, window: Interactions, champion: ModelBundle) -> DriftReport:
        if champion.version != self.version:
            self.version = champion.version
            reference = champion.session_knn.memory() if champion.session_knn is not None else None
            catalogue = champion.artifacts.item_ids
            self.item_shift = ItemShift(reference, catalogue) if reference is not None and len(reference) else None
            self.unknown_items = UnknownItems(reference, catalogue) if self.item_shift is not None else None
            if self.reward_drift is not None:
                self.reward_drift.reset()
        rewards = self.rewards(champion.version) if self.rewards is not None else ()
        report = check_drift(self.item_shift, self.unknown_items, window, self.reward_drift, rewards)
        if self.gauges is not None:
            self.gauges.publish(report)
        return report


@dataclass
class LearnState:
    trained_through: float | None = None  # event time of the last click trained on (the cursor)
    last_version_at: float | None = None  # wall time of the last produced version
    versions: int = 0
    attempted_clicks: int = 0  # new clicks when a version was last tried without moving the cursor

    @classmethod
    def load(cls, models_dir: Path) -> "LearnState":
        path = Path(models_dir) / STATE
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def save(self, models_dir: Path) -> None:
        atomic_write(Path(models_dir) / STATE, json.dumps(asdict(self)))


@dataclass
class Check:
    """One check: what was new, what drift measured, what triggered, what was decided."""

    at: float
    new_clicks: int
    new_items: int
    champion: str | None
    triggers: list[str] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    kind: str | None = None  # "warm" (embeddings, generators, ranker) or "light" (no ranker update)
    folded: str | None = None  # the version served instead: `version` with the hold-out counted in
    gate: dict[str, Any] = field(default_factory=dict)
    promoted: bool = False
    cpu_s: float = 0.0
    gate_cpu_s: float = 0.0  # of cpu_s: scoring both versions on the hold-out
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_version_name(parent: str, clicks: int, now: datetime) -> str:
    digest = hashlib.sha1(f"{parent}:{clicks}:{now.isoformat()}".encode()).hexdigest()[:7]
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-c{digest}"


HOLDOUT_CASES_MARGIN = 1.1  # hold-out cases per gate case, for ties at the cut time


def holdout_share(window: Interactions, share: float, cases: int | None) -> float:
    """The share of the window to hold out: the fewest newest clicks that hold `cases` next-item
    cases (× a margin; a click is a case when its session has an earlier click among them), at
    most `share`. What is held out is trained on one version later only, so a larger hold-out than
    the gate needs leaves the champion behind the stream for nothing."""
    if not cases or not len(window):
        return share
    sessions = window.session_codes()[np.argsort(-window.timestamps, kind="stable")]  # newest click first
    opens = np.zeros(len(sessions), dtype=bool)  # the first time a session is met, reading back in time
    opens[np.unique(sessions, return_index=True)[1]] = True
    held_cases = np.arange(1, len(sessions) + 1) - np.cumsum(opens)  # the m newest clicks: m - their sessions
    held = int(np.searchsorted(held_cases, cases * HOLDOUT_CASES_MARGIN)) + 1
    return min(share, held / len(window))


def split_holdout(window: Interactions, share: float) -> tuple[Interactions, Interactions, float]:
    """(train part, hold-out, cut time): the hold-out is the clicks after the `1 - share` time quantile."""
    cut = float(np.quantile(window.timestamps, 1 - share))
    later = window.timestamps > cut
    return window.subset_rows(~later), window.subset_rows(later), cut


class Learner:
    """The learn loop's state and one `check()`; `run()` repeats it every `learn_check_s`."""

    def __init__(self, settings: Settings, read_clicks: ClickSource, *, drift: DriftCheck | None = None,
                 config: WarmStart = WarmStart(), log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.read_clicks, self.drift, self.config = settings, read_clicks, drift, config
        self.log, self.clock = log, clock
        self.registry = ModelRegistry(settings.models_dir)
        self.state = LearnState.load(settings.models_dir)
        self.first_unknown_at: float | None = None  # wall time a click on an unknown item was first read
        # the recent gates' hold-out examples of the versions that stayed or became champion (newest
        # `ranker_pool_cases`): the next warm version's ranker continues on them, validating on the
        # newest third, which no version trained on (in memory: a restarted learner cuts its own)
        self.fresh_examples: Examples | None = None

    @property
    def ranker_pool_cases(self) -> int:
        """Labelled cases the ranker's example pool keeps: as many as it would cut from a window."""
        return self.config.ranker_train_cases + self.config.ranker_valid_cases

    def ranker_examples(self, cut: float) -> Examples | None:
        """The pool's cases before the hold-out's `cut` (after a rejected version the pool holds a
        hold-out that the next, overlapping one may share: the gate must not see trained cases)."""
        if self.fresh_examples is None:
            return None
        return newest_cases(self.fresh_examples, self.ranker_pool_cases, before=cut)

    def pool(self, examples: Examples) -> None:
        """Add a gate's examples to the pool, keeping the newest `ranker_pool_cases` cases: one
        hold-out holds ~2,000 labelled cases, too few alone for the ranker (Diginetica's test HR@20 fell
        0.7 points when each version continued on one hold-out only)."""
        joined = examples if self.fresh_examples is None else concat_examples(self.fresh_examples, examples)
        self.fresh_examples = newest_cases(joined, self.ranker_pool_cases)

    def volume_threshold(self, champion_clicks: int) -> float:
        """New clicks that fire the volume trigger: the smaller of the relative and the absolute setting
        (inf when both are off)."""
        s = self.settings
        thresholds = [s.learn_volume_share * champion_clicks] if s.learn_volume_share and champion_clicks else []
        thresholds += [s.learn_volume_clicks] if s.learn_volume_clicks else []
        return min(thresholds, default=float("inf"))

    def triggers(self, window: Interactions, drift_fired: bool, now: float, champion_clicks: int = 0) -> list[str]:
        s = self.settings
        fired: list[str] = []
        if len(window) < s.learn_min_clicks + self.state.attempted_clicks:  # nothing new since the last try
            return fired
        since_last = now - (self.state.last_version_at or 0.0)
        if s.learn_interval_s and since_last >= s.learn_interval_s:
            fired.append("schedule")
        if len(window) >= self.volume_threshold(champion_clicks):
            fired.append("volume")
        if s.learn_on_drift and drift_fired:
            fired.append("drift")
        if s.learn_new_items_s and self.first_unknown_at is not None \
                and now - self.first_unknown_at >= s.learn_new_items_s:
            fired.append("new_items")
        return fired

    def check(self) -> Check:
        now = self.clock()
        started_cpu = time.process_time()
        window = self.read_clicks(self.state.trained_through)
        champion = ModelBundle.load_current(self.settings.models_dir)
        unknown = champion.artifacts.rows_of(np.unique(window.item_ids)) < 0 if len(window) else np.zeros(0, bool)
        if unknown.any() and self.first_unknown_at is None:
            self.first_unknown_at = now
        check = Check(now, int(len(window)), int(unknown.sum()), champion.version)
        drift_fired = False
        if self.drift is not None and len(window) >= self.settings.learn_min_clicks:
            report = self.drift(window, champion)
            check.drift, drift_fired = report.to_dict(), report.fired
        check.triggers = self.triggers(window, drift_fired, now, int(champion.artifacts.meta.get("n_clicks", 0)))
        if check.triggers:
            self.produce(check, window, champion)
        check.cpu_s = round(time.process_time() - started_cpu, 2)
        atomic_write(self.settings.models_dir / STATUS, json.dumps(check.to_dict()))
        return check

    def base_of(self, champion: ModelBundle) -> ModelBundle:
        """The version new clicks are added to: the champion, or the warm version a light or folded
        champion was built on (neither consumes its clicks: the cursor stays before them)."""
        bundle = champion
        for _ in range(3):  # folded → light → warm at most
            meta = bundle.artifacts.meta
            if (meta.get("continual") or {}).get("kind") not in ("light", "fold_in") \
                    or not self.registry.exists(meta.get("parent", "")):
                break
            bundle = ModelBundle.load(self.settings.models_dir / meta["parent"])
        return bundle

    def produce(self, check: Check, window: Interactions, champion: ModelBundle) -> None:
        """Train a candidate on the window minus its hold-out, gate it, promote it or retire it.

        A warm version (any trigger but new items alone) consumes the window: the cursor moves to the
        hold-out's start. A light version (new items: the window folded into its base, `fold_in`:
        counts, session-kNN memory, new items indexed; embeddings and ranker kept) only overlays the
        window on its base, so the next warm version still trains on all of it."""
        s = self.settings
        train_part, holdout, cut = split_holdout(window, holdout_share(window, s.learn_holdout_share,
                                                                       s.learn_gate_cases))
        light = check.triggers == ["new_items"]
        config = self.config
        if not light and s.learn_refit_on_drift and "drift" in check.triggers:
            config = replace(config, refit_embeddings=True)
        base = self.base_of(champion)
        now = datetime.now(timezone.utc)
        version = new_version_name(base.version, len(train_part), now)
        if light:
            candidate = fold_in(base, train_part, version=version, path=s.models_dir / version, config=config,
                                kind="light", log=self.log)
        else:
            candidate = warm_start(base, train_part, version=version, path=s.models_dir / version, config=config,
                                   decay=s.recency_decay, ann_k=s.candidates_k, max_session_items=s.max_session_items,
                                   examples=self.ranker_examples(cut), log=self.log)
        gate_started = time.process_time()
        decision, examples = scored_gate(candidate, champion, holdout, margin=s.learn_gate_margin,
                                         decay=s.recency_decay, ann_k=s.candidates_k,
                                         max_session_items=s.max_session_items, max_cases=s.learn_gate_cases,
                                         history=window)
        check.gate_cpu_s = round(time.process_time() - gate_started, 2)
        check.version, check.kind, check.gate = version, "light" if light else "warm", decision.to_dict()
        candidate.artifacts.meta["continual"]["kind"] = check.kind
        candidate.artifacts.meta["gate"] = {**decision.to_dict(), "triggers": check.triggers}
        candidate.save()
        if decision.passed:
            served = version
            if s.learn_fold_in and len(holdout):
                served = new_version_name(version, len(holdout), datetime.now(timezone.utc))
                folded = fold_in(candidate, holdout, version=served, path=s.models_dir / served, config=config,
                                 log=self.log)
                folded.artifacts.meta["gate"] = {**candidate.artifacts.meta["gate"], "gated_version": version}
                folded.save()
                check.folded = served
            if s.learn_promote == "bandit":
                self.registry.set_routing(RoutingConfig(policy="bandit", arms=(served,)))
            else:
                self.registry.promote(served)
            check.promoted = True
        else:
            self.registry.retire(version)
        self.first_unknown_at = None if decision.passed else check.at  # a rejected light version waits again
        self.pool(examples[version if decision.passed else champion.version])
        moved = decision.passed and not light
        self.state = LearnState(trained_through=cut if moved else self.state.trained_through,
                                last_version_at=check.at, versions=self.state.versions + 1,
                                attempted_clicks=0 if moved else len(window))
        self.state.save(s.models_dir)
        with open(s.models_dir / LOG, "a") as out:
            out.write(json.dumps(check.to_dict()) + "\n")
        self.log(f"learn: {version} ({check.kind}, triggers {', '.join(check.triggers)}) {decision.summary}"
                 f"{' → promoted' if check.promoted else ' → retired'}"
                 f"{f' as {check.folded} (hold-out folded in)' if check.folded else ''}")

    def run(self, *, max_checks: int | None = None, stop: Callable[[], bool] = lambda: False) -> None:
        checks = 0
        while not stop() and (max_checks is None or checks < max_checks):
            started = time.monotonic()
            check = self.check()
            checks += 1
            if not check.triggers:
                self.log(f"learn: {check.new_clicks:,} new clicks, {check.new_items:,} new items; no trigger"
                         + (f" (drift: {', '.join(check.drift.get('reasons', [])) or 'none'})" if check.drift else ""))
            time.sleep(max(0.0, self.settings.learn_check_s - (time.monotonic() - started)))


class ArmRewards:
    """The champion's 0/1 rewards per answer since the last call, from the arm counters the worker's
    attribution keeps in Redis (streamrec.arm_stats): Δclicked ones and Δ(impressions − clicked) zeros.
    The order inside one interval is lost; ADWIN only needs the intervals in order."""

    def __init__(self, settings: Settings) -> None:
        import redis

        self.client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        self.registry = ModelRegistry(settings.models_dir)
        self.last: dict[str, tuple[int, int]] = {}
        self.rng = np.random.default_rng(0)

    def __call__(self, version: str) -> list[float]:
        from redis.exceptions import RedisError

        from streamrec.arm_stats import ArmStats, arm_key

        try:
            stats = ArmStats.from_hash(version, self.client.hgetall(arm_key(self.registry.routing().experiment, version)))
        except RedisError:
            return []  # Redis away: no rewards this time, the detector keeps its window
        shown, clicked = self.last.get(version, (stats.impressions, stats.clicked))
        self.last[version] = (stats.impressions, stats.clicked)
        new_clicked = max(0, stats.clicked - clicked)
        new_unclicked = max(0, (stats.impressions - shown) - new_clicked)
        rewards = np.array([1.0] * new_clicked + [0.0] * new_unclicked)
        self.rng.shuffle(rewards)  # no made-up order inside the interval (all ones first would look like a drop)
        return rewards.tolist()
