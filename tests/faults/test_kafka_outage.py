"""Kafka outage under load, on our own broker (never the shared one): clients POST /events steadily
and `streamrec produce` replays clicks while the broker is SIGKILLed and restarted. POST /events must
answer 503 with Retry-After within the send timeout instead of hanging; clients honouring it keep
their events and retry; afterwards every event that got a 202, and every event the producer
replayed, is in the clicks topic. A second `streamrec produce`, started while the broker is dead,
waits for it and delivers all of its events too."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from serving.event_sink import EventSink
from infra import kafka, process, stack
from infra.kafka import free_port
from streamrec.settings import Settings
from tests.conftest import CLI, wait_for
from tests.faults.test_redis_outage import own_settings, start_api
from tests.faults.test_worker_restart import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(400)]

API = "api-kafka-outage"
PRODUCER = "produce-kafka-outage"
LATE_PRODUCER = "produce-late-kafka-outage"  # started while the broker is dead
LATE_EVENTS = 300
CLIENTS = 4  # honour Retry-After
IMPATIENT_RETRY_S = 0.2  # one more client retries after this, ignoring Retry-After: the breaker's case
CLIENT_RATE = 10.0  # events per second per client (40/s in all)
BASELINE_S = 3.0
DOWN_S = 6.0  # broker dead, before we even start restarting it
AFTER_S = 4.0
PRODUCE_EVENTS = 3000
PRODUCE_RATE = 100.0  # the replay spans baseline, outage, restart and after
DRAIN_TIMEOUT_S = 60.0
SEND_TIMEOUT_S = EventSink(Settings()).send_timeout_s
# The README's figure: the 503 arrives within the send timeout, measured by the client (HTTP on
# loopback included), so the API must leave itself room to answer inside that bound.
HANG_BOUND_S = SEND_TIMEOUT_S


@pytest.fixture()
def broker_settings(live_settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    """Our own broker (own ports, own data dir); the live stack's Redis and model."""
    tag = uuid.uuid4().hex[:6]
    settings = own_settings(live_settings, tmp_path_factory.mktemp("kafka-outage"),
                            redis_url=live_settings.redis_url,
                            kafka_bootstrap=f"127.0.0.1:{free_port()}",
                            kafka_controller_port=free_port(),
                            clicks_topic=f"clicks-ko-{tag}", dead_letter_topic=f"clicks-dlq-ko-{tag}",
                            worker_id=f"ko-{tag}")
    try:
        kafka.start(settings)
        stack.ensure_topics(settings)
        yield settings
    finally:
        process.stop(PRODUCER, settings)
        process.stop(API, settings)
        process.stop(kafka.NAME, settings, timeout_s=30, expect=kafka.MAIN_CLASS)


@dataclass
class Client:
    """Sends its events at a steady rate; on 503 keeps the event and retries after Retry-After."""

    base: str
    name: str
    stop: threading.Event
    accepted: dict[int, tuple[int, int]] = field(default_factory=dict)  # item id -> (partition, offset)
    unavailable: int = 0
    missing_retry_after: int = 0
    other: list[tuple[int, str]] = field(default_factory=list)
    latencies: list[tuple[float, float, int]] = field(default_factory=list)  # (at, seconds, status)
    errors: list[BaseException] = field(default_factory=list)
    created: int = 0
    backlog: list[dict] = field(default_factory=list)
    ignore_retry_after_s: float | None = None

    def run(self, first_item: int) -> None:
        try:
            self._run(first_item)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def _run(self, first_item: int) -> None:
        next_new = time.monotonic()
        retry_at = 0.0
        with httpx.Client(base_url=self.base, timeout=30) as http:
            while True:
                now = time.monotonic()
                while not self.stop.is_set() and now >= next_new:  # new events join the backlog
                    self.backlog.append({"session_id": f"{self.name}-{self.created % 7}",
                                         "item_id": first_item + self.created, "ts": time.time()})
                    self.created += 1
                    next_new += 1 / CLIENT_RATE
                if self.backlog and now >= retry_at:
                    self._send(http, self.backlog[0])
                    if self.backlog and self.backlog[0].get("retry_after"):
                        retry_at = time.monotonic() + self.backlog[0].pop("retry_after")
                    continue
                if self.stop.is_set() and not self.backlog:
                    return
                wake = min(next_new if not self.stop.is_set() else now + 0.1, retry_at if self.backlog else now + 0.1)
                time.sleep(min(max(0.0, wake - now), 0.1))

    def _send(self, http: httpx.Client, event: dict) -> None:
        """POST the oldest event; on 202 it leaves the backlog, on 503 it stays (retried later)."""
        body = {k: v for k, v in event.items() if k != "retry_after"}
        started = time.monotonic()
        try:
            response = http.post("/events", json=body)
        except httpx.HTTPError as exc:
            self.errors.append(exc)
            self.latencies.append((started, time.monotonic() - started, 0))
            event["retry_after"] = 1.0
            return
        self.latencies.append((started, time.monotonic() - started, response.status_code))
        if response.status_code == 202:
            reply = response.json()
            self.accepted[event["item_id"]] = (reply["partition"], reply["offset"])
            self.backlog.pop(0)
        elif response.status_code == 503:
            self.unavailable += 1
            retry_after = response.headers.get("retry-after")
            if retry_after is None:
                self.missing_retry_after += 1
            event["retry_after"] = (self.ignore_retry_after_s if self.ignore_retry_after_s is not None
                                    else float(retry_after or 1))
        else:
            self.other.append((response.status_code, response.text[:200]))
            self.backlog.pop(0)


def kill_broker(settings: Settings) -> None:
    pid = kafka.managed_pid(settings)
    assert pid is not None, "our broker is not running"
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: process._proc_info(pid) is None, 15, "the broker to die")


def exit_code(pid: int, timeout_s: float) -> int:
    """Exit code of our child `pid`, waiting (bounded) for it to finish."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.2)
    raise AssertionError(f"pid {pid} still running after {timeout_s}s")


def test_events_survive_a_kafka_outage(broker_settings):
    settings = broker_settings
    base = start_api(API, settings)
    tag = uuid.uuid4().hex[:6]
    stop = threading.Event()
    clients = [Client(base, f"ko-{tag}-c{n}", stop) for n in range(CLIENTS)]
    clients.append(Client(base, f"ko-{tag}-impatient", stop, ignore_retry_after_s=IMPATIENT_RETRY_S))
    threads = [threading.Thread(target=c.run, args=(1_000_000 * (n + 1),), daemon=True, name=c.name)
               for n, c in enumerate(clients)]
    prefix = f"kp-{tag}-"
    producer = process.start_detached(
        PRODUCER, [*CLI, "produce", "--events", str(PRODUCE_EVENTS), "--rate", str(PRODUCE_RATE),
                   "--session-prefix", prefix], settings, env=settings.to_env())
    health: list[tuple[str, int, bool]] = []

    def poll_health(phase: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                reply = httpx.get(f"{base}/health", timeout=5)
                health.append((phase, reply.status_code, reply.json()["kafka"]["ok"]))
            except httpx.HTTPError as exc:
                health.append((phase, 0, False))
                print(f"health error {exc!r}")
            time.sleep(0.5)

    # The outage must fall inside the replay: wait for its first events (the CLI takes seconds to start).
    wait_for(lambda: any(json.loads(r.value)["session_id"].startswith(prefix)
                         for r in read_topic(settings, settings.clicks_topic)),
             60, "the first replayed events", interval_s=0.5)
    for thread in threads:
        thread.start()
    poll_health("baseline", BASELINE_S)
    killed_at = time.monotonic()
    kill_broker(settings)
    late_prefix = f"kl-{tag}-"
    late_producer = process.start_detached(
        LATE_PRODUCER, [*CLI, "produce", "--events", str(LATE_EVENTS), "--rate", str(PRODUCE_RATE),
                        "--session-prefix", late_prefix], settings, env=settings.to_env())
    poll_health("down", DOWN_S)
    restart_started = time.monotonic()
    kafka.start(settings)
    restarted_at = time.monotonic()
    poll_health("after", AFTER_S)
    stop.set()
    for thread in threads:
        thread.join(DRAIN_TIMEOUT_S)
    drained_at = time.monotonic()
    produce_exit = exit_code(producer, 120)
    produce_log = process.log_tail(PRODUCER, settings, 5)
    late_exit = exit_code(late_producer, 120)

    records = read_topic(settings, settings.clicks_topic)
    values = [json.loads(r.value) for r in records]
    in_topic = Counter(v["item_id"] for v in values if v["session_id"].startswith(f"ko-{tag}-"))
    accepted = {item for c in clients for item in c.accepted}
    created = sum(c.created for c in clients)
    lost = sorted(accepted - set(in_topic))
    never_accepted = sum(len(c.backlog) for c in clients)
    duplicates = sum(n - 1 for n in in_topic.values() if n > 1)
    replayed = {(v["session_id"], v["item_id"], v["ts"]) for v in values if v["session_id"].startswith(prefix)}
    produce_lost = PRODUCE_EVENTS - len(replayed)
    produce_copies = sum(1 for v in values if v["session_id"].startswith(prefix)) - len(replayed)
    late_lost = LATE_EVENTS - len({(v["session_id"], v["item_id"], v["ts"]) for v in values
                                   if v["session_id"].startswith(late_prefix)})

    latencies = [lat for c in clients for lat in c.latencies]
    worst_s = max(seconds for _, seconds, _ in latencies)
    fault = [(s, code) for at, s, code in latencies if killed_at <= at <= restarted_at + 2]
    worst_fault_s = max(s for s, _ in fault)
    unavailable = sum(c.unavailable for c in clients)
    fast_503 = sum(1 for s, code in fault if code == 503 and s < 0.1)
    health_by_phase = {p: sorted({(code, ok) for q, code, ok in health if q == p}) for p in ("baseline", "down", "after")}
    figures = (f"FIGURES case=2 kafka-outage injected='broker SIGKILL, {restart_started - killed_at:.1f}s down + "
               f"{restarted_at - restart_started:.1f}s restart' requests={len(latencies)} events={created} "
               f"accepted={len(accepted)} (503s {unavailable}, all with Retry-After: "
               f"{sum(c.missing_retry_after for c in clients) == 0}, {fast_503} answered in <100 ms by the breaker; {len(clients)} clients, one ignoring Retry-After) lost={len(lost)} duplicates={duplicates} "
               f"worst_fault_ms={worst_fault_s * 1000:.0f} (bound {HANG_BOUND_S * 1000:.0f}); "
               f"produce: {PRODUCE_EVENTS} replayed, lost={produce_lost}, copies={produce_copies}; "
               f"produce started during the outage: {LATE_EVENTS} replayed, lost={late_lost}, exit {late_exit}; "
               f"drain {drained_at - restarted_at:.1f}s after restart; produce exit {produce_exit}")
    print(f"\n{figures}\nhealth per phase {health_by_phase}\nproduce log: {produce_log}")

    assert not [e for c in clients for e in c.errors], [e for c in clients for e in c.errors][:3]
    assert not [o for c in clients for o in c.other], [o for c in clients for o in c.other][:3]
    assert never_accepted == 0, f"{never_accepted} events still not accepted {DRAIN_TIMEOUT_S}s after the drain began"
    assert len(accepted) == created
    assert unavailable > 0, "no 503 at all: the outage did not reach the API"
    assert fast_503 > 0, "the breaker never answered at once: every 503 waited for the send timeout"
    assert all(c.missing_retry_after == 0 for c in clients), "503 without Retry-After"
    assert worst_s <= HANG_BOUND_S, f"a request waited {worst_s:.3f}s (send timeout {SEND_TIMEOUT_S}s)"
    assert not lost, f"{len(lost)} accepted events missing from the topic, e.g. {lost[:5]}"
    assert ("after", 200, True) in [(p, c, ok) for p, c, ok in health], health
    assert all(code == 503 and not ok for p, code, ok in health if p == "down"), health_by_phase
    assert produce_exit == 0 and produce_lost == 0, (
        f"`streamrec produce` lost {produce_lost} of {PRODUCE_EVENTS} events across the outage:\n"
        + process.log_tail(PRODUCER, settings))
    assert late_exit == 0 and late_lost == 0, (
        f"`streamrec produce` started while the broker was dead lost {late_lost} of {LATE_EVENTS} events:\n"
        + process.log_tail(LATE_PRODUCER, settings))
