"""Live operations figures for GET /ops/summary, and the dependency probe behind streamrec_dependency_up.

The `online` part (the routing policy and each arm's share, impressions and CTR with its Wilson
interval) comes from the live router (`serving.routing.LiveRouting`), whose counters the API
refreshes from Redis every STREAMREC_BANDIT_REFRESH_S; no extra Redis read per call.

Sources are the existing Prometheus metrics only: the API's own (`serving.metrics.exposition()`,
summed over its worker processes) and the streaming worker's, scraped from its /metrics. Both
are cumulative, so rates and percentiles need two snapshots: each API process keeps a bounded
ring of the snapshots it took when it answered the endpoint (nothing is sampled while nobody
looks). Because the values themselves are global (all API processes, the one worker), any two
snapshots give true figures for the interval between them, whichever process took them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

from serving import metrics
from serving.event_sink import EventSink
from serving.routing import Router
from serving import schemas
from serving.schemas import ApiOps, OpsPoint, WorkerOps
from streamrec.arm_stats import ArmStats, ctr_interval
from streamrec.artifacts import LEARN_STATUS
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings

log = logging.getLogger(__name__)

DEPENDENCY_CHECK_S = 2.0
WORKER_SCRAPE_TIMEOUT_S = 0.5
RING_SIZE = 600  # snapshots kept per process: >= 5 min at the page's 1-2 s polls
MIN_SPACING_S = 0.5  # polls closer than this to the last kept snapshot are answered but not kept
SERIES_POINTS = 120
DEPENDENCIES = ("redis", "kafka")

Samples = dict[str, list[tuple[dict[str, str], float]]]  # sample name -> (labels, value)


def parse(text: str) -> Samples:
    """Prometheus text → samples by name (with the `_total`, `_bucket`, ... suffixes)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: Samples, name: str, **match: str) -> float | None:
    """Sum of the samples of `name` whose labels include `match`; None when there is no such sample."""
    values = [v for labels, v in samples.get(name, ()) if all(labels.get(k) == w for k, w in match.items())]
    return sum(values) if values else None


@dataclass(frozen=True)
class Buckets:
    """A histogram's cumulative bucket counts, summed over its label sets: (upper bound, count), ascending."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def of(cls, samples: Samples, histogram: str) -> "Buckets | None":
        by_bound: dict[float, float] = {}
        for labels, value in samples.get(f"{histogram}_bucket", ()):
            bound = float(labels["le"])  # "+Inf" parses to inf
            by_bound[bound] = by_bound.get(bound, 0.0) + value
        if not by_bound:
            return None
        bounds = tuple(sorted(by_bound))
        return cls(bounds, tuple(by_bound[b] for b in bounds))

    @property
    def count(self) -> float:
        return self.counts[-1]

    def since(self, earlier: "Buckets | None") -> "Buckets":
        """The observations after `earlier` (all of them if the process restarted, as Prometheus' rate())."""
        if earlier is None or earlier.bounds != self.bounds or earlier.count > self.count:
            return self
        return Buckets(self.bounds, tuple(now - then for now, then in zip(self.counts, earlier.counts)))

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear within the bucket; beyond the last finite bound, that bound."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.counts):
            if count >= rank:
                if math.isinf(bound):
                    return lower_bound
                if count == lower_count:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = bound, count
        return lower_bound


@dataclass(frozen=True)
class WorkerSnapshot:
    applied: float | None
    duplicate: float | None
    dead_lettered: float | None
    lag_by_topic: dict[str, float]
    freshness: Buckets | None


@dataclass(frozen=True)
class Snapshot:
    """The cumulative figures at one moment."""

    mono: float
    at: float
    events_accepted: float
    events_unavailable: float
    recommend: Buckets | None
    recommend_by_stage: dict[str, float]
    degraded: float
    dependencies: dict[str, bool | None]
    worker: WorkerSnapshot | None  # None when its /metrics did not answer
    worker_error: str = ""

    @property
    def recommend_count(self) -> float:
        return self.recommend.count if self.recommend else 0.0


def api_snapshot(text: str, *, mono: float, at: float, worker: WorkerSnapshot | None,
                 worker_error: str = "") -> Snapshot:
    samples = parse(text)
    by_stage: dict[str, float] = {}
    for labels, value in samples.get("streamrec_recommend_seconds_count", ()):
        by_stage[labels.get("stage", "")] = by_stage.get(labels.get("stage", ""), 0.0) + value
    dependencies: dict[str, bool | None] = {}
    for name in DEPENDENCIES:
        up = total(samples, "streamrec_dependency_up", dependency=name)
        dependencies[name] = None if up is None else up >= 1
    return Snapshot(
        mono=mono, at=at,
        events_accepted=total(samples, "streamrec_api_events_total", outcome="accepted") or 0.0,
        events_unavailable=total(samples, "streamrec_api_events_total", outcome="unavailable") or 0.0,
        recommend=Buckets.of(samples, "streamrec_recommend_seconds"),
        recommend_by_stage=by_stage,
        degraded=total(samples, "streamrec_recommend_degraded_total") or 0.0,
        dependencies=dependencies, worker=worker, worker_error=worker_error,
    )


def worker_snapshot(text: str) -> WorkerSnapshot:
    samples = parse(text)
    lag: dict[str, float] = {}
    for labels, value in samples.get("streamrec_worker_consumer_lag", ()):
        lag[labels.get("topic", "")] = lag.get(labels.get("topic", ""), 0.0) + value
    # A labelled counter shows an outcome only once it happened: if the counter is there, absent = 0.
    zero = 0.0 if "streamrec_worker_events_total" in samples else None
    return WorkerSnapshot(
        applied=total(samples, "streamrec_worker_events_total", outcome="applied") or zero,
        duplicate=total(samples, "streamrec_worker_events_total", outcome="duplicate") or zero,
        dead_lettered=total(samples, "streamrec_worker_events_total", outcome="dead_lettered") or zero,
        lag_by_topic=lag,
        freshness=Buckets.of(samples, "streamrec_worker_freshness_seconds"),
    )


def _increase(now: float | None, then: float | None) -> float | None:
    if now is None or then is None:
        return None
    return now if now < then else now - then  # a smaller value: the counter restarted


def _rate(now: float | None, then: float | None, seconds: float) -> float | None:
    increase = _increase(now, then)
    return None if increase is None or seconds <= 0 else round(increase / seconds, 3)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@dataclass
class Window:
    """What happened between two snapshots."""

    seconds: float
    api_events_per_s: float | None
    recommend_per_s: float | None
    recommend_p50_ms: float | None
    recommend_p99_ms: float | None
    degraded_share: float | None
    stage_share: dict[str, float]
    worker_events_per_s: float | None = None
    dead_lettered_per_s: float | None = None
    freshness_p50_ms: float | None = None
    freshness_p99_ms: float | None = None

    @classmethod
    def between(cls, old: Snapshot, new: Snapshot) -> "Window":
        seconds = new.mono - old.mono
        latency = new.recommend.since(old.recommend) if new.recommend else None
        answers = latency.count if latency else 0.0
        degraded = _increase(new.degraded, old.degraded) or 0.0
        stages = {stage: _increase(count, old.recommend_by_stage.get(stage, 0.0)) or 0.0
                  for stage, count in new.recommend_by_stage.items()}
        window = cls(
            seconds=seconds,
            api_events_per_s=_rate(new.events_accepted, old.events_accepted, seconds),
            recommend_per_s=_rate(new.recommend_count, old.recommend_count, seconds),
            recommend_p50_ms=_ms(latency.quantile(0.5)) if latency else None,
            recommend_p99_ms=_ms(latency.quantile(0.99)) if latency else None,
            degraded_share=round(min(1.0, degraded / answers), 4) if answers else None,
            stage_share={stage: round(n / answers, 4) for stage, n in stages.items() if n} if answers else {},
        )
        if new.worker and old.worker:
            window.worker_events_per_s = _rate(new.worker.applied, old.worker.applied, seconds)
            window.dead_lettered_per_s = _rate(new.worker.dead_lettered, old.worker.dead_lettered, seconds)
            if new.worker.freshness:
                fresh = new.worker.freshness.since(old.worker.freshness)
                window.freshness_p50_ms = _ms(fresh.quantile(0.5))
                window.freshness_p99_ms = _ms(fresh.quantile(0.99))
        return window


def _lag(worker: WorkerSnapshot | None) -> float | None:
    return sum(worker.lag_by_topic.values()) if worker and worker.lag_by_topic else None


class OnlineArm(BaseModel):
    """One model version of the routing, as the worker's counters (in Redis) last said."""

    version: str
    champion: bool
    share: float = Field(..., description="Its current probability of answering a new session (the bandit's is "
                         "Thompson sampling's; shadow: the champion answers everything).")
    shadow: bool = Field(False, description="A shadow challenger: scored and logged, never shown.")
    impressions: int = Field(..., description="Served answers counted by the worker (for a shadow arm: its lists).")
    clicked: int = Field(..., description="Of those, answers followed by a click on a shown item (shadow: lists "
                         "that held the clicked item).")
    ctr: float | None = Field(None, description="clicked / impressions; null before the first impression.")
    ctr_low: float | None = Field(None, description="Wilson 95% interval of the CTR, low end.")
    ctr_high: float | None = None


class OnlineOps(BaseModel):
    """The routing in force and its arms' live figures (`streamrec report online` for the full report)."""

    policy: str
    experiment: str
    arms: list[OnlineArm]


class DriftFigure(BaseModel):
    """One drift statistic of the learner's latest check, against its calibrated threshold."""

    name: str
    value: float
    threshold: float
    fired: bool
    responds_to: str


class LearnOps(BaseModel):
    """`streamrec learn`'s latest check (its LEARN_STATUS.json in the models folder)."""

    at: float = Field(..., description="When the check ran (unix seconds).")
    champion: str | None
    new_clicks: int = Field(..., description="Clicks archived since the champion's training data ended.")
    new_items: int = Field(..., description="Of their items, how many the champion does not know.")
    triggers: list[str] = Field(..., description="Triggers that fired (schedule, volume, drift, new_items).")
    drift: list[DriftFigure]
    version: str | None = Field(None, description="The version this check produced, if any.")
    promoted: bool = False
    gate: str | None = Field(None, description="The gate's figures for that version.")


class OpsSummary(schemas.OpsSummary):
    """Live operations figures (see the base) and the online loop's: the routing and its arms."""

    online: OnlineOps | None = Field(None, description="The routing policy and each arm's traffic share and CTR; "
                                     "null while no model is loaded.")
    learning: LearnOps | None = Field(None, description="Continual learning's latest check: drift against the "
                                      "champion's training window, triggers, the last decision; null while "
                                      "`streamrec learn` has not run.")


def learn_ops(models_dir: Path) -> LearnOps | None:
    """The learner's latest check from its status file; None when absent or unreadable."""
    try:
        status = json.loads((Path(models_dir) / LEARN_STATUS).read_text())
    except (OSError, ValueError):
        return None
    gate = status.get("gate") or {}
    return LearnOps(
        at=status["at"], champion=status.get("champion"), new_clicks=status.get("new_clicks", 0),
        new_items=status.get("new_items", 0), triggers=status.get("triggers", []),
        drift=[DriftFigure(**{k: s[k] for k in DriftFigure.model_fields})
               for s in (status.get("drift") or {}).get("statistics", [])],
        version=status.get("version"), promoted=bool(status.get("promoted")),
        gate=(f"{gate['metric']} {gate['candidate_score']:.2f} vs {gate['champion_score']:.2f} "
              f"(margin {gate['margin']}, {gate['cases']} cases)") if gate else None)


def online_ops(router: Router) -> OnlineOps:
    """The router's policy, share and counters (refreshed from Redis by LiveRouting), per arm."""
    share = router.share()
    arms = []
    for version in router.arms:
        stats = router.stats.get(version, ArmStats(version))
        shadow = router.policy == "shadow" and version != router.champion
        shown, clicked = ((stats.shadow_impressions, stats.shadow_clicked) if shadow
                          else (stats.impressions, stats.clicked))
        interval = ctr_interval(clicked, shown)
        arms.append(OnlineArm(version=version, champion=version == router.champion, share=share.get(version, 0.0),
                              shadow=shadow, impressions=shown, clicked=clicked,
                              ctr=clicked / shown if shown else None,
                              ctr_low=interval[0] if interval else None, ctr_high=interval[1] if interval else None))
    return OnlineOps(policy=router.policy, experiment=router.experiment, arms=arms)


@dataclass
class OpsMonitor:
    """One per API process: takes a snapshot per call, keeps a bounded ring of them, and summarises."""

    settings: Settings
    ring: deque[tuple[Snapshot, OpsPoint | None]] = field(default_factory=lambda: deque(maxlen=RING_SIZE))
    clock: Callable[[], float] = time.monotonic

    async def scrape_worker(self) -> tuple[WorkerSnapshot | None, str]:
        """The worker's metrics, or (None, why) within WORKER_SCRAPE_TIMEOUT_S: never an exception."""
        url = self.settings.worker_metrics_endpoint
        try:
            async with httpx.AsyncClient(timeout=WORKER_SCRAPE_TIMEOUT_S) as client:
                response = await client.get(url)
            response.raise_for_status()
            return worker_snapshot(response.text), ""
        except Exception as exc:  # noqa: BLE001 - unreachable, slow, not Prometheus text: all "unknown"
            return None, f"{type(exc).__name__}: {exc}"[:300]

    async def snapshot(self) -> Snapshot:
        worker, error = await self.scrape_worker()
        return api_snapshot(metrics.exposition().decode(), mono=self.clock(), at=time.time(),
                            worker=worker, worker_error=error)

    def keep(self, snap: Snapshot) -> None:
        last = self.ring[-1][0] if self.ring else None
        if last is not None and snap.mono - last.mono < MIN_SPACING_S:
            return
        point = None
        if last is not None:
            w = Window.between(last, snap)
            point = OpsPoint(at=round(snap.at, 3), api_events_per_s=w.api_events_per_s,
                             worker_events_per_s=w.worker_events_per_s, recommend_p99_ms=w.recommend_p99_ms,
                             freshness_p99_ms=w.freshness_p99_ms, consumer_lag=_lag(snap.worker),
                             degraded_share=w.degraded_share)
        self.ring.append((snap, point))

    def base_for(self, snap: Snapshot, window_s: float) -> Snapshot | None:
        """The oldest kept snapshot within `window_s` before `snap`, else the latest one before it."""
        earlier = [s for s, _ in self.ring if s.mono < snap.mono]
        if not earlier:
            return None
        inside = [s for s in earlier if s.mono >= snap.mono - window_s]
        return inside[0] if inside else earlier[-1]

    async def summary(self, window_s: float, online: OnlineOps | None = None) -> OpsSummary:
        snap = await self.snapshot()
        base = self.base_for(snap, window_s)
        self.keep(snap)
        w = Window.between(base, snap) if base else None
        worker = snap.worker
        return OpsSummary(
            at=round(snap.at, 3),
            window_s=round(w.seconds, 3) if w else None,
            api=ApiOps(
                events_accepted_total=snap.events_accepted, events_unavailable_total=snap.events_unavailable,
                events_per_s=w.api_events_per_s if w else None, recommend_total=snap.recommend_count,
                recommend_per_s=w.recommend_per_s if w else None,
                recommend_p50_ms=w.recommend_p50_ms if w else None, recommend_p99_ms=w.recommend_p99_ms if w else None,
                degraded_share=w.degraded_share if w else None, stage_share=w.stage_share if w else {},
            ),
            worker=WorkerOps(
                reachable=worker is not None, url=self.settings.worker_metrics_endpoint, error=snap.worker_error,
                applied_total=worker.applied if worker else None,
                duplicate_total=worker.duplicate if worker else None,
                dead_lettered_total=worker.dead_lettered if worker else None,
                events_per_s=w.worker_events_per_s if w else None,
                dead_lettered_per_s=w.dead_lettered_per_s if w else None,
                consumer_lag=_lag(worker), consumer_lag_by_topic=dict(worker.lag_by_topic) if worker else {},
                freshness_p50_ms=w.freshness_p50_ms if w else None, freshness_p99_ms=w.freshness_p99_ms if w else None,
            ),
            dependencies=snap.dependencies,
            series=[point for _, point in list(self.ring)[-SERIES_POINTS:] if point is not None],
            online=online,
            learning=learn_ops(self.settings.models_dir),
        )


async def check_dependencies(store: OnlineStore, sink: EventSink) -> dict[str, bool]:
    """The checks /health makes, recorded in streamrec_dependency_up."""
    redis_ok, (kafka_ok, _) = await asyncio.gather(store.ping(), sink.healthy())
    status = {"redis": bool(redis_ok), "kafka": bool(kafka_ok)}
    for name, ok in status.items():
        metrics.DEPENDENCY_UP.labels(name).set(1 if ok else 0)
    return status


async def watch_dependencies(store: OnlineStore, sink: EventSink, interval_s: float = DEPENDENCY_CHECK_S) -> None:
    """Keep streamrec_dependency_up current (run as a task in the app's lifespan; ends when cancelled)."""
    while True:
        try:
            await check_dependencies(store, sink)
        except Exception:  # noqa: BLE001 - the checks return False on failure; anything else is logged, not fatal
            log.exception("dependency check failed")
        await asyncio.sleep(interval_s)
