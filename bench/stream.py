"""`streamrec bench stream`: events/s through Kafka → Faust worker → online store, and freshness.

Throughput is a backlog produced first and drained flat out by `streamrec stream` (its Prometheus
counters sampled every 100 ms, start-up excluded): what the worker sustains. Freshness is what a
user feels: an open-loop producer sends event *i* at `t0 + i / rate` and the poll that shows it in
Redis stops its clock, at `--rate` and near the measured saturation. The reference runs the
worker's own batch processors on a plain aiokafka consumer over the same backlog, so
`ratio_vs_reference` is what Faust adds. Each run has its own topics, worker and rows, removed at
the end. Traffic: interleaved sessions of 1–8 clicks, Zipf items outside any catalogue.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import typer

from bench.cli import bench_app
from bench.common import (BenchSetupError, JsonFlag, ScheduledProducer, Seed, click_counts, console, cpu_seconds,
                          latency_summary, observe, plain, print_table, print_targets, require_stack, run_command,
                          targets)
from streamrec.settings import Settings, get_settings

BENCH_ITEM_BASE = 10**15  # bench item ids: far above any catalogue's
ITEM_POOL = 5_000
MAX_SESSION_CLICKS = 8
CONTINUE_PROBABILITY = 0.7  # P(a session has another click): lengths 1..8, mean ≈ 2.9
MEAN_GAP_EVENTS = 5_000  # events between two clicks of one session, on average (exponential)
METRICS_EVERY_S = 0.1
SETTLE_S = 15.0
REFERENCE_PROJECT_SUFFIX = "_bench_reference"
TARGET_EVENTS_PER_S = 5_000.0
TARGET_FRESHNESS_MS_P99_AT_1000 = 250.0


# --- traffic -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Traffic:
    """Events in send order: (session id, item id), and for each the click's number in its session."""

    sessions: list[str]
    items: list[int]
    nth: list[int]  # 1 for a session's first click, 2 for its second, ...

    def __len__(self) -> int:
        return len(self.sessions)

    def expected_counts(self) -> dict[str, int]:
        """Each session's click count once all its events are applied (its last click's number)."""
        return dict(zip(self.sessions, self.nth))

    def describe(self, window: int = 2000) -> dict[str, float]:
        last: dict[str, int] = {}
        repeats = 0
        for position, session_id in enumerate(self.sessions):
            repeats += position - last.get(session_id, -window - 1) <= window
            last[session_id] = position
        return {"events": len(self), "sessions": len(last),
                "mean_clicks_per_session": round(len(self) / max(len(last), 1), 2),
                "new_session_share": round(sum(1 for n in self.nth if n == 1) / max(len(self), 1), 3),
                f"repeat_share_in_{window}": round(repeats / max(len(self), 1), 3)}


def session_traffic(count: int, prefix: str, rng: np.random.Generator) -> Traffic:
    """`count` clicks of interleaved sessions: starts spread over the stream, clicks ~5,000 events apart."""
    if count <= 0:
        return Traffic([], [], [])
    clicks = np.arange(1, MAX_SESSION_CLICKS + 1)
    weights = CONTINUE_PROBABILITY ** (clicks - 1)
    n_sessions = int(math.ceil(count / float((clicks * weights).sum() / weights.sum()) * 1.15)) + 1
    lengths = rng.choice(clicks, size=n_sessions, p=weights / weights.sum())
    starts = rng.uniform(0, count, size=n_sessions)
    owner = np.repeat(np.arange(n_sessions), lengths)
    gaps = rng.exponential(MEAN_GAP_EVENTS, size=len(owner))
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    gaps[first] = 0.0
    running = np.cumsum(gaps)
    offsets = running - np.repeat(running[first], lengths)
    nth = np.arange(len(owner)) - np.repeat(first, lengths) + 1
    order = np.argsort(starts[owner] + offsets, kind="stable")[:count]
    # a session cut short at the end keeps its first clicks: positions grow within a session
    ranks = np.arange(1, ITEM_POOL + 1, dtype=np.float64)
    items = BENCH_ITEM_BASE + rng.choice(ITEM_POOL, size=count, p=(1 / ranks) / (1 / ranks).sum())
    return Traffic([f"{prefix}{owner[i]}" for i in order], [int(i) for i in items], [int(nth[i]) for i in order])


# --- rates and machine noise --------------------------------------------------------------------

def applied_rate(samples: list[tuple[float, float, float]]) -> tuple[float, int | None, int | None]:
    """Events/s from the first sample showing any progress to the first showing everything done.

    `samples` are (time, progress, done): `progress` counts what any stage has applied (start-up is
    over once it moves), `done` what has been through every stage. What is already done at the first
    sample is not divided by any time; the end is seen up to one sampling period late, so the figure
    is a slight underestimate. Also returns the indexes of the two samples.
    """
    first = next((i for i, (_, progress, _) in enumerate(samples) if progress > 0), None)
    if first is None:
        return float("nan"), None, None
    most = max(done for _, _, done in samples)
    last = next(i for i, (_, _, done) in enumerate(samples) if done >= most)
    if last == first and first > 0:  # all of it between two samples: count from the one before (a lower bound)
        first -= 1
    (t0, _, d0), (t1, _, d1) = samples[first], samples[last]
    return ((d1 - d0) / (t1 - t0) if t1 > t0 else float("nan")), first, last


class StealMeter:
    """Share of CPU time the hypervisor took from this VM (`steal`) since creation; None where the system
    does not report it. Steal freezes every process at once: stalls no code of ours causes."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float]:
        import psutil

        times = psutil.cpu_times()
        return getattr(times, "steal", math.nan), sum(times)

    def percent(self) -> float | None:
        (steal, total), (steal_now, total_now) = self.start, self._read()
        if math.isnan(steal) or total_now <= total:
            return None
        return round(100.0 * (steal_now - steal) / (total_now - total), 1)


def worker_counters(text: str) -> dict[str, float]:
    """Sessions applied, item clicks counted, mean batch size and write times, from the worker's /metrics."""
    from serving.ops import parse, total

    samples = parse(text)

    def mean(name: str, **labels: str) -> float:
        count = total(samples, f"{name}_count", **labels)
        return (total(samples, f"{name}_sum", **labels) or 0.0) / count if count else float("nan")

    write = "streamrec_worker_online_write_seconds"
    return {"applied": total(samples, "streamrec_worker_events_total", outcome="applied") or 0.0,
            "counted": total(samples, "streamrec_worker_item_clicks_total", outcome="counted") or 0.0,
            "mean_batch_events": round(mean("streamrec_worker_batch_events"), 1),
            "mean_session_write_ms": round(1000 * mean(write, view="session_features"), 3),
            "mean_item_write_ms": round(1000 * mean(write, view="item_trending"), 3)}


# --- the phases ---------------------------------------------------------------------------------

async def fixed_rate_run(settings: Settings, store: Any, traffic: Traffic, rate: float,
                         poll_s: float) -> dict[str, Any]:
    """Open-loop producer process at `rate` + observer here → freshness of every event."""
    steal = StealMeter()
    with ScheduledProducer(settings, list(zip(traffic.sessions, traffic.items)), rate) as producer:
        t0 = producer.start()
        visibility = await observe(store, traffic.sessions, t0, rate, poll_s, SETTLE_S)
        sent = np.asarray(producer.report()["sent"])
    seen = np.asarray(visibility.seen)
    visible = ~np.isnan(seen)
    freshness_ms = (seen[visible] - sent[visible]) * 1000.0
    lag_ms = (sent - (t0 + np.arange(len(sent)) / rate)) * 1000.0
    span = float(sent[-1] - sent[0]) if len(sent) > 1 else float("nan")
    # second half of the run vs first: a worker that cannot keep up shows a growing freshness
    seen_first_half = int(visible[:len(sent) // 2].sum())
    halves = [freshness_ms[:seen_first_half], freshness_ms[seen_first_half:]]
    summary = latency_summary(freshness_ms / 1000.0)
    return {
        "offered_rate": round(rate, 1),
        "achieved_rate": round((len(sent) - 1) / span, 1) if span and span > 0 else float("nan"),
        **{f"freshness_ms_{key.removesuffix('_ms')}": value for key, value in summary.items()},
        **{f"freshness_ms_p50_{half}_half": round(float(np.median(values)), 3) if len(values) else float("nan")
           for half, values in zip(("first", "second"), halves)},
        "lost": int((~visible).sum()),
        # events made visible per second, from the first due to the last visible: below the offered
        # rate when the worker could not keep up (its live capacity, smaller batches than a backlog's)
        "visible_rate": round(float(visible.sum()) / float(np.nanmax(seen) - t0), 1) if visible.any() else 0.0,
        "send_lag_ms_p99": round(float(np.percentile(lag_ms, 99)), 3),
        "poll_interval_ms": round(float(np.mean(visibility.poll_gaps_s)) * 1000, 3) if visibility.poll_gaps_s
        else float("nan"),
        "poll_rtt_ms_p50": round(float(np.median(visibility.poll_rtts_s)) * 1000, 3) if visibility.poll_rtts_s
        else float("nan"),
        "max_pending_sessions": visibility.max_pending_sessions,
        "traffic": traffic.describe(),
        "cpu_steal_percent": steal.percent(),
    }


async def drain_backlog(settings: Settings, worker: str, total: int, timeout_s: float = 120.0) -> dict[str, Any]:
    """Start the worker and sample its counters until it has applied the whole backlog: its steady rate and CPU."""
    import httpx

    from infra import process

    steal = StealMeter()
    pid = process.start_detached(worker, [sys.executable, "-m", "cli", "stream"], settings, env=settings.to_env())
    samples: list[tuple[float, float, float, float]] = []  # (t, applied, counted, cpu seconds)
    started = last_progress = time.monotonic()
    last_done, counters = -1.0, {"applied": 0.0, "counted": 0.0}
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            if process.is_running(worker, settings) is None:
                raise BenchSetupError(f"the worker exited:\n{process.log_tail(worker, settings)}")
            try:
                counters = worker_counters((await client.get(settings.worker_metrics_endpoint)).text)
                scraped = True
            except httpx.HTTPError:
                scraped = False
            now = time.monotonic()
            if scraped:
                applied, counted = counters["applied"], counters["counted"]
                samples.append((now, applied, counted, cpu_seconds(pid) or float("nan")))
                if min(applied, counted) > last_done:
                    last_progress, last_done = now, min(applied, counted)
                if last_done >= total:
                    break
            if last_done <= 0 and now - started > timeout_s:
                raise BenchSetupError(f"the worker applied nothing within {timeout_s:.0f}s:\n"
                                      f"{process.log_tail(worker, settings)}")
            if last_done > 0 and now - last_progress > SETTLE_S:
                break  # stalled: what is missing is reported as lost
            await asyncio.sleep(METRICS_EVERY_S)
    progress = [(t, a + c, min(a, c)) for t, a, c, _ in samples]
    rate, first, last = applied_rate(progress)
    session_rate, _, _ = applied_rate([(t, a, a) for t, a, _, _ in samples])
    cpu_percent = cpu_us_per_event = float("nan")
    if first is not None and last is not None and last > first:
        (ta, _, da), (tb, _, db) = progress[first], progress[last]
        cpu = samples[last][3] - samples[first][3]
        cpu_percent, cpu_us_per_event = 100.0 * cpu / (tb - ta), 1e6 * cpu / max(db - da, 1)
    sessions_done = next((t for t, a, _, _ in samples if a >= total), None)
    items_done = next((t for t, a, c, _ in samples if c >= total), None)
    first_applied = progress[first][0] if first is not None else None
    return {
        "events_per_s": round(rate, 1),
        "session_side_events_per_s": round(session_rate, 1),
        "item_side_lag_s": round(items_done - sessions_done, 3) if items_done and sessions_done else None,
        "drain_s": round(samples[-1][0] - first_applied, 3) if first_applied is not None else float("nan"),
        "startup_s": round(first_applied - started, 3) if first_applied is not None else float("nan"),
        "worker_cpu_percent": round(cpu_percent, 1),
        "worker_cpu_us_per_event": round(cpu_us_per_event, 1),
        "metric_samples": len(samples),
        **{key: int(value) if key in ("applied", "counted") else value for key, value in counters.items()},
        "samples": [[round(t - started, 3), int(a), int(c)] for t, a, c, _ in samples],  # s, applied, counted
        "cpu_steal_percent": steal.percent(),
    }


async def reference_run(settings: Settings, ends: dict[int, int], process: bool) -> dict[str, Any]:
    """A plain aiokafka consumer over the backlog, with (or without) the worker's own batch processors."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streaming.processor import ItemBatchProcessor, RawRecord, SessionBatchProcessor
    from streamrec.online_store import OnlineStore

    steal = StealMeter()
    total = sum(ends.values())
    store = OnlineStore.from_url(settings.redis_url, timeout_s=5.0)
    store.project = store.project + REFERENCE_PROJECT_SUFFIX
    items = ItemBatchProcessor(store, {})
    dead_letters: list[bytes] = []

    async def dead_letter(message: bytes) -> None:
        dead_letters.append(message)

    sessions = SessionBatchProcessor(settings, store, {}, dead_letter, items.process)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.clicks_topic, p) for p in ends]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp in partitions if ends[tp.partition] > 0}
        done = 0
        cpu_start = time.process_time()
        samples = [(time.monotonic(), 0.0, 0.0)]
        deadline = time.monotonic() + max(120.0, total / 200)
        while remaining:
            if time.monotonic() > deadline:
                raise BenchSetupError(f"the reference consumer read {done} of {total} events before timing out")
            fetched = await consumer.getmany(timeout_ms=200, max_records=settings.flush_max_events)
            batch: list[RawRecord] = []
            for tp, messages in fetched.items():
                end = ends[tp.partition]
                batch.extend(RawRecord(m.value, m.partition, m.offset, m.topic) for m in messages if m.offset < end)
                if messages and messages[-1].offset >= end - 1:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if process and batch:
                await sessions.process(batch)
            done += len(batch)
            samples.append((time.monotonic(), float(done), float(done)))
        cpu_seconds = time.process_time() - cpu_start
    finally:
        await consumer.stop()
        await store.close()
    rate, _, _ = applied_rate(samples)
    seconds = samples[-1][0] - samples[0][0]
    return {"events_per_s": round(rate, 1), "events": done, "dead_lettered": len(dead_letters),
            "seconds": round(seconds, 3), "cpu_percent": round(100 * cpu_seconds / seconds, 1) if seconds else None,
            "cpu_us_per_event": round(1e6 * cpu_seconds / max(done, 1), 1), "cpu_steal_percent": steal.percent()}


# --- setup and cleanup --------------------------------------------------------------------------

def bench_settings(settings: Settings, tag: str) -> Settings:
    """The configured stack with this run's own topics, worker id (consumer group) and web port."""
    from infra.kafka import free_port

    return settings.model_copy(update={"clicks_topic": f"bench-clicks-{tag}", "dead_letter_topic": f"bench-clicks-dlq-{tag}",
                                       "worker_id": f"streamrec-bench-{tag}", "worker_web_port": free_port()})


def delete_topics(settings: Settings) -> None:
    """Remove this run's topics (Faust's own internal ones too) and the worker's consumer group (best effort)."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
        try:
            admin.delete_topics([name for name in admin.list_topics() if name in (
                settings.clicks_topic, settings.dead_letter_topic) or name.startswith(f"{settings.worker_id}-")])
            admin.delete_groups([settings.worker_id])
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
        console.print(f"[yellow]note:[/] cleanup of the benchmark's topics: {exc}")


async def delete_rows(store: Any, session_ids: list[str]) -> None:
    """Delete the benchmark's session and item rows, the worker's and the reference's."""
    from streamrec import feast_codec as codec
    from streamrec import feature_schema as s

    keys = []
    for project in (store.project, store.project + REFERENCE_PROJECT_SUFFIX):
        keys += [codec.entity_key(s.VIEWS[s.SESSION_FEATURES_VIEW], sid, project) for sid in session_ids]
        keys += [codec.entity_key(s.VIEWS[s.ITEM_TRENDING_VIEW], BENCH_ITEM_BASE + i, project)
                 for i in range(ITEM_POOL)]
    for start in range(0, len(keys), 5_000):
        await store.client.delete(*keys[start:start + 5_000])


# --- the benchmark ------------------------------------------------------------------------------

def run_stream_bench(settings: Settings, **options: Any) -> dict[str, Any]:
    from infra import process, stack

    load_at_start, steal = os.getloadavg()[0], StealMeter()
    require_stack(settings, kafka=True)
    tag = uuid.uuid4().hex[:8]
    bench = bench_settings(settings, tag)
    try:
        stack.ensure_topics(bench)
    except Exception as exc:  # noqa: BLE001 - the message says what failed
        raise BenchSetupError(f"could not create the benchmark's topics on {bench.kafka_bootstrap}: {exc}") from exc
    worker = f"bench-stream-worker-{tag}"
    ok = False
    try:
        result = asyncio.run(_run(bench, worker, tag, **options))
        ok = True
    finally:
        process.stop(worker, bench, timeout_s=20.0)
        if ok:
            process.log_path(worker, bench).unlink(missing_ok=True)
        else:
            console.print(f"[yellow]worker log:[/] {process.log_path(worker, bench)}")
        delete_topics(bench)
        shutil.rmtree(bench.data_dir / "worker" / f"{bench.worker_id}-data", ignore_errors=True)
    return {**result, "load_average_1m_at_start": round(load_at_start, 2),
            "load_average_1m": round(os.getloadavg()[0], 2), "cpu_steal_percent": steal.percent()}


async def _run(bench: Settings, worker: str, tag: str, events: int, rate: float, duration: float,
               saturation_fraction: float, poll_ms: float, reference: bool, seed: int) -> dict[str, Any]:
    from infra import process
    from streamrec import feature_schema as s
    from streamrec.online_store import OnlineStore

    rng = np.random.default_rng(seed)
    store = OnlineStore.from_url(bench.redis_url, timeout_s=5.0)
    session_ids: list[str] = []
    notes: list[str] = []
    try:
        # 1. backlog (produced as fast as possible), then the worker drains it flat out
        backlog = session_traffic(events, f"bench-{tag}-b", rng)
        expected = backlog.expected_counts()
        session_ids += list(expected)
        console.print(f"producing a backlog of {len(backlog):,} events into {bench.clicks_topic} …")
        with ScheduledProducer(bench, list(zip(backlog.sessions, backlog.items)), math.inf, linger_ms=5) as producer:
            producer.start(lead_s=0.0)
            produced = producer.report(timeout_s=120.0)
        ends = produced["ends"]
        console.print(f"  {len(backlog) / produced['seconds']:,.0f} events/s; starting the worker ({worker}) …")
        saturation = await drain_backlog(bench, worker, len(backlog))
        counts = await click_counts(store, list(expected))
        saturation["lost"] = sum(max(0, n - count) for n, count in zip(expected.values(), counts))
        saturation["producer_events_per_s"] = round(len(backlog) / produced["seconds"], 1)
        saturation["traffic"] = backlog.describe()
        console.print(f"  worker: {saturation['events_per_s']:,.0f} events/s, CPU {saturation['worker_cpu_percent']}%")

        # 2. freshness at the fixed rate, then near saturation
        phases: dict[str, dict[str, Any] | None] = {"at_rate": None, "at_saturation": None}
        near = saturation_fraction * saturation["events_per_s"]
        for phase, offered, letter in (("at_rate", rate, "r"), ("at_saturation", near, "s")):
            if phase == "at_saturation" and not (saturation_fraction > 0 and math.isfinite(near) and near > 0):
                continue
            console.print(f"freshness at {offered:,.0f} events/s for {duration:g}s …")
            traffic = session_traffic(int(offered * duration), f"bench-{tag}-{letter}", rng)
            session_ids += list(traffic.expected_counts())
            phases[phase] = await fixed_rate_run(bench, store, traffic, offered, poll_ms / 1000)
        process.stop(worker, bench, timeout_s=20.0)

        # 3. the reference on the same backlog, the worker stopped
        with_reference, reference, fetch_only = reference, None, None
        if with_reference:
            console.print("reference: plain aiokafka consumer + the same batch processors, then fetch only …")
            reference = await reference_run(bench, ends, process=True)
            fetch_only = await reference_run(bench, ends, process=False)
            sample = list(expected)[:200]
            theirs = await OnlineStore(store.client, project=store.project + REFERENCE_PROJECT_SUFFIX).read(
                s.SESSION_FEATURES_VIEW, sample)
            ours = await store.read(s.SESSION_FEATURES_VIEW, sample)
            reference["rows_match_worker"] = all(row is not None for row in ours) and plain(ours) == plain(theirs)
            if not reference["rows_match_worker"]:
                notes.append("the reference's session rows differ from the worker's for the same backlog")
        await delete_rows(store, session_ids)
    finally:
        await store.close()
    return assemble(rate, saturation, phases["at_rate"], phases["at_saturation"], reference, fetch_only, notes)


def assemble(rate: float, saturation: dict[str, Any], at_rate: dict[str, Any],
             at_saturation: dict[str, Any] | None, reference: dict[str, Any] | None,
             fetch_only: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    """The JSON result: the issue's keys at the top level, each phase's details below."""
    events_per_s = saturation["events_per_s"]
    result: dict[str, Any] = {"benchmark": "stream", "events_per_s": events_per_s}
    p99_at_1000 = at_rate["freshness_ms_p99"] if rate == 1000 else None
    if rate == 1000:
        result["freshness_ms_p50_at_1000"] = at_rate["freshness_ms_p50"]
        result["freshness_ms_p99_at_1000"] = p99_at_1000
    saturated = at_saturation or {}
    result.update({
        "rate": rate,
        **{f"freshness_ms_{q}_at_rate": at_rate[f"freshness_ms_{q}"] for q in ("p50", "p95", "p99", "max")},
        "saturation_rate": saturated.get("offered_rate"),
        "freshness_ms_p50_at_saturation": saturated.get("freshness_ms_p50"),
        "freshness_ms_p99_at_saturation": saturated.get("freshness_ms_p99"),
        "reference_events_per_s": reference["events_per_s"] if reference else None,
        "ratio_vs_reference": (round(events_per_s / reference["events_per_s"], 3)
                               if reference and reference["events_per_s"] else None),
        "reference_fetch_only_events_per_s": fetch_only["events_per_s"] if fetch_only else None,
        "poll_interval_ms": at_rate["poll_interval_ms"],
        "lost": saturation["lost"] + at_rate["lost"] + saturated.get("lost", 0),
        "worker_cpu_percent": saturation["worker_cpu_percent"],
        "worker_cpu_us_per_event": saturation["worker_cpu_us_per_event"],
        "saturation": saturation, "at_rate": at_rate, "at_saturation": at_saturation,
        "reference": reference, "reference_fetch_only": fetch_only,
        "targets": targets({"events_per_s": (TARGET_EVENTS_PER_S, events_per_s, lambda v, t: v >= t),
                            "freshness_ms_p99_at_1000": (TARGET_FRESHNESS_MS_P99_AT_1000, p99_at_1000,
                                                         lambda v, t: v <= t)}),
    })
    if at_saturation and at_saturation["achieved_rate"] < 0.97 * at_saturation["offered_rate"]:
        notes.append(f"the producer reached {at_saturation['achieved_rate']:,.0f} of "
                     f"{at_saturation['offered_rate']:,.0f} events/s offered near saturation")
    if at_saturation and at_saturation["visible_rate"] < 0.97 * at_saturation["offered_rate"]:
        notes.append(f"near saturation the worker fell behind (freshness grew during the run): it made "
                     f"{at_saturation['visible_rate']:,.0f} events/s visible of {at_saturation['offered_rate']:,.0f} "
                     "offered; live, its batches are smaller than a backlog's and the producer and observer share "
                     "the two cores with it")
    result["notes"] = notes
    return result


def render(result: dict[str, Any]) -> None:
    saturation, reference, fetch_only = result["saturation"], result["reference"], result["reference_fetch_only"]
    rows = [{"path": "worker (Faust)", "events/s": saturation["events_per_s"],
             "× reference": result["ratio_vs_reference"], "CPU %": saturation["worker_cpu_percent"],
             "CPU µs/event": saturation["worker_cpu_us_per_event"], "lost": saturation["lost"],
             "steal %": saturation["cpu_steal_percent"]}]
    for name, run in (("reference: aiokafka + processors", reference), ("reference: fetch only", fetch_only)):
        if run:
            rows.append({"path": name, "events/s": run["events_per_s"], "CPU %": run["cpu_percent"],
                         "× reference": round(run["events_per_s"] / reference["events_per_s"], 3)
                         if reference and reference["events_per_s"] else None,
                         "CPU µs/event": run["cpu_us_per_event"], "steal %": run["cpu_steal_percent"]})
    print_table(f"saturation: backlog of {saturation['traffic']['events']:,} events, first to last event done", rows)
    print_table("freshness: produced → visible in the online store (ms)", [
        {"run": name, "offered/s": phase["offered_rate"], "sent/s": phase["achieved_rate"],
         "visible/s": phase["visible_rate"], "events": phase["traffic"]["events"],
         **{q: phase[f"freshness_ms_{q}"] for q in ("p50", "p95", "p99", "max")}, "lost": phase["lost"],
         "poll every ms": phase["poll_interval_ms"], "send lag p99": phase["send_lag_ms_p99"],
         "steal %": phase["cpu_steal_percent"]}
        for name, phase in (("at rate", result["at_rate"]), ("near saturation", result["at_saturation"])) if phase])
    console.print(f"load average (1 min): {result['load_average_1m_at_start']} at start, "
                  f"{result['load_average_1m']} at the end; CPU stolen by the hypervisor: "
                  f"{result['cpu_steal_percent']}% (other jobs and steal inflate every figure)")
    print_targets(result)


@bench_app.command("stream")
def stream(
    as_json: JsonFlag = False,
    events: Annotated[int, typer.Option(min=100, help="Backlog events for the saturation throughput.")] = 30_000,
    rate: Annotated[float, typer.Option(min=1, help="Events/s of the fixed-rate freshness run.")] = 1000.0,
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds of each freshness run.")] = 15.0,
    saturation_fraction: Annotated[float, typer.Option(
        min=0, max=1.5, help="Rate of the second freshness run, as a share of the measured events/s; 0 skips it.",
    )] = 0.9,
    poll_ms: Annotated[float, typer.Option(min=0.5, help="Pause between two polls of the online store.")] = 5.0,
    reference: Annotated[bool, typer.Option(help="Run the plain-consumer reference on the same backlog.")] = True,
    seed: Seed = 0,
) -> None:
    """Events/s through Kafka → Faust → online store, and freshness (produced → visible), against a reference."""
    run_command(lambda: run_stream_bench(get_settings(), events=events, rate=rate, duration=duration,
                                         saturation_fraction=saturation_fraction, poll_ms=poll_ms,
                                         reference=reference, seed=seed), render, as_json)
