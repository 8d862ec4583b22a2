"""`streamrec demo`: the whole system end to end on the local stack, measured.

up → train → feast apply/materialize → worker → API → replay clicks through Kafka while asking
/recommend for the sessions that are clicking → drain → report. Freshness is measured from the
outside, as a user would see it: the time from handing an event to the producer until the
session's click count in the online store includes it. Everything the demo started is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import multiprocessing as mp
import queue
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.common import Message, ScheduledProducer, answers, click_counts, observe, start_service
from infra import process, stack
from streamrec import feature_schema as s
from streamrec.events import ClickEvent
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings

console = Console(stderr=True)
POLL_INTERVAL_S = 0.01  # freshness resolution; each poll is one Redis round trip
READY_TIMEOUT_S = 60.0  # for the /recommend load process to start


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


def worker_freshness(settings: Settings):  # -> serving.ops.Buckets | None
    """The worker's cumulative `streamrec_worker_freshness_seconds` buckets, None if unreachable."""
    from serving.ops import worker_snapshot

    try:
        text = httpx.get(settings.worker_metrics_endpoint, timeout=2.0).text
    except httpx.HTTPError:
        return None
    return worker_snapshot(text).freshness


def _bucket_ms(buckets, q: float) -> float | None:  # noqa: ANN001 - serving.ops.Buckets | None
    value = buckets.quantile(q) if buckets is not None and buckets.count else None
    return round(value * 1000, 1) if value is not None else None


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
    exe = [sys.executable, "-m", "cli"]
    process.start_detached("worker", [*exe, "stream"], settings, env=env)
    start_service("api", [*exe, "serve"], settings, timeout_s=90, env=env,
                  ready=lambda: answers(f"http://{settings.api_host}:{settings.api_port}/health", (200, 503)))


async def wait_for_worker(settings: Settings, store: OnlineStore, item_id: int, timeout_s: float = 120) -> str:
    """Send a probe click and wait until the worker has written it: proves the path is live.
    Returns the probe's session id; `item_id` is the item it clicks (one in the catalogue, so the
    answer for it is a ranked one, not the empty-session fallback)."""
    from kafka import KafkaProducer

    probe = ClickEvent(session_id=f"probe-{uuid.uuid4().hex[:8]}", item_id=item_id, ts=time.time())
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    producer.send(settings.clicks_topic, key=probe.session_id.encode(), value=probe.to_bytes())
    producer.flush(10)
    producer.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.is_running("worker", settings) is None:
            raise RuntimeError("the worker exited:\n" + process.log_tail("worker", settings))
        if (await store.read(s.SESSION_FEATURES_VIEW, [probe.session_id]))[0]:
            return probe.session_id
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the worker did not apply a probe event within {timeout_s:.0f}s; "
                       f"see {process.log_path('worker', settings)}")


def _recommend_load(api: str, rate: float, sessions: "mp.Queue[list[str]]", stop: "EventType",
                    results: "mp.Queue[dict]", ready: "EventType") -> None:
    """Child process: POST /recommend for sessions whose clicks just landed, ~`rate` per second.

    Its own process, so the client's latency is not the demo's GIL: a request timed in the parent
    would wait for the freshness poller."""
    import random
    from collections import deque

    recent: deque[str] = deque(maxlen=50)
    latency_ms: list[float] = []
    server_ms: list[float] = []
    stages: Counter[str] = Counter()
    errors = 0
    interval = 1 / rate
    host, port = api.removeprefix("http://").rsplit(":", 1)
    # http.client on one keep-alive connection: the thinnest client, so the figure is the server's
    client = http.client.HTTPConnection(host, int(port), timeout=5.0)
    ready.set()
    next_at = time.perf_counter()
    while not stop.is_set():
        while True:
            try:
                recent.extend(sessions.get_nowait())
            except queue.Empty:
                break
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
        if not recent:
            continue
        body = json.dumps({"session_id": random.choice(recent), "k": 10})
        started = time.perf_counter()
        try:
            client.request("POST", "/recommend", body, {"Content-Type": "application/json"})
            response = client.getresponse()
            payload = response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            client.close()  # reconnects on the next request
            ok = False
        latency_ms.append((time.perf_counter() - started) * 1000)
        if ok:
            answer = json.loads(payload)
            stages[answer["stage"]] += 1
            server_ms.append(float(answer["timings_ms"].get("total", 0.0)))
        else:
            errors += 1
    client.close()
    results.put({"latency_ms": latency_ms, "server_ms": server_ms, "stages": dict(stages), "errors": errors})


class RecommendLoad:
    """The /recommend load of the measured replay, run in a child process (see `_recommend_load`)."""

    def __init__(self, settings: Settings, rate: float) -> None:
        ctx = mp.get_context("spawn")
        self.sessions: mp.Queue[list[str]] = ctx.Queue()
        self.results: mp.Queue[dict] = ctx.Queue()
        self.stop = ctx.Event()
        self.ready = ctx.Event()
        api = f"http://{settings.api_host}:{settings.api_port}"
        self.process = ctx.Process(target=_recommend_load, daemon=True,
                                   args=(api, rate, self.sessions, self.stop, self.results, self.ready))
        self.sent = 0

    def __enter__(self) -> "RecommendLoad":
        """Start the process and wait until it is set up: a spawned interpreter's imports take about a
        core-second on a loaded 2-core machine, which, overlapping the replay's first second, starved
        the worker and showed up as a freshness transient of the demo rather than of the stream."""
        self.process.start()
        if not self.ready.wait(READY_TIMEOUT_S):
            self.__exit__()
            raise RuntimeError(f"the /recommend load process was not ready within {READY_TIMEOUT_S:g} s")
        return self

    def offer(self, live_sessions: list[str]) -> None:
        """Pass on the sessions seen applied since the last call."""
        if len(live_sessions) > self.sent:
            self.sessions.put(live_sessions[max(self.sent, len(live_sessions) - 50):])
            self.sent = len(live_sessions)

    def finish(self, timeout_s: float = 30.0) -> dict:
        self.stop.set()
        try:
            return self.results.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError("the /recommend load process sent no results") from None
        finally:
            self.process.join(timeout_s)

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.stop.set()
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()


def _messages(options: DemoOptions, events: int, prefix: str, bad_fraction: float) -> list[Message]:
    """The dataset's clicks in order, each followed by a malformed event with probability `bad_fraction`."""
    from streaming.producer import MALFORMED_SAMPLES, ReplayOptions, replay_events

    rng = random.Random(7)
    messages: list[Message] = []
    for event in replay_events(ReplayOptions(dataset=options.dataset, events=events, session_prefix=prefix)):
        messages.append((event.session_id, event.item_id))
        if bad_fraction and rng.random() < bad_fraction:
            messages.append((event.session_id, rng.choice(MALFORMED_SAMPLES)))
    if not messages:
        raise ValueError("the dataset has no events to replay")
    return messages


async def _replay_phase(settings: Settings, options: DemoOptions, store: OnlineStore, events: int,
                        prefix: str, bad_fraction: float, query: bool) -> dict:
    """Replay `events` clicks on schedule, watch each become visible (and query /recommend), then count."""
    messages = _messages(options, events, prefix, bad_fraction)
    sessions = [key if isinstance(payload, int) else None for key, payload in messages]
    clicks = len(sessions) - sessions.count(None)
    dlq_before = dead_letter_count(settings)
    worker_before = worker_freshness(settings)
    queries = {"latency_ms": [], "server_ms": [], "stages": {}, "errors": 0}
    with contextlib.ExitStack() as stack_of:
        load = stack_of.enter_context(RecommendLoad(settings, options.recommend_rate)) if query else None
        bar = stack_of.enter_context(Progress(TextColumn("clicks applied"), BarColumn(), MofNCompleteColumn(),
                                              TimeElapsedColumn(), console=console, transient=True))
        task = bar.add_task("replay", total=clicks)
        producer = stack_of.enter_context(ScheduledProducer(settings, messages, options.rate, linger_ms=2))
        t0 = producer.start()

        def on_poll(seen) -> None:  # noqa: ANN001 - bench.common.Visibility
            bar.update(task, completed=len(seen.live_sessions))  # one entry per click seen applied
            if load:
                load.offer(seen.live_sessions)

        visibility = await observe(store, sessions, t0, options.rate, POLL_INTERVAL_S, on_poll=on_poll)
        report = producer.report()
        if load:
            queries = load.finish()
    sent, seen = np.asarray(report["sent"]), np.asarray(visibility.seen)
    visible = ~np.isnan(seen)
    freshness_ms = ((seen[visible] - sent[visible]) * 1000).tolist()
    # every click seen means every click applied; the dead letters may still be on their way
    deadline = time.monotonic() + options.drain_timeout_s
    unique_sessions = list(dict.fromkeys(session for session in sessions if session))
    while True:
        applied = sum(await click_counts(store, unique_sessions))
        dead = dead_letter_count(settings) - dlq_before
        if (applied >= clicks and dead >= len(messages) - clicks) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    worker_fresh = worker_freshness(settings)
    worker_fresh = worker_fresh.since(worker_before) if worker_fresh is not None else None
    if query:
        _save_freshness(settings, sent[visible] - t0, freshness_ms)
    return {
        "events_produced": len(messages),
        "events_applied": applied,
        "dead_lettered": dead,
        "malformed_sent": len(messages) - clicks,
        "sessions": len(unique_sessions),
        "replay_seconds": round(report["seconds"], 2),
        "replay_events_per_s": round(len(messages) / report["seconds"], 1) if report["seconds"] else None,
        "freshness_ms_p50": _percentile(freshness_ms, 50),
        "freshness_ms_p99": _percentile(freshness_ms, 99),
        "freshness_samples": len(freshness_ms),
        # the worker's own view (Kafka record timestamp → features written; histogram buckets)
        "worker_freshness_ms_p50": _bucket_ms(worker_fresh, 0.5),
        "worker_freshness_ms_p99": _bucket_ms(worker_fresh, 0.99),
        "recommend_requests": len(queries["latency_ms"]),
        "recommend_ms_p50": _percentile(queries["latency_ms"], 50),
        "recommend_ms_p99": _percentile(queries["latency_ms"], 99),
        "recommend_server_ms_p50": _percentile(queries["server_ms"], 50),
        "recommend_server_ms_p99": _percentile(queries["server_ms"], 99),
        "recommend_errors": queries["errors"],
        "recommend_stages": queries["stages"],
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


def _save_freshness(settings: Settings, sent_s: np.ndarray, freshness_ms: list[float]) -> None:
    """Freshness of every event by send time (JSON + PNG in the run dir): shows transients."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / "demo_freshness.json"
    sent_s = sent_s - min(sent_s, default=0.0)
    path.write_text(json.dumps({"sent_s": [round(float(t), 4) for t in sent_s],
                                "freshness_ms": [round(f, 2) for f in freshness_ms]}))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3))
        ax.scatter(sent_s, freshness_ms, s=2)
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


# The demo trains a small model quickly: fewer synthetic sessions and ranker cases than `streamrec
# train` (a real dataset keeps its size; only the ranker's case budget shrinks).
DEMO_SYNTHETIC = {"n_sessions": 10_000}
DEMO_RANKER = {"ranker_train_cases": 6_000, "ranker_valid_cases": 3_000}


class StepClock:
    """Wall-clock seconds of each step since the demo started, for the report's `step_seconds`."""

    def __init__(self) -> None:
        self.started = time.time()
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str, message: str):  # noqa: ANN201 - a context manager
        if message:
            _step(message)
        t = time.time()
        yield
        self.steps[name] = round(time.time() - t, 1)

    def since_start(self) -> float:
        return round(time.time() - self.started, 1)


class StackInBackground:
    """Kafka and Redis start while the model trains (the JVM's start-up is mostly waiting); the
    trainer joins it before its first Feast or online-store access."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.status: stack.StackStatus | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, name="stack-up", daemon=True)
        self.reported = False

    def _run(self) -> None:
        t = time.time()
        try:
            self.status = stack.up(self.settings)
            stack.ensure_topics(self.settings)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread by wait()
            self.error = exc
        self.seconds = round(time.time() - t, 1)

    def start(self) -> "StackInBackground":
        self.thread.start()
        return self

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error
        if not self.reported:
            self.reported = True
            console.print(stack.render(self.status))


async def first_recommendation(settings: Settings, session_id: str) -> str:
    """The first live answer: /recommend for the probe session the worker just applied."""
    async with httpx.AsyncClient(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10) as client:
        response = await client.post("/recommend", json={"session_id": session_id, "k": 10})
    if response.status_code != 200:
        raise RuntimeError(f"/recommend answered {response.status_code}: {response.text}")
    return response.json()["stage"]


def run_demo(settings: Settings, options: DemoOptions) -> dict:
    from training.feast_ops import apply_and_materialize
    from training.pipeline import train

    clock = StepClock()
    before = {name for name in process.pid_names(settings) if process.is_running(name, settings)}
    try:
        _step("starting the local stack (Kafka, Redis) while the model trains")
        background = StackInBackground(settings).start()
        knobs = {**({} if options.dataset else DEMO_SYNTHETIC), **DEMO_RANKER}
        with clock.step("train", f"training on {options.dataset or 'synthetic sessions'} ({knobs})"):
            artifacts = train(settings, options.dataset, before_feast=background.wait, **knobs)
        background.wait()
        clock.steps["stack"] = background.seconds
        applied = artifacts.meta.get("feast_applied", False)
        with clock.step("feast", "feast materialize (batch features → Redis online store)" if applied
                        else "feast apply + materialize (batch features → Redis online store)"):
            apply_and_materialize(settings, apply=not applied)
        with clock.step("start", "starting the streaming worker and the API"):
            start_worker_and_api(settings)

        async def measure() -> dict:
            store = OnlineStore.from_url(settings.redis_url, timeout_s=5.0)
            try:
                with clock.step("first_recommendation", "a probe click through Kafka, then /recommend for it"):
                    probe = await wait_for_worker(settings, store, int(artifacts.popular[0]))
                    stage = await first_recommendation(settings, probe)
                first = clock.since_start()
                console.print(f"first live recommendation {first:.0f}s after the start (stage {stage})")
                with clock.step("replay", ""):  # its phases say what they do
                    report = await _replay_and_measure(settings, options, store)
                return {"first_recommendation_s": first, "first_recommendation_stage": stage, **report}
            finally:
                await store.close()

        report = asyncio.run(measure())
        report = {"model_version": artifacts.version, **report,
                  "lost": report["events_produced"] - report["dead_lettered"] - report["events_applied"],
                  "step_seconds": clock.steps, "total_seconds": clock.since_start()}
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
