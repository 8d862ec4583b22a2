"""`streamrec demo`: the whole system end to end on the local stack, measured.

up → train → feast apply/materialize → worker → API → replay clicks through Kafka while asking
/recommend for the sessions that are clicking → drain → report. Freshness is measured from the
outside, as a user would see it: the time from handing an event to the producer until the
session's click count in the online store includes it. Everything the demo started is stopped.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from feature_repo import schema as s
from streamrec.events import ClickEvent
from streamrec.infra import process, stack
from streamrec.online_store import OnlineStore, ReadRequest
from streamrec.settings import Settings

console = Console(stderr=True)
POLL_INTERVAL_S = 0.005


@dataclass(frozen=True)
class DemoOptions:
    dataset: Path | None = None
    events: int = 5000
    rate: float = 1000.0
    bad_fraction: float = 0.002
    recommend_rate: float = 50.0
    keep_running: bool = False
    drain_timeout_s: float = 60.0
    warmup_events: int = 2000


def _step(message: str) -> None:
    console.print(f"[bold cyan]▶[/bold cyan] {message}")


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


class FreshnessTracker:
    """Watches the online store for each sent event's effect (session click count reaching n)."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store
        self.inbox: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self.sent_per_session: Counter[str] = Counter()
        self.pending: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.freshness_ms: list[float] = []
        self.sent_times: list[float] = []  # aligned with freshness_ms: when each event was sent
        self.live_sessions: list[str] = []  # sessions seen applied, most recent last

    def on_sent(self, event: ClickEvent | None, sent_at: float) -> None:  # producer thread
        if event is not None:
            self.inbox.put((event.session_id, sent_at))

    def _drain_inbox(self) -> None:
        while True:
            try:
                session_id, sent_at = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.sent_per_session[session_id] += 1
            self.pending[session_id].append((self.sent_per_session[session_id], sent_at))

    async def poll_once(self) -> None:
        self._drain_inbox()
        sessions = list(self.pending)
        if not sessions:
            return
        rows = (await self.store.read_many([ReadRequest(s.SESSION_FEATURES_VIEW, sessions, (s.CLICK_COUNT,))]))[0]
        seen_at = time.time()
        for session_id, row in zip(sessions, rows):
            count = (row or {}).get(s.CLICK_COUNT) or 0
            waiting = self.pending[session_id]
            while waiting and waiting[0][0] <= count:
                self.freshness_ms.append((seen_at - waiting[0][1]) * 1000)
                self.sent_times.append(waiting[0][1])
                waiting.pop(0)
                self.live_sessions.append(session_id)
            if not waiting:
                del self.pending[session_id]

    async def applied_total(self) -> int:
        sessions = list(self.sent_per_session)
        total = 0
        for start in range(0, len(sessions), 1000):
            chunk = sessions[start:start + 1000]
            rows = (await self.store.read_many([ReadRequest(s.SESSION_FEATURES_VIEW, chunk, (s.CLICK_COUNT,))]))[0]
            total += sum((row or {}).get(s.CLICK_COUNT) or 0 for row in rows)
        return total


def dead_letter_count(settings: Settings) -> int:
    """Messages in the dead-letter topic (sum of end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
    try:
        partitions = consumer.partitions_for_topic(settings.dead_letter_topic) or set()
        ends = consumer.end_offsets([TopicPartition(settings.dead_letter_topic, p) for p in partitions])
        return int(sum(ends.values()))
    finally:
        consumer.close()


def start_worker_and_api(settings: Settings) -> None:
    env = settings.to_env()
    exe = [sys.executable, "-m", "streamrec.cli"]
    process.start_detached("worker", [*exe, "stream"], settings, env=env)
    process.start_detached("api", [*exe, "serve"], settings, env=env)
    api = f"http://{settings.api_host}:{settings.api_port}"

    def api_up() -> bool:
        if process.is_running("api", settings) is None:
            raise RuntimeError("the API exited:\n" + process.log_tail("api", settings))
        try:
            return httpx.get(f"{api}/health", timeout=1.0).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    process.wait_until(api_up, 90, "the API to answer /health")


async def wait_for_worker(settings: Settings, store: OnlineStore, timeout_s: float = 120) -> None:
    """Send a probe click and wait until the worker has written it: proves the path is live."""
    from kafka import KafkaProducer

    probe = ClickEvent(session_id=f"probe-{uuid.uuid4().hex[:8]}", item_id=0, ts=time.time())
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    producer.send(settings.clicks_topic, key=probe.session_id.encode(), value=probe.to_bytes())
    producer.flush(10)
    producer.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.is_running("worker", settings) is None:
            raise RuntimeError("the worker exited:\n" + process.log_tail("worker", settings))
        if (await store.read(s.SESSION_FEATURES_VIEW, [probe.session_id]))[0]:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the worker did not apply a probe event within {timeout_s:.0f}s; "
                       f"see {process.log_path('worker', settings)}")


async def _query_live_sessions(settings: Settings, tracker: FreshnessTracker, stop: asyncio.Event,
                               rate: float, results: dict) -> None:
    """Ask /recommend for sessions whose clicks just landed, at about `rate` requests per second."""
    api = f"http://{settings.api_host}:{settings.api_port}"
    async with httpx.AsyncClient(base_url=api, timeout=5.0) as client:
        while not stop.is_set():
            await asyncio.sleep(1 / rate)
            if not tracker.live_sessions:
                continue
            session_id = tracker.live_sessions[-1 - int(np.random.randint(0, min(50, len(tracker.live_sessions))))]
            started = time.perf_counter()
            try:
                response = await client.post("/recommend", json={"session_id": session_id, "k": 10})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            results["latency_ms"].append((time.perf_counter() - started) * 1000)
            if ok:
                results["stages"][response.json()["stage"]] += 1
            else:
                results["errors"] += 1


async def _replay_phase(settings: Settings, options: DemoOptions, store: OnlineStore, events: int,
                        prefix: str, bad_fraction: float, query: bool) -> dict:
    """Replay `events` clicks, track freshness (and query /recommend), then drain and count."""
    from streaming.producer import ReplayOptions, replay

    tracker = FreshnessTracker(store)
    dlq_before = dead_letter_count(settings)
    replay_options = ReplayOptions(dataset=options.dataset, events=events, rate=options.rate,
                                   session_prefix=prefix, bad_fraction=bad_fraction, progress=query)
    outcome: dict = {}
    producer_thread = threading.Thread(
        target=lambda: outcome.setdefault("result", replay(settings, replay_options, tracker.on_sent)), daemon=True)
    queries = {"latency_ms": [], "stages": Counter(), "errors": 0}
    stop_queries = asyncio.Event()
    query_task = asyncio.create_task(
        _query_live_sessions(settings, tracker, stop_queries, options.recommend_rate, queries)) if query else None
    producer_thread.start()
    while producer_thread.is_alive():
        await tracker.poll_once()
        await asyncio.sleep(POLL_INTERVAL_S)
    stop_queries.set()
    if query_task:
        await query_task
    if "result" not in outcome:
        raise RuntimeError("the replay failed; see the error above")
    result = outcome["result"]

    deadline = time.monotonic() + options.drain_timeout_s
    applied = dead = 0
    while time.monotonic() < deadline:
        await tracker.poll_once()
        applied = await tracker.applied_total()
        dead = dead_letter_count(settings) - dlq_before
        if applied >= result.sent and dead >= result.malformed:
            break
        await asyncio.sleep(0.05)
    await tracker.poll_once()  # observe what the last count included
    produced = result.sent + result.malformed
    if query:
        _save_freshness(settings, tracker)
    return {
        "events_produced": produced,
        "events_applied": applied,
        "dead_lettered": dead,
        "malformed_sent": result.malformed,
        "sessions": len(tracker.sent_per_session),
        "replay_seconds": round(result.seconds, 2),
        "replay_events_per_s": round(produced / result.seconds, 1) if result.seconds else None,
        "freshness_ms_p50": _percentile(tracker.freshness_ms, 50),
        "freshness_ms_p99": _percentile(tracker.freshness_ms, 99),
        "freshness_samples": len(tracker.freshness_ms),
        "recommend_requests": len(queries["latency_ms"]),
        "recommend_ms_p50": _percentile(queries["latency_ms"], 50),
        "recommend_ms_p99": _percentile(queries["latency_ms"], 99),
        "recommend_errors": queries["errors"],
        "recommend_stages": dict(queries["stages"]),
    }


async def _replay_and_measure(settings: Settings, options: DemoOptions, store: OnlineStore) -> dict:
    """A short warm-up (a freshly started broker and worker run cold for a few seconds), then the
    measured replay. The warm-up is reported separately, never mixed into the figures."""
    run = uuid.uuid4().hex[:6]
    warmup_events = min(options.warmup_events, options.events)
    warmup = {}
    if warmup_events:
        _step(f"warm-up: {warmup_events} events (reported separately)")
        warmup = await _replay_phase(settings, options, store, warmup_events, f"warmup-{run}-", 0.0, query=False)
    _step(f"replaying {options.events} events at {options.rate:.0f}/s through Kafka; "
          f"querying /recommend for live sessions")
    report = await _replay_phase(settings, options, store, options.events, f"demo-{run}-", options.bad_fraction,
                                 query=True)
    report["warmup_events"] = warmup.get("events_produced", 0)
    report["warmup_lost"] = warmup.get("events_produced", 0) - warmup.get("events_applied", 0)
    report["warmup_freshness_ms_p99"] = warmup.get("freshness_ms_p99")
    return report


def _save_freshness(settings: Settings, tracker: FreshnessTracker) -> None:
    """Freshness of every event by send time (JSON + PNG in the run dir): shows transients."""
    import json

    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / "demo_freshness.json"
    start = min(tracker.sent_times, default=0.0)
    path.write_text(json.dumps({"sent_s": [round(t - start, 4) for t in tracker.sent_times],
                                "freshness_ms": [round(f, 2) for f in tracker.freshness_ms]}))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3))
        ax.scatter([t - start for t in tracker.sent_times], tracker.freshness_ms, s=2)
        ax.set_xlabel("seconds into the replay")
        ax.set_ylabel("freshness (ms)")
        ax.set_title("event produced → visible in the online store")
        fig.tight_layout()
        fig.savefig(path.with_suffix(".png"), dpi=100)
        plt.close(fig)
    except ImportError:  # plotting is optional
        pass


def _render(report: dict) -> Table:
    table = Table(title="streamrec demo", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in report.items():
        table.add_row(key, str(value))
    return table


def run_demo(settings: Settings, options: DemoOptions) -> dict:
    from training.feast_ops import apply_and_materialize
    from training.pipeline import train

    started = time.time()
    before = {name for name in process.pid_names(settings) if process.is_running(name, settings)}
    try:
        _step("starting the local stack (Kafka, Redis)")
        console.print(stack.render(stack.up(settings)))
        stack.ensure_topics(settings)
        _step(f"training on {options.dataset or 'synthetic sessions'}")
        artifacts = train(settings, options.dataset)
        _step("feast apply + materialize (batch features → Redis online store)")
        apply_and_materialize(settings)
        _step("starting the streaming worker and the API")
        start_worker_and_api(settings)

        async def measure() -> dict:
            store = OnlineStore.from_url(settings.redis_url, timeout_s=5.0)
            try:
                await wait_for_worker(settings, store)
                return await _replay_and_measure(settings, options, store)
            finally:
                await store.close()

        report = asyncio.run(measure())
        report = {"model_version": artifacts.version, **report,
                  "lost": report["events_produced"] - report["dead_lettered"] - report["events_applied"],
                  "total_seconds": round(time.time() - started, 1)}
        console.print(_render(report))
        return report
    finally:
        if not options.keep_running:
            _step("stopping what the demo started")
            for name in ("api", "worker"):
                if name not in before:
                    process.stop(name, settings)
            if not before:
                stack.down(settings)
