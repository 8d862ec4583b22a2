"""What every benchmark and the demo share: output, errors, started services, CPU, and freshness.

Freshness has one owner here: a producer process sends event *i* at `t0 + i / rate`, and
`observe` polls the online store for each session with a due, unseen click until its click
count shows it (the demo and `bench stream` both measure it this way).
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing as mp
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from streamrec.settings import Settings

console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="End with one JSON line of the figures.")]
Seed = Annotated[int, typer.Option(help="Seed of the random choices (traffic, bodies, queries).")]
READ_CHUNK = 1_000  # session keys per online-store request
SETTLE_S = 15.0  # give up on an unseen event after this long without any progress
TABLE_WIDTH = 150  # tables may be this wide: pipes and logs default to 80 columns, too narrow to read


class BenchSetupError(RuntimeError):
    """The benchmark cannot run; the message says what to do."""


# --- output -------------------------------------------------------------------------------------

def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (rounded to µs) of per-operation durations in seconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    figures = np.percentile(values, [50, 95, 99, 100]) if len(values) else [math.nan] * 4
    return {f"{q}_ms": round(float(v), 3) for q, v in zip(("p50", "p95", "p99", "max"), figures)}


def print_table(title: str, rows: Sequence[dict[str, object]]) -> None:
    """Rows of dicts as a rich table on stderr (stdout is kept for the JSON line)."""
    if not rows:
        return
    table = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    saved, console.width = console.width, max(console.width, TABLE_WIDTH)
    console.print(table)
    console.width = saved


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return "" if value is None else str(value)


def targets(rows: dict[str, tuple[float, float | None, Callable[[float, float], bool]]]) -> dict[str, Any]:
    """{name: (target, measured, check)} → the JSON's `targets` (None where not measured)."""
    return {name: {"target": target, "measured": value, "met": None if value is None else bool(check(value, target))}
            for name, (target, value, check) in rows.items()}


def print_targets(result: dict[str, Any]) -> None:
    print_table("targets", [{"target": name, "goal": t["target"], "measured": t["measured"],
                             "met": "n/a" if t["met"] is None else ("yes" if t["met"] else "NO")}
                            for name, t in result["targets"].items()])
    for note in result.get("notes", ()):
        console.print(f"[yellow]note:[/] {note}")


def run_command(measure: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], None],
                as_json: bool) -> None:
    """A benchmark run the CLI way: SIGTERM raises KeyboardInterrupt, so the `finally` blocks stop what the
    run started; a setup problem is one line and exit 1; `--json` prints the result as the last line."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        result = measure()
    except BenchSetupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    render(result)
    if as_json:
        sys.stdout.write(json.dumps(result, default=float) + "\n")
        sys.stdout.flush()


def plain(value: object) -> object:
    """Lists, dicts and Python scalars only, so values from Redis, Feast and JSON compare equal."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


# --- processes ----------------------------------------------------------------------------------

def require_stack(settings: Settings, kafka: bool = False) -> None:
    """Redis (and Kafka) must answer; otherwise say how to start them."""
    from infra import kafka as broker
    from infra import redis_server

    if not redis_server.answers(settings.redis_url):
        raise BenchSetupError(f"Redis does not answer at {settings.redis_url}: start the stack (`streamrec up`) "
                              "or point STREAMREC_REDIS_URL at a running Redis")
    if kafka and not broker.broker_answers(settings.kafka_bootstrap):
        raise BenchSetupError(f"Kafka does not answer at {settings.kafka_bootstrap}: start the stack "
                              "(`streamrec up`) or point STREAMREC_KAFKA_BOOTSTRAP at a running broker")


def start_service(name: str, argv: Sequence[str], settings: Settings, ready: Callable[[], bool],
                  timeout_s: float = 180.0, env: dict[str, str] | None = None) -> int:
    """Start `argv` detached under pid name `name` and wait until `ready()`; its pid."""
    from infra import process

    pid = process.start_detached(name, argv, settings, env=env)

    def up() -> bool:
        if process.is_running(name, settings) is None:
            raise BenchSetupError(f"{name} exited during start-up:\n{process.log_tail(name, settings)}")
        return ready()

    try:
        process.wait_until(up, timeout_s, f"{name} to answer", 0.25)
    except TimeoutError as exc:
        raise BenchSetupError(f"{exc}\n{process.log_tail(name, settings)}") from exc
    return pid


@contextmanager
def service(name: str, argv: Sequence[str], settings: Settings, ready: Callable[[], bool],
            timeout_s: float = 180.0, env: dict[str, str] | None = None) -> Iterator[int]:
    """`start_service`, stopped (its whole process group) on exit, also on errors."""
    from infra import process

    try:
        yield start_service(name, argv, settings, ready, timeout_s, env)
    finally:
        process.stop(name, settings, timeout_s=15.0)


def answers(url: str, statuses: tuple[int, ...] = (200,)) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code in statuses
    except httpx.HTTPError:
        return False


def cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) of a process and its children so far; None if unknown."""
    import psutil

    try:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)] if pid else []
    except psutil.NoSuchProcess:
        return None
    total = 0.0
    for proc in processes:
        with suppress(psutil.NoSuchProcess):
            total += sum(proc.cpu_times()[:2])
    return total if processes else None


# --- producing on a schedule, in a process of its own -------------------------------------------

Message = tuple[str, "int | bytes"]  # (session id = key, item id of a click, or raw bytes sent as they are)


def _produce_main(conn: Any, bootstrap: str, topic: str, messages: list[Message], rate: float,
                  linger_ms: int) -> None:
    asyncio.run(_produce(conn, bootstrap, topic, messages, rate, linger_ms))


async def _produce(conn: Any, bootstrap: str, topic: str, messages: list[Message], rate: float,
                   linger_ms: int) -> None:
    """Send message i at t0 + i/rate (t0 from the parent, time.monotonic); report when each went out."""
    from aiokafka import AIOKafkaProducer

    from streamrec.events import ClickEvent

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, acks="all",
                                request_timeout_ms=10_000)
    await producer.start()
    try:
        conn.send("ready")
        t0 = conn.recv()
        sent, pending, i, n = [0.0] * len(messages), [], 0, len(messages)
        while i < n:
            now = time.monotonic()
            if t0 + i / rate > now:
                await asyncio.sleep(t0 + i / rate - now)
                continue
            while i < n and t0 + i / rate <= now:  # everything due by now (the loop may have been late)
                key, payload = messages[i]
                value = payload if isinstance(payload, bytes) else \
                    ClickEvent(session_id=key, item_id=payload, ts=time.time()).to_bytes()
                sent[i] = time.monotonic()
                pending.append(await producer.send(topic, key=key.encode(), value=value))
                i += 1
        results = await asyncio.gather(*pending, return_exceptions=True)
        seconds = time.monotonic() - t0
    finally:
        await producer.stop()
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    ends: dict[int, int] = {}  # partition → end offset: where a consumer of exactly these messages stops
    for meta in results:
        if not isinstance(meta, BaseException):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    conn.send({"sent": sent, "seconds": seconds, "ends": ends, "failures": len(failures),
               "first_failure": failures[0] if failures else None})


class ScheduledProducer:
    """An open-loop aiokafka producer in its own process, so it takes no CPU from the observer's
    interpreter; aiokafka because it costs half kafka-python's CPU per event on a 2-core machine."""

    def __init__(self, settings: Settings, messages: list[Message], rate: float, linger_ms: int = 1) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.count = len(messages)
        self.bootstrap = settings.kafka_bootstrap
        self.process = ctx.Process(target=_produce_main, daemon=True,
                                   args=(child, settings.kafka_bootstrap, settings.clicks_topic, messages, rate,
                                         linger_ms))
        self.process.start()

    def __enter__(self) -> "ScheduledProducer":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)

    def start(self, lead_s: float = 0.2) -> float:
        """Wait until the producer is connected, then tell it when event 0 is due (`lead_s` from now)."""
        if not self.conn.poll(60.0):
            raise BenchSetupError(f"the producer process did not connect to Kafka at {self.bootstrap}")
        self.conn.recv()
        t0 = time.monotonic() + lead_s
        self.conn.send(t0)
        return t0

    def report(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """`sent`: when each message was handed to the client (time.monotonic); `seconds` from t0 to the
        last ack; `ends`: {partition: end offset}. Raises unless Kafka acknowledged every message."""
        try:
            report = self.conn.recv() if self.conn.poll(timeout_s) else None
        except EOFError:
            report = None
        if report is None:
            raise BenchSetupError(f"the producer process sent no report ({self.process.exitcode})")
        if report["failures"]:
            raise BenchSetupError(f"{report['failures']} of {self.count} events were not acknowledged by Kafka "
                                  f"at {self.bootstrap}: {report['first_failure']}")
        return report


# --- watching the online store ------------------------------------------------------------------

async def click_counts(store: Any, sessions: Sequence[str]) -> list[int]:
    """Each session's `click_count` in the online store (0 when it has no row)."""
    from streamrec import feature_schema as s
    from streamrec.online_store import ReadRequest

    counts: list[int] = []
    for start in range(0, len(sessions), READ_CHUNK):
        chunk = list(sessions[start:start + READ_CHUNK])
        rows = (await store.read_many([ReadRequest(s.SESSION_FEATURES_VIEW, chunk, (s.CLICK_COUNT,))]))[0]
        counts += [(row or {}).get(s.CLICK_COUNT) or 0 for row in rows]
    return counts


@dataclass
class Visibility:
    seen: list[float]  # time.monotonic() of the poll reply that showed each event; nan = never (or no click)
    poll_gaps_s: list[float] = field(default_factory=list)
    poll_rtts_s: list[float] = field(default_factory=list)
    max_pending_sessions: int = 0
    live_sessions: list[str] = field(default_factory=list)  # sessions seen applied, most recent last


async def observe(store: Any, sessions: Sequence[str | None], t0: float, rate: float, poll_s: float,
                  settle_s: float = SETTLE_S, on_poll: Callable[[Visibility], None] | None = None) -> Visibility:
    """Poll the session rows of every due, unseen click until all are visible (or no progress for settle_s).

    `sessions[i]` is the session of message i (sent at t0 + i/rate), None for one that is no click;
    the k-th click of a session is visible once its click count reaches k.
    """
    n = len(sessions)
    found = Visibility([math.nan] * n)
    pending: dict[str, deque[tuple[int, int]]] = {}
    clicks: dict[str, int] = {}
    due, unseen = 0, sum(session is not None for session in sessions)
    last_poll: float | None = None
    last_progress = time.monotonic()
    while unseen:
        now = time.monotonic()
        while due < n and t0 + due / rate <= now:
            session = sessions[due]
            if session is not None:
                clicks[session] = clicks.get(session, 0) + 1
                pending.setdefault(session, deque()).append((clicks[session], due))
            due += 1
        if pending:
            if last_poll is not None:
                found.poll_gaps_s.append(now - last_poll)
            last_poll = now
            found.max_pending_sessions = max(found.max_pending_sessions, len(pending))
            watched = list(pending)
            for start in range(0, len(watched), READ_CHUNK):
                chunk = watched[start:start + READ_CHUNK]
                issued = time.monotonic()
                counts = await click_counts(store, chunk)
                replied = time.monotonic()
                found.poll_rtts_s.append(replied - issued)
                for session, count in zip(chunk, counts):
                    waiting = pending[session]
                    while waiting and waiting[0][0] <= count:
                        found.seen[waiting.popleft()[1]] = replied
                        found.live_sessions.append(session)
                        unseen -= 1
                        last_progress = replied
                    if not waiting:
                        del pending[session]
        else:
            last_poll = None  # idle between events: not a poll gap
        if on_poll:
            on_poll(found)
        if due >= n and time.monotonic() - last_progress > settle_s:
            break
        if due < n and not pending:  # nothing to watch until the next event is due
            await asyncio.sleep(max(0.0, min(poll_s, t0 + due / rate - time.monotonic())))
        else:
            await asyncio.sleep(poll_s)
    return found
