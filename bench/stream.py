"""`streamrec bench stream`: events/s through Kafka → Faust worker → online store, and freshness.

One run, on the configured Kafka and Redis (`Settings` from the environment), with its own topics
(unique suffix), its own worker id and its own worker process (`streamrec stream`, started here and
stopped at the end, also on errors and Ctrl-C):

- **traffic** — sessions of 1–8 clicks (truncated geometric, mean 2.9 drawn, ≈ 2.5 in a run as
  sessions still open at its end are cut; real click streams are mostly short sessions), interleaved: a session's next click comes on average 5,000 events later
  (exponential gaps), so the stream mixes new and continuing sessions (`repeat_share_in_2000`: share
  of events whose session also clicked within the 2,000 events before, which a batch dedups). Items
  follow a Zipf law over 5,000 ids from 10^15 on (never in a catalogue, so the benchmark's clicks
  never show up in anyone's trending counts; its rows are deleted at the end).
- **saturation throughput** — `--events` clicks are produced *before* the worker starts (aiokafka,
  as fast as possible), so the worker meets a backlog and runs flat out, with no producer competing
  for the two cores. The worker's Prometheus counters (`streamrec_worker_events_total{outcome=
  "applied"}`: session rows written; `streamrec_worker_item_clicks_total{outcome="counted"}`: item
  rows written) are sampled every 100 ms; an event is done when both are past it (min of the two).
  `events_per_s` = events done between the first sample showing any progress (of either agent)
  and the first showing all done, divided by the time between those samples (start-up excluded;
  the end is seen up to 100 ms late, so a slight underestimate); the worker's CPU over the same
  window comes from psutil. Every backlog session's click count is checked in Redis afterwards.
  Also reported: each agent alone (`session_side_events_per_s`; `item_side_lag_s`, how long the
  item windows trail the sessions), `mean_batch_events` and the mean write time per batch. The CPU
  share the hypervisor steals from this VM (/proc/stat) is reported for every phase: steal freezes
  all processes at once and shows up as stalls that no code here causes.
- **freshness at a fixed rate** — an open-loop producer in its own process (aiokafka, linger 1 ms;
  aiokafka rather than kafka-python because it costs half the CPU per event, and on two cores the
  producer competes with the worker) sends event *i* at `t0 + i / rate`, whatever the pipeline does,
  and records when it handed each event to the client. This process polls Redis for every session
  with an unseen event (`OnlineStore.read_many`, 1,000 keys per request, `--poll-ms` between polls):
  the *k*-th click of a session is visible when its `click_count` reaches *k*; freshness = reply time
  of that poll − produce time (an upper bound; the resolution is the measured `poll_interval_ms`).
  Once at `--rate` (default 1,000 events/s) and once at `--saturation-fraction` (0.9) of the measured
  `events_per_s`; `visible_rate` says how many events/s the worker actually made visible (below the
  offered rate when it fell behind). An event never seen within 15 s of the last progress is `lost`.
- **reference, same run** — after the worker is stopped, a plain aiokafka consumer (manual partition
  assignment, no group) reads the same backlog in batches of `flush_max_events` and feeds it to the
  *same* `SessionBatchProcessor` / `ItemBatchProcessor` the worker runs, with dicts as tables and the
  item side called directly; its rows go to the same Redis under another Feast project name, so the
  Redis work is identical and nothing collides. `ratio_vs_reference` = worker / reference events/s,
  so the ratio isolates what Faust adds: streams and agents, the re-partition of clicks by item
  through Kafka (produce + consume + JSON), the two table changelogs, offset commits, the web/monitor
  machinery. Parsing, state updates, the feature encoding and the Redis round trips are in both.
  A second reference reads the backlog without processing it (Kafka fetch and aiokafka's record
  decoding alone: the floor of any consumer in Python).

`--profile FILE` attaches `py-spy record -f raw` to the worker during the backlog drain (use enough
`--events` for the drain to last `--profile-seconds`) and prints where its time goes; figures of a
profiled run are marked `profiled` (py-spy pauses the worker for each sample).

The JSON last line has `events_per_s`, `freshness_ms_p50_at_1000`/`p99_at_1000` (only when `--rate`
is 1000; `freshness_ms_*_at_rate` and `rate` always), `freshness_ms_p50/p99_at_saturation`,
`reference_events_per_s`, `ratio_vs_reference`, `poll_interval_ms`, `lost`, `load_average_1m`,
and the details of each phase.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from bench.cli import bench_app
from bench.report import console, emit_json, latency_summary, print_table, wide_console
from streamrec.settings import Settings, get_settings

BENCH_ITEM_BASE = 10**15  # bench item ids: far above any catalogue's
ITEM_POOL = 5_000
MAX_SESSION_CLICKS = 8
CONTINUE_PROBABILITY = 0.7  # P(a session has another click): lengths 1..8, mean ≈ 2.9
MEAN_GAP_EVENTS = 5_000  # events between two clicks of one session, on average (exponential)
METRICS_EVERY_S = 0.1
READ_CHUNK = 1_000
SETTLE_S = 15.0  # give up on an unseen event after this long without any progress
REFERENCE_PROJECT_SUFFIX = "_bench_reference"
TABLE_WIDTH = 150
APPLIED_METRIC = 'streamrec_worker_events_total{outcome="applied"}'
COUNTED_METRIC = 'streamrec_worker_item_clicks_total{outcome="counted"}'


@dataclass(frozen=True)
class Targets:
    """The issue's targets for the streaming path."""

    events_per_s: float = 5_000.0
    freshness_ms_p99_at_1000: float = 250.0


@dataclass(frozen=True)
class StreamBenchOptions:
    events: int = 30_000  # backlog for the saturation throughput and the reference
    rate: float = 1_000.0  # events/s of the fixed-rate freshness run
    duration_s: float = 15.0  # of each freshness run
    saturation_fraction: float = 0.9  # of the measured events/s, for the second freshness run; 0 skips it
    poll_ms: float = 5.0
    reference: bool = True
    profile: Path | None = None
    profile_seconds: float = 10.0
    seed: int = 0
    worker_timeout_s: float = 120.0  # start-up of the worker until it applies its first events


class BenchSetupError(RuntimeError):
    """The benchmark cannot run; the message says what to do."""


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
        counts: dict[str, int] = {}
        for session_id, nth in zip(self.sessions, self.nth):
            counts[session_id] = max(nth, counts.get(session_id, 0))
        return counts

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


# --- percentiles and rates ----------------------------------------------------------------------

def freshness_summary(freshness_ms: Sequence[float]) -> dict[str, float]:
    summary = latency_summary([float(ms) / 1000.0 for ms in freshness_ms])
    return {key.replace("_ms", ""): value for key, value in summary.items()}  # p50, p95, p99, max (ms)


def applied_rate(samples: Sequence[tuple[float, float, float]]) -> tuple[float, int | None, int | None]:
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
    """Share of CPU time the hypervisor took from this VM (`steal` in /proc/stat) since creation.

    On a shared VM, steal freezes every process at once: stalls that no code of ours causes.
    None where /proc/stat is not available.
    """

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return (fields[7] if len(fields) > 7 else 0), sum(fields)

    def percent(self) -> float | None:
        end = self._read()
        if self.start is None or end is None or end[1] <= self.start[1]:
            return None
        return round(100.0 * (end[0] - self.start[0]) / (end[1] - self.start[1]), 1)


def worker_batch_stats(text: str) -> dict[str, float]:
    """Mean events per session batch and mean online-store write time per batch, from the worker's /metrics."""
    def mean(name: str, labels: str = "") -> float:
        count = _metric(text, f"{name}_count{labels}")
        return _metric(text, f"{name}_sum{labels}") / count if count else float("nan")

    write = "streamrec_worker_online_write_seconds"
    return {"mean_batch_events": round(mean("streamrec_worker_batch_events"), 1),
            "mean_session_write_ms": round(1000 * mean(write, '{view="session_features"}'), 3),
            "mean_item_write_ms": round(1000 * mean(write, '{view="item_trending"}'), 3)}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- the open-loop producer (own process) -------------------------------------------------------

PRODUCER_CODE = "from bench.stream import producer_process_main; producer_process_main()"


def producer_process_main() -> None:
    """Entry of the producer process: arguments (pickle) on stdin, `ready`, then t0 as a line; report (pickle) out."""
    args = pickle.load(sys.stdin.buffer)
    asyncio.run(_produce_on_schedule(**args))


async def _produce_on_schedule(bootstrap: str, topic: str, sessions: list[str], items: list[int], rate: float,
                               linger_ms: int) -> None:
    """Send event i at t0 + i/rate (t0 from the parent, time.monotonic); report when each was sent."""
    from aiokafka import AIOKafkaProducer

    from streamrec.events import ClickEvent

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, acks="all",
                                request_timeout_ms=10_000)
    await producer.start()
    try:
        sys.stdout.buffer.write(b"ready\n")
        sys.stdout.buffer.flush()
        t0 = float(sys.stdin.buffer.readline())
        sent = [0.0] * len(sessions)
        pending = []
        i, n = 0, len(sessions)
        while i < n:
            now = time.monotonic()
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < n and t0 + i / rate <= now:  # everything due by now (the loop may have been late)
                value = ClickEvent(session_id=sessions[i], item_id=items[i], ts=time.time()).to_bytes()
                sent[i] = time.monotonic()
                pending.append(await producer.send(topic, key=sessions[i].encode(), value=value))
                i += 1
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [repr(r) for r in results if isinstance(r, BaseException)]
    finally:
        await producer.stop()
    pickle.dump({"sent": sent, "failures": len(failures), "first_failure": failures[0] if failures else None},
                sys.stdout.buffer)
    sys.stdout.buffer.flush()


class ProducerProcess:
    """The open-loop producer in its own interpreter (`python -c`, so no caller's `__main__` is re-run)."""

    def __init__(self, settings: Settings, traffic: Traffic, rate: float, linger_ms: int = 1) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PRODUCER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        pickle.dump({"bootstrap": settings.kafka_bootstrap, "topic": settings.clicks_topic,
                     "sessions": traffic.sessions, "items": traffic.items, "rate": rate, "linger_ms": linger_ms},
                    self.stdin)
        self.stdin.flush()
        self.bootstrap = settings.kafka_bootstrap

    def start(self, lead_s: float = 0.2) -> float:
        """Wait until the producer is connected, then tell it when event 0 is due (`lead_s` from now); return that."""
        if self._readline(60.0) != b"ready\n":
            raise BenchSetupError(f"the producer process did not connect to Kafka at {self.bootstrap} (exit code "
                                  f"{self.proc.poll()}; its errors are above)")
        t0 = time.monotonic() + lead_s
        self.stdin.write(f"{t0!r}\n".encode())
        self.stdin.flush()
        return t0

    def report(self, timeout_s: float = 60.0) -> dict[str, Any]:
        if not select.select([self.stdout], [], [], timeout_s)[0]:
            raise BenchSetupError(f"the producer process did not report within {timeout_s:.0f}s of the last event")
        try:
            return pickle.load(self.stdout)
        except EOFError:
            raise BenchSetupError(f"the producer process exited ({self.proc.poll()}) without a report") from None

    def _readline(self, timeout_s: float) -> bytes:
        if not select.select([self.stdout], [], [], timeout_s)[0]:
            return b""
        return self.stdout.readline()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the visibility observer --------------------------------------------------------------------

@dataclass
class Visibility:
    seen: list[float]  # time.monotonic() of the poll reply that showed each event; nan = never
    poll_gaps_s: list[float]
    poll_rtts_s: list[float]
    max_pending_sessions: int


async def observe(store, traffic: Traffic, t0: float, rate: float, poll_s: float,  # noqa: ANN001
                  settle_s: float = SETTLE_S) -> Visibility:
    """Poll the session rows of every due, unseen event until all are visible (or no progress for settle_s)."""
    from streamrec import feature_schema as s
    from streamrec.online_store import ReadRequest

    n = len(traffic)
    seen = [math.nan] * n
    pending: dict[str, deque[tuple[int, int]]] = {}
    due = 0
    unseen = n
    gaps: list[float] = []
    rtts: list[float] = []
    last_poll: float | None = None
    last_progress = time.monotonic()
    max_pending = 0
    while unseen:
        now = time.monotonic()
        while due < n and t0 + due / rate <= now:
            pending.setdefault(traffic.sessions[due], deque()).append((traffic.nth[due], due))
            due += 1
        if pending:
            if last_poll is not None:
                gaps.append(now - last_poll)
            last_poll = now
            max_pending = max(max_pending, len(pending))
            sessions = list(pending)
            for start in range(0, len(sessions), READ_CHUNK):
                chunk = sessions[start:start + READ_CHUNK]
                issued = time.monotonic()
                rows = (await store.read_many([ReadRequest(s.SESSION_FEATURES_VIEW, chunk, (s.CLICK_COUNT,))]))[0]
                replied = time.monotonic()
                rtts.append(replied - issued)
                for session_id, row in zip(chunk, rows):
                    count = (row or {}).get(s.CLICK_COUNT) or 0
                    waiting = pending[session_id]
                    while waiting and waiting[0][0] <= count:
                        seen[waiting.popleft()[1]] = replied
                        unseen -= 1
                        last_progress = replied
                    if not waiting:
                        del pending[session_id]
        else:
            last_poll = None  # idle between events: not a poll gap
        if due >= n and time.monotonic() - last_progress > settle_s:
            break
        if due < n and not pending:  # nothing to watch until the next event is due
            await asyncio.sleep(max(0.0, min(poll_s, t0 + due / rate - time.monotonic())))
        else:
            await asyncio.sleep(poll_s)
    return Visibility(seen, gaps, rtts, max_pending)


async def fixed_rate_run(settings: Settings, store, traffic: Traffic, rate: float,  # noqa: ANN001
                         poll_s: float) -> dict[str, Any]:
    """Open-loop producer process at `rate` + observer here → freshness of every event."""
    producer = ProducerProcess(settings, traffic, rate)
    try:
        t0 = producer.start()
        visibility = await observe(store, traffic, t0, rate, poll_s)
        report = producer.report()
    finally:
        producer.close()
    if report["failures"]:
        raise BenchSetupError(f"{report['failures']} of {len(traffic)} events were not acknowledged by Kafka: "
                              f"{report['first_failure']}")
    sent = np.asarray(report["sent"])
    seen = np.asarray(visibility.seen)
    visible = ~np.isnan(seen)
    freshness_ms = (seen[visible] - sent[visible]) * 1000.0
    lag_ms = (sent - (t0 + np.arange(len(sent)) / rate)) * 1000.0
    span = float(sent[-1] - sent[0]) if len(sent) > 1 else float("nan")
    # second half of the run vs first: a worker that cannot keep up shows a growing freshness
    half = len(sent) // 2
    first_half = freshness_ms[: int(visible[:half].sum())]
    second_half = freshness_ms[int(visible[:half].sum()):]
    return {
        "offered_rate": round(rate, 1),
        "achieved_rate": round((len(sent) - 1) / span, 1) if span and span > 0 else float("nan"),
        **{f"freshness_ms_{key}": value for key, value in freshness_summary(freshness_ms).items()},
        "freshness_ms_p50_first_half": round(float(np.median(first_half)), 3) if len(first_half) else float("nan"),
        "freshness_ms_p50_second_half": round(float(np.median(second_half)), 3) if len(second_half) else float("nan"),
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
    }


# --- producing the backlog ----------------------------------------------------------------------

async def produce_backlog(settings: Settings, traffic: Traffic) -> tuple[dict[int, int], float]:
    """Send every event as fast as possible; ({partition: end offset}, events/s of the producer)."""
    from aiokafka import AIOKafkaProducer

    from streamrec.events import ClickEvent

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, acks="all",
                                max_batch_size=256 * 1024, request_timeout_ms=30_000)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = []
        for i, (session_id, item_id) in enumerate(zip(traffic.sessions, traffic.items)):
            value = ClickEvent(session_id=session_id, item_id=item_id, ts=time.time()).to_bytes()
            futures.append(await producer.send(settings.clicks_topic, key=session_id.encode(), value=value))
            if i % 1000 == 999:
                await asyncio.sleep(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise BenchSetupError(f"{len(failures)} of {len(traffic)} backlog events were not acknowledged by Kafka "
                              f"at {settings.kafka_bootstrap}: {failures[0]!r}")
    ends: dict[int, int] = {}
    for metadata in results:
        ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)  # type: ignore[union-attr]
    return ends, len(traffic) / seconds


# --- the worker ---------------------------------------------------------------------------------

class Worker:
    """`streamrec stream` started for this run under its own pid-file name, stopped by `stop()`."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.pid: int | None = None

    def start(self) -> int:
        from infra import process

        self.pid = process.start_detached(self.name, [sys.executable, "-m", "cli", "stream"],
                                          self.settings, env=self.settings.to_env())
        return self.pid

    def alive(self) -> bool:
        from infra import process

        return process.is_running(self.name, self.settings) is not None

    def log_tail(self) -> str:
        from infra import process

        return process.log_tail(self.name, self.settings)

    def stop(self) -> None:
        from infra import process

        process.stop(self.name, self.settings, timeout_s=20.0)

    def remove_log(self) -> None:
        from infra import process

        process.log_path(self.name, self.settings).unlink(missing_ok=True)


def _cpu_seconds(pid: int) -> float:
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        return float("nan")


async def drain_backlog(worker: Worker, total: int, timeout_s: float,
                        profile: tuple[Path, float] | None) -> dict[str, Any]:
    """Sample the worker's counters until it has applied the whole backlog; the steady rate and its CPU."""
    import httpx

    url = f"http://127.0.0.1:{worker.settings.worker_web_port}/metrics"
    samples: list[tuple[float, float, float, float]] = []  # (t, applied, counted, cpu seconds)
    spy: subprocess.Popen | None = None
    started = time.monotonic()
    last_progress, last_done = started, -1.0
    last_text = ""
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            if not worker.alive():
                raise BenchSetupError(f"the worker exited:\n{worker.log_tail()}")
            try:
                text = (await client.get(url)).text
            except httpx.HTTPError:
                text = None
            now = time.monotonic()
            if text is not None:
                applied, counted = _metric(text, APPLIED_METRIC), _metric(text, COUNTED_METRIC)
                samples.append((now, applied, counted, _cpu_seconds(worker.pid or 0)))
                last_text = text
                if profile is not None and spy is None:
                    spy = _start_py_spy(worker.pid or 0, *profile)
                done = min(applied, counted)
                if done > last_done:
                    last_progress, last_done = now, done
                if done >= total:
                    break
            if last_done <= 0 and now - started > timeout_s:
                raise BenchSetupError(f"the worker applied nothing within {timeout_s:.0f}s:\n{worker.log_tail()}")
            if last_done > 0 and now - last_progress > SETTLE_S:
                break  # stalled: what is missing is reported as lost
            await asyncio.sleep(METRICS_EVERY_S)
    profiled = None
    if spy is not None:
        profiled = _finish_py_spy(spy, *profile)  # type: ignore[misc]
    progress = [(t, a + c, min(a, c)) for t, a, c, _ in samples]
    rate, first, last = applied_rate(progress)
    session_rate, _, _ = applied_rate([(t, a, a) for t, a, _, _ in samples])
    cpu_percent = cpu_us_per_event = float("nan")
    if first is not None and last is not None and last > first:
        (ta, _, da), (tb, _, db) = progress[first], progress[last]
        cpu_a, cpu_b = samples[first][3], samples[last][3]
        cpu_percent = 100.0 * (cpu_b - cpu_a) / (tb - ta)
        cpu_us_per_event = 1e6 * (cpu_b - cpu_a) / max(db - da, 1)
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
        "applied": int(samples[-1][1]) if samples else 0,
        "counted": int(samples[-1][2]) if samples else 0,
        "metric_samples": len(samples),
        **worker_batch_stats(last_text),
        "samples": [[round(t - started, 3), int(a), int(c)] for t, a, c, _ in samples],  # s, applied, counted
        "profile": profiled,
    }


def _start_py_spy(pid: int, path: Path, seconds: float) -> subprocess.Popen:
    if shutil.which("py-spy") is None:
        raise BenchSetupError("--profile needs py-spy: `pip install py-spy`")
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(int(math.ceil(seconds))), "-r", "100",
                             "-f", "raw", "-o", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish_py_spy(spy: subprocess.Popen, path: Path, seconds: float) -> dict[str, Any]:
    try:
        output, _ = spy.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        spy.kill()
        output, _ = spy.communicate()
    if spy.returncode != 0 or not path.exists():
        raise BenchSetupError(f"py-spy failed ({spy.returncode}): {output.decode(errors='replace')[-1500:]}")
    return {"file": str(path), **summarize_profile(path)}


PROJECT_PACKAGES = ("streaming", "streamrec", "feature_repo")
ENTRY_POINTS = ("run_worker", "stream", "main", "<module>")  # project frames every sample passes through
IDLE_LEAVES = ("EpollSelector.select", "KqueueSelector.select", "select.select")


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Where a py-spy `-f raw` profile (collapsed stacks, all threads) spends its samples.

    `idle`: the event loop waiting in select; `consumer_thread`: Faust's aiokafka consumer thread
    (`WorkerThread.run` on the stack); `own_by_package`: each sample charged to the package of its
    innermost frame; `own`: top functions by own samples; `project_cumulative`: streamrec's own
    functions (worker code) by samples anywhere on the stack, entry points left out.
    """
    own: dict[str, int] = {}
    packages: dict[str, int] = {}
    project: dict[str, int] = {}
    total = idle = consumer_thread = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame_name(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        count = int(count_text)
        total += count
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + count
        package = _package(leaf)
        packages[package] = packages.get(package, 0) + count
        idle += count if leaf.startswith(IDLE_LEAVES) else 0
        consumer_thread += count if any(f.startswith("WorkerThread.run ") for f in frames) else 0
        for frame in set(frames):
            if _package(frame) in PROJECT_PACKAGES and frame.split(" (")[0] not in ENTRY_POINTS:
                project[frame] = project.get(frame, 0) + count

    def share(count: int) -> float:
        return round(count / max(total, 1), 4)

    def ranked(counts: dict[str, int]) -> list[dict[str, Any]]:
        return [{"function": name, "share": share(count)}
                for name, count in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "idle": share(idle), "consumer_thread": share(consumer_thread),
            "own_by_package": [{"package": name, "share": share(count)}
                               for name, count in sorted(packages.items(), key=lambda kv: -kv[1])[:top]],
            "own": ranked(own), "project_cumulative": ranked(project)}


def _frame_name(frame: str) -> str:
    """`func (pkg/mod.py:123)` → `func (pkg/mod.py)`: lines merged, absolute paths cut to the package."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.replace("\\", "/").split("/")  # py-spy prints paths relative to sys.path when it can
    for root in ("site-packages", "dist-packages"):
        if root in parts:
            parts = parts[parts.index(root) + 1:]
    return f"{name} ({'/'.join(parts)})" if where else name


def _package(frame: str) -> str:
    where = frame.rpartition(" (")[2].rstrip(")")
    head = where.split("/")[0]
    return head[:-3] if head.endswith(".py") else head


# --- checks in Redis ----------------------------------------------------------------------------

async def missing_clicks(store, expected: dict[str, int]) -> int:  # noqa: ANN001
    """Clicks produced but not counted in the sessions' rows (0 when nothing was lost)."""
    from streamrec import feature_schema as s
    from streamrec.online_store import ReadRequest

    sessions = list(expected)
    missing = 0
    for start in range(0, len(sessions), READ_CHUNK):
        chunk = sessions[start:start + READ_CHUNK]
        rows = (await store.read_many([ReadRequest(s.SESSION_FEATURES_VIEW, chunk, (s.CLICK_COUNT,))]))[0]
        missing += sum(max(0, expected[sid] - ((row or {}).get(s.CLICK_COUNT) or 0)) for sid, row in zip(chunk, rows))
    return missing


# --- the reference ------------------------------------------------------------------------------

async def reference_run(settings: Settings, ends: dict[int, int], process: bool) -> dict[str, Any]:
    """A plain aiokafka consumer over the backlog, with (or without) the worker's own batch processors."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streaming.processor import ItemBatchProcessor, RawRecord, SessionBatchProcessor
    from streamrec.online_store import OnlineStore

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
        samples = [(time.monotonic(), 0.0)]
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
            samples.append((time.monotonic(), float(done)))
        cpu_seconds = time.process_time() - cpu_start
    finally:
        await consumer.stop()
        await store.close()
    rate, _, _ = applied_rate([(t, done, done) for t, done in samples])
    seconds = samples[-1][0] - samples[0][0]
    return {"events_per_s": round(rate, 1), "events": done, "dead_lettered": len(dead_letters),
            "seconds": round(seconds, 3), "cpu_percent": round(100 * cpu_seconds / seconds, 1) if seconds else None,
            "cpu_us_per_event": round(1e6 * cpu_seconds / max(done, 1), 1)}


async def rows_match_reference(store, session_ids: Sequence[str]) -> bool:  # noqa: ANN001
    """The reference wrote the same session rows as the worker (both built the same state from the backlog)."""
    from streamrec import feature_schema as s
    from streamrec.online_store import OnlineStore

    reference = OnlineStore(store.client, project=store.project + REFERENCE_PROJECT_SUFFIX)
    ours = await store.read(s.SESSION_FEATURES_VIEW, list(session_ids))
    theirs = await reference.read(s.SESSION_FEATURES_VIEW, list(session_ids))
    return all(a is not None for a in ours) and _plain(ours) == _plain(theirs)


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    return value


# --- setup and cleanup --------------------------------------------------------------------------

def bench_settings(settings: Settings, tag: str) -> Settings:
    """The configured stack with this run's own topics, worker id (consumer group) and web port."""
    from infra.kafka import free_port

    return settings.model_copy(update={
        "clicks_topic": f"bench-clicks-{tag}",
        "dead_letter_topic": f"bench-clicks-dlq-{tag}",
        "worker_id": f"streamrec-bench-{tag}",
        "worker_web_port": free_port(),
    })


def check_stack(settings: Settings) -> None:
    from infra import kafka, redis_server

    if not redis_server.answers(settings.redis_url):
        raise BenchSetupError(f"Redis does not answer at {settings.redis_url}: start the stack (`streamrec up`) "
                              "or point STREAMREC_REDIS_URL at a running Redis")
    if not kafka.broker_answers(settings.kafka_bootstrap):
        raise BenchSetupError(f"Kafka does not answer at {settings.kafka_bootstrap}: start the stack "
                              "(`streamrec up`) or point STREAMREC_KAFKA_BOOTSTRAP at a running broker")


def delete_topics(settings: Settings) -> None:
    """Remove this run's topics (Faust's own internal ones too) and the worker's consumer group (best effort)."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
        console.print(f"[yellow]note:[/] could not delete the benchmark's topics: {exc}")
        return
    try:
        ours = [name for name in admin.list_topics()
                if name in (settings.clicks_topic, settings.dead_letter_topic) or name.startswith(f"{settings.worker_id}-")]
        delete_groups = getattr(admin, "delete_groups", None) or getattr(admin, "delete_consumer_groups", None)
        for action in (lambda: admin.delete_topics(ours), lambda: delete_groups and delete_groups([settings.worker_id])):
            try:
                action()
            except Exception as exc:  # noqa: BLE001
                console.print(f"[yellow]note:[/] cleanup: {exc}")
    finally:
        admin.close()


async def delete_rows(store, session_ids: Sequence[str]) -> None:  # noqa: ANN001
    """Delete the benchmark's session and item rows, the worker's and the reference's."""
    from streamrec import feature_schema as s
    from streamrec import feast_codec as codec

    keys = []
    for project in (store.project, store.project + REFERENCE_PROJECT_SUFFIX):
        keys += [codec.entity_key(s.VIEWS[s.SESSION_FEATURES_VIEW], sid, project) for sid in session_ids]
        keys += [codec.entity_key(s.VIEWS[s.ITEM_TRENDING_VIEW], BENCH_ITEM_BASE + i, project)
                 for i in range(ITEM_POOL)]
    for start in range(0, len(keys), 5_000):
        await store.client.delete(*keys[start:start + 5_000])


# --- the benchmark ------------------------------------------------------------------------------

def run_stream_bench(settings: Settings, options: StreamBenchOptions) -> dict[str, Any]:
    from infra import stack

    load_at_start = os.getloadavg()[0]
    steal = StealMeter()
    check_stack(settings)
    tag = uuid.uuid4().hex[:8]
    bench = bench_settings(settings, tag)
    try:
        stack.ensure_topics(bench)
    except Exception as exc:  # noqa: BLE001 - the message says what failed
        raise BenchSetupError(f"could not create the benchmark's topics on {bench.kafka_bootstrap}: {exc}") from exc
    worker = Worker(bench, f"bench-stream-worker-{tag}")
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    ok = False
    try:
        result = asyncio.run(_run(bench, options, worker, tag))
        ok = True
    finally:
        worker.stop()
        if ok:
            worker.remove_log()
        else:
            console.print(f"[yellow]worker log:[/] {worker.settings.run_dir / (worker.name + '.log')}")
        delete_topics(bench)
        shutil.rmtree(bench.data_dir / "worker" / f"{bench.worker_id}-data", ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    result["load_average_1m_at_start"] = round(load_at_start, 2)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    result["cpu_steal_percent"] = steal.percent()
    return result


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


async def _run(bench: Settings, options: StreamBenchOptions, worker: Worker, tag: str) -> dict[str, Any]:
    from streamrec.online_store import OnlineStore

    rng = np.random.default_rng(options.seed)
    store = OnlineStore.from_url(bench.redis_url, timeout_s=5.0)
    session_ids: list[str] = []
    notes: list[str] = []
    try:
        # 1. backlog, then the worker drains it flat out
        backlog = session_traffic(options.events, f"bench-{tag}-b", rng)
        session_ids += list(backlog.expected_counts())
        console.print(f"producing a backlog of {len(backlog):,} events into {bench.clicks_topic} …")
        ends, produce_rate = await produce_backlog(bench, backlog)
        console.print(f"  {produce_rate:,.0f} events/s; starting the worker ({worker.name}) …")
        worker.start()
        profile = (options.profile, options.profile_seconds) if options.profile else None
        steal = StealMeter()
        saturation = await drain_backlog(worker, len(backlog), options.worker_timeout_s, profile)
        saturation["cpu_steal_percent"] = steal.percent()
        saturation["lost"] = await missing_clicks(store, backlog.expected_counts())
        saturation["producer_events_per_s"] = round(produce_rate, 1)
        saturation["traffic"] = backlog.describe()
        console.print(f"  worker: {saturation['events_per_s']:,.0f} events/s, "
                      f"CPU {saturation['worker_cpu_percent']}%")
        if options.profile and saturation["drain_s"] < options.profile_seconds:
            notes.append(f"the drain took {saturation['drain_s']:.1f}s, shorter than the {options.profile_seconds:g}s "
                         "profile: the profile also holds idle time; use more --events")

        # 2. freshness at the fixed rate, then near saturation
        poll_s = options.poll_ms / 1000
        console.print(f"freshness at {options.rate:g} events/s for {options.duration_s:g}s …")
        at_rate_traffic = session_traffic(int(options.rate * options.duration_s), f"bench-{tag}-r", rng)
        session_ids += list(at_rate_traffic.expected_counts())
        steal = StealMeter()
        at_rate = await fixed_rate_run(bench, store, at_rate_traffic, options.rate, poll_s)
        at_rate["cpu_steal_percent"] = steal.percent()
        at_saturation: dict[str, Any] | None = None
        saturation_rate = options.saturation_fraction * saturation["events_per_s"]
        if options.saturation_fraction > 0 and math.isfinite(saturation_rate) and saturation_rate > 0:
            console.print(f"freshness at {saturation_rate:,.0f} events/s ({options.saturation_fraction:.0%} of "
                          f"saturation) for {options.duration_s:g}s …")
            near = session_traffic(int(saturation_rate * options.duration_s), f"bench-{tag}-s", rng)
            session_ids += list(near.expected_counts())
            steal = StealMeter()
            at_saturation = await fixed_rate_run(bench, store, near, saturation_rate, poll_s)
            at_saturation["cpu_steal_percent"] = steal.percent()
        worker.stop()

        # 3. the reference on the same backlog, the worker stopped
        reference = fetch_only = None
        if options.reference:
            console.print("reference: plain aiokafka consumer + the same batch processors, then fetch only …")
            steal = StealMeter()
            reference = await reference_run(bench, ends, process=True)
            reference["cpu_steal_percent"] = steal.percent()
            fetch_only = await reference_run(bench, ends, process=False)
            sample = list(backlog.expected_counts())[:200]
            reference["rows_match_worker"] = await rows_match_reference(store, sample)
            if not reference["rows_match_worker"]:
                notes.append("the reference's session rows differ from the worker's for the same backlog")
        await delete_rows(store, session_ids)
    finally:
        await store.close()
    return assemble(options, saturation, at_rate, at_saturation, reference, fetch_only, notes)


def assemble(options: StreamBenchOptions, saturation: dict[str, Any], at_rate: dict[str, Any],
             at_saturation: dict[str, Any] | None, reference: dict[str, Any] | None,
             fetch_only: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    """The JSON result: the issue's keys at the top level, each phase's details below."""
    targets = Targets()
    result: dict[str, Any] = {"benchmark": "stream", "events_per_s": saturation["events_per_s"]}
    if options.rate == 1000:
        result["freshness_ms_p50_at_1000"] = at_rate["freshness_ms_p50"]
        result["freshness_ms_p99_at_1000"] = at_rate["freshness_ms_p99"]
    result.update({
        "rate": options.rate,
        "freshness_ms_p50_at_rate": at_rate["freshness_ms_p50"],
        "freshness_ms_p95_at_rate": at_rate["freshness_ms_p95"],
        "freshness_ms_p99_at_rate": at_rate["freshness_ms_p99"],
        "freshness_ms_max_at_rate": at_rate["freshness_ms_max"],
        "saturation_rate": at_saturation["offered_rate"] if at_saturation else None,
        "freshness_ms_p50_at_saturation": at_saturation["freshness_ms_p50"] if at_saturation else None,
        "freshness_ms_p99_at_saturation": at_saturation["freshness_ms_p99"] if at_saturation else None,
        "reference_events_per_s": reference["events_per_s"] if reference else None,
        "ratio_vs_reference": (round(saturation["events_per_s"] / reference["events_per_s"], 3)
                               if reference and reference["events_per_s"] else None),
        "reference_fetch_only_events_per_s": fetch_only["events_per_s"] if fetch_only else None,
        "poll_interval_ms": at_rate["poll_interval_ms"],
        "lost": saturation["lost"] + at_rate["lost"] + (at_saturation["lost"] if at_saturation else 0),
        "worker_cpu_percent": saturation["worker_cpu_percent"],
        "worker_cpu_us_per_event": saturation["worker_cpu_us_per_event"],
        "profiled": options.profile is not None,
        "saturation": saturation,
        "at_rate": at_rate,
        "at_saturation": at_saturation,
        "reference": reference,
        "reference_fetch_only": fetch_only,
    })
    p99_at_1000 = at_rate["freshness_ms_p99"] if options.rate == 1000 else None
    result["targets"] = {
        "events_per_s": {"target": targets.events_per_s, "measured": saturation["events_per_s"],
                         "met": bool(saturation["events_per_s"] >= targets.events_per_s)},
        "freshness_ms_p99_at_1000": {"target": targets.freshness_ms_p99_at_1000, "measured": p99_at_1000,
                                     "met": None if p99_at_1000 is None
                                     else bool(p99_at_1000 <= targets.freshness_ms_p99_at_1000)},
    }
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
    with wide_console(TABLE_WIDTH):
        _render(result)


def _render(result: dict[str, Any]) -> None:
    saturation, reference, fetch_only = result["saturation"], result["reference"], result["reference_fetch_only"]
    rows = [{"path": "worker (Faust)", "events/s": saturation["events_per_s"],
             "× reference": result["ratio_vs_reference"], "CPU %": saturation["worker_cpu_percent"],
             "CPU µs/event": saturation["worker_cpu_us_per_event"], "lost": saturation["lost"],
             "steal %": saturation["cpu_steal_percent"]}]
    if reference:
        rows.append({"path": "reference: aiokafka + processors", "events/s": reference["events_per_s"],
                     "× reference": 1.0, "CPU %": reference["cpu_percent"],
                     "CPU µs/event": reference["cpu_us_per_event"], "steal %": reference["cpu_steal_percent"]})
    if fetch_only:
        rows.append({"path": "reference: fetch only", "events/s": fetch_only["events_per_s"],
                     "CPU µs/event": fetch_only["cpu_us_per_event"],
                     "× reference": (round(fetch_only["events_per_s"] / reference["events_per_s"], 3)
                                     if reference and reference["events_per_s"] else None)})
    print_table(f"saturation: backlog of {saturation['traffic']['events']:,} events, first to last event done", rows)
    phases = [("at rate", result["at_rate"]), ("near saturation", result["at_saturation"])]
    print_table("freshness: produced → visible in the online store (ms)", [
        {"run": name, "offered/s": phase["offered_rate"], "sent/s": phase["achieved_rate"],
         "visible/s": phase["visible_rate"],
         "events": phase["traffic"]["events"], "p50": phase["freshness_ms_p50"], "p95": phase["freshness_ms_p95"],
         "p99": phase["freshness_ms_p99"], "max": phase["freshness_ms_max"], "lost": phase["lost"],
         "poll every ms": phase["poll_interval_ms"], "send lag p99": phase["send_lag_ms_p99"],
         "steal %": phase["cpu_steal_percent"]}
        for name, phase in phases if phase])
    profile = saturation.get("profile")
    if profile:
        console.print(f"[bold]worker profile[/] ({profile['samples']} samples, {profile['file']}): "
                      f"event loop idle {profile['idle']:.0%}, Faust's consumer thread {profile['consumer_thread']:.0%}")
        print_table("worker profile: own samples by package",
                    [{"package": row["package"], "share": row["share"]} for row in profile["own_by_package"]])
        print_table("worker profile: top functions by own samples", profile["own"])
        print_table("worker profile: streamrec functions by cumulative samples", profile["project_cumulative"])
    print_table("targets", [{"target": name, "goal": t["target"], "measured": t["measured"],
                             "met": "n/a" if t["met"] is None else ("yes" if t["met"] else "NO")}
                            for name, t in result["targets"].items()])
    console.print(f"load average (1 min): {result['load_average_1m_at_start']} at start, "
                  f"{result['load_average_1m']} at the end; CPU stolen by the hypervisor: "
                  f"{result['cpu_steal_percent']}% (other jobs and steal inflate every figure)")
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {note}")


@bench_app.command("stream")
def stream(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the figures.")] = False,
    events: Annotated[int, typer.Option(min=100, help="Backlog events for the saturation throughput.")] = 30_000,
    rate: Annotated[float, typer.Option(min=1, help="Events/s of the fixed-rate freshness run.")] = 1000.0,
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds of each freshness run.")] = 15.0,
    saturation_fraction: Annotated[float, typer.Option(
        min=0, max=1.5, help="Rate of the second freshness run, as a share of the measured events/s; 0 skips it.",
    )] = 0.9,
    poll_ms: Annotated[float, typer.Option(min=0.5, help="Pause between two polls of the online store.")] = 5.0,
    reference: Annotated[bool, typer.Option(help="Run the plain-consumer reference on the same backlog.")] = True,
    profile: Annotated[Optional[Path], typer.Option(
        help="py-spy the worker during the backlog drain; write the raw (collapsed) profile here.")] = None,
    profile_seconds: Annotated[float, typer.Option(min=1, help="Length of the py-spy recording.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the traffic.")] = 0,
) -> None:
    """Events/s through Kafka → Faust → online store, and freshness (produced → visible), against a reference."""
    options = StreamBenchOptions(events=events, rate=rate, duration_s=duration,
                                 saturation_fraction=saturation_fraction, poll_ms=poll_ms, reference=reference,
                                 profile=profile, profile_seconds=profile_seconds, seed=seed)
    try:
        result = run_stream_bench(get_settings(), options)
    except BenchSetupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    render(result)
    if as_json:
        emit_json(result)
