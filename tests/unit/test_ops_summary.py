"""GET /ops/summary's arithmetic on Prometheus text: histogram quantiles as Prometheus computes them,
rates between two snapshots, counter restarts, and missing worker metrics as null (never an error)."""

from __future__ import annotations

import math
from collections import deque

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving import ops
from serving.ops import Buckets, Window, api_snapshot, worker_snapshot
from streamrec.settings import Settings

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.05)


def api_text(latencies: dict[str, list[float]], accepted: int = 0, degraded: int = 0,
             dependencies: dict[str, int] | None = None) -> str:
    """What serving.metrics.exposition() returns, built with prometheus_client itself."""
    registry = CollectorRegistry()
    histogram = Histogram("streamrec_recommend_seconds", "", ["stage"], buckets=LATENCY_BUCKETS, registry=registry)
    for stage, values in latencies.items():
        for value in values:
            histogram.labels(stage).observe(value)
    events = Counter("streamrec_api_events_total", "", ["outcome"], registry=registry)
    events.labels("accepted").inc(accepted)
    Counter("streamrec_recommend_degraded_total", "", ["reason"], registry=registry).labels("budget").inc(degraded)
    up = Gauge("streamrec_dependency_up", "", ["dependency"], registry=registry)
    for name, value in (dependencies or {}).items():
        up.labels(name).set(value)
    return generate_latest(registry).decode()


def worker_text(applied: int, dead: int = 0, lag: dict[tuple[str, int], int] | None = None,
                freshness: list[float] | None = None) -> str:
    registry = CollectorRegistry()
    events = Counter("streamrec_worker_events_total", "", ["outcome"], registry=registry)
    events.labels("applied").inc(applied)
    events.labels("dead_lettered").inc(dead)
    if lag is not None:
        gauge = Gauge("streamrec_worker_consumer_lag", "", ["topic", "partition"], registry=registry)
        for (topic, partition), value in lag.items():
            gauge.labels(topic, str(partition)).set(value)
    if freshness is not None:
        histogram = Histogram("streamrec_worker_freshness_seconds", "", buckets=(0.05, 0.1, 0.25, 1.0), registry=registry)
        for value in freshness:
            histogram.observe(value)
    return generate_latest(registry).decode()


def test_quantile_interpolates_within_the_bucket_like_histogram_quantile():
    # 10 observations: 4 in (0, 0.1], 6 in (0.1, 1]. p50 = rank 5: 1/6 of the way into (0.1, 1].
    buckets = Buckets((0.1, 1.0, math.inf), (4, 10, 10))
    assert buckets.quantile(0.5) == pytest.approx(0.1 + 0.9 * (5 - 4) / 6)
    assert buckets.quantile(0.2) == pytest.approx(0.05)
    assert Buckets((0.1, math.inf), (1, 3)).quantile(0.99) == 0.1  # beyond the last finite bound: that bound
    assert Buckets((0.1, math.inf), (0, 0)).quantile(0.5) is None


def test_window_counts_only_what_happened_between_the_snapshots():
    old = api_snapshot(api_text({"stream": [0.0015] * 100}, accepted=10), mono=0, at=0, worker=None)
    new = api_snapshot(api_text({"stream": [0.0015] * 100 + [0.008] * 10, "fallback_popular": [0.0005] * 10},
                                accepted=30, degraded=5), mono=10, at=10, worker=None)
    window = Window.between(old, new)
    assert window.api_events_per_s == 2.0
    assert window.recommend_per_s == 2.0
    # the window's 20 answers: 10 at 0.5 ms, 10 at 8 ms, so p50 is the top of (0, 1 ms], p99 in (5, 10 ms]
    assert window.recommend_p50_ms == 1.0
    assert window.recommend_p99_ms == pytest.approx(5 + 5 * (19.8 - 10) / 10, abs=0.01)
    assert window.degraded_share == 0.25
    assert window.stage_share == {"stream": 0.5, "fallback_popular": 0.5}


def test_a_restarted_worker_counts_from_zero_instead_of_going_negative():
    old = api_snapshot(api_text({}), mono=0, at=0, worker=worker_snapshot(worker_text(applied=1000, freshness=[0.2] * 50)))
    new = api_snapshot(api_text({}), mono=5, at=5, worker=worker_snapshot(worker_text(applied=40, freshness=[0.07] * 40)))
    window = Window.between(old, new)
    assert window.worker_events_per_s == 8.0
    assert window.freshness_p50_ms == pytest.approx(75.0)  # only the new process's observations


def test_worker_metrics_not_exported_yet_are_null():
    worker = worker_snapshot(worker_text(applied=5))
    assert worker.lag_by_topic == {} and worker.freshness is None
    assert worker.duplicate == 0.0  # the counter is there, this outcome never happened
    assert worker_snapshot("").applied is None  # no counter at all: unknown
    snap = api_snapshot(api_text({}), mono=0, at=0, worker=worker)
    window = Window.between(snap, api_snapshot(api_text({}), mono=1, at=1, worker=worker))
    assert window.freshness_p99_ms is None and window.recommend_p50_ms is None and window.degraded_share is None


def test_lag_is_summed_per_topic_and_dependencies_read_from_the_gauge():
    worker = worker_snapshot(worker_text(applied=1, lag={("clicks", 0): 3, ("clicks", 1): 4, ("by-item", 0): 1}))
    assert worker.lag_by_topic == {"clicks": 7.0, "by-item": 1.0}
    snap = api_snapshot(api_text({}, dependencies={"redis": 1, "kafka": 0}), mono=0, at=0, worker=worker)
    assert snap.dependencies == {"redis": True, "kafka": False}
    assert api_snapshot(api_text({}), mono=0, at=0, worker=None).dependencies == {"redis": None, "kafka": None}


async def test_summary_needs_two_calls_for_rates_and_keeps_a_bounded_series(monkeypatch):
    texts = iter([api_text({}, accepted=n) for n in (0, 4, 8, 12)])
    clock = iter([100.0, 102.0, 104.0, 106.0])
    monkeypatch.setattr(ops.metrics, "exposition", lambda: next(texts).encode())
    monitor = ops.OpsMonitor(Settings(worker_metrics_url="http://127.0.0.1:9/metrics"), ring=deque(maxlen=3),
                             clock=lambda: next(clock))

    first = await monitor.summary(window_s=10)
    assert first.window_s is None and first.api.events_per_s is None and first.series == []
    assert first.worker.reachable is False and first.worker.error  # nothing listens on port 9
    second = await monitor.summary(window_s=10)
    assert second.window_s == 2.0 and second.api.events_per_s == 2.0
    await monitor.summary(window_s=10)
    fourth = await monitor.summary(window_s=3)  # the base is the oldest snapshot within 3 s: 104
    assert fourth.window_s == 2.0 and fourth.api.events_accepted_total == 12
    assert len(monitor.ring) == 3  # bounded: the first snapshot left the ring
    assert [p.api_events_per_s for p in fourth.series] == [2.0, 2.0, 2.0]  # one per kept interval
