"""Crash recovery on the real broker and Redis: the worker is SIGKILLed in the middle of a replay and
restarted with the same worker id (same consumer group, same table changelogs). Afterwards every
produced click is reflected exactly once in effect, in the session features and in the item windows."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from streamrec import feature_schema as s
from streaming import session_state
from streaming.producer import make_producer
from streamrec.events import ClickEvent
from infra import process
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings
from tests.faults.conftest import own_worker_settings, worker_metrics
from tests.conftest import CLI, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(400)]

WORKER = "worker-restart"  # distinct from the session fixture's "worker" pid file
EVENTS = 6000
SESSIONS = 400
ITEMS = 150
RATE = 1000.0  # events per second
KILL_AFTER_S = 2.5
RESTART_AFTER_S = 1.0
SETTLE_TIMEOUT_S = 120.0
ITEM_SIDE_TIMEOUT_S = 10.0  # bound of the wait for the item side's first write before the kill


@pytest.fixture()
def restart_settings(live_settings: Settings) -> Iterator[Settings]:
    with own_worker_settings(live_settings, "restart", WORKER) as settings:
        yield settings


def start(settings: Settings) -> int:
    return process.start_detached(WORKER, [*CLI, "stream"], settings, env=settings.to_env())


def start_applying_worker(name: str, settings: Settings, click: tuple[str, int]) -> int:
    """A worker started under pid name `name`, returned once it has applied `click` (session, item)."""
    pid = process.start_detached(name, [*CLI, "stream"], settings, env=settings.to_env())
    session, item = click
    producer = make_producer(settings)
    producer.send(settings.clicks_topic, key=session.encode(),
                  value=ClickEvent(session_id=session, item_id=item, ts=time.time()).to_bytes())
    producer.flush(10)
    producer.close()
    try:
        wait_for(lambda: applied_total(read_store(settings, [session], [])[0]) == 1, 120,
                 f"{name} to apply its first click")
    except AssertionError:
        raise AssertionError(process.log_tail(name, settings)) from None
    return pid


def kill_hard(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)  # start_detached made the worker a session (and group) leader
    wait_for(lambda: process._proc_info(pid) is None, 10, f"worker pid {pid} to die after SIGKILL")


def workload(tag: str, seed: int = 11) -> list[tuple[str, int]]:
    """(session, item) clicks in send order: skewed session sizes (some sessions longer than
    `recent_items`), items drawn from a small per-session pool so repeats are common."""
    rng = random.Random(seed)
    base = 7_000_000_000 + rng.randrange(1_000_000) * 1000  # item ids no other test writes
    items = [base + i for i in range(ITEMS)]
    sessions = [f"rs-{tag}-{n:04d}" for n in range(SESSIONS)]
    weights = [1.0 / (1 + n % 37) for n in range(SESSIONS)]
    pools = {sid: rng.sample(items, rng.choice((3, 8, 30, 60))) for sid in sessions}
    clicks = [(sid, rng.choice(pools[sid])) for sid in sessions]  # every session at least once
    clicks += [(sid, rng.choice(pools[sid])) for sid in rng.choices(sessions, weights, k=EVENTS - SESSIONS)]
    rng.shuffle(clicks)  # the order inside each session is the send order, whatever it is
    return clicks


def expected_sessions(clicks: list[tuple[str, int]], max_recent: int) -> dict[str, session_state.SessionState]:
    states: dict[str, session_state.SessionState] = {}
    for offset, (sid, item) in enumerate(clicks):
        states[sid], changed = session_state.apply_click(states.get(sid), item, 0, 0, offset, max_recent)
        assert changed
    return states


@dataclass
class Replay:
    """Sends the clicks at `rate` from a background thread."""

    settings: Settings
    clicks: list[tuple[str, int]]
    rate: float = RATE  # clicks per second
    sent: int = 0
    errors: list[BaseException] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="replay", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            producer = make_producer(self.settings)
            started = time.time()
            for i, (sid, item) in enumerate(self.clicks):
                delay = started + i / self.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                value = ClickEvent(session_id=sid, item_id=item, ts=time.time()).to_bytes()
                future = producer.send(self.settings.clicks_topic, key=sid.encode(), value=value)
                future.add_errback(self.errors.append)
                self.sent += 1
            producer.flush(timeout=60)
            producer.close(timeout=10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            self.done.set()


def read_store(settings: Settings, sessions: list[str], items: list[int]) -> tuple[dict, dict]:
    async def read() -> tuple[list, list]:
        store = OnlineStore.from_url(settings.redis_url, timeout_s=10.0)
        try:
            return (await store.read(s.SESSION_FEATURES_VIEW, sessions),
                    await store.read(s.ITEM_TRENDING_VIEW, items))
        finally:
            await store.close()

    session_rows, item_rows = asyncio.run(read())
    return dict(zip(sessions, session_rows)), dict(zip(items, item_rows))


def applied_total(rows: dict) -> int:
    return sum(int((row or {}).get(s.CLICK_COUNT) or 0) for row in rows.values())


def counted_total(rows: dict) -> int:
    return sum(int((row or {}).get(s.CLICKS_1H) or 0) for row in rows.values())


def read_topic(settings: Settings, topic: str) -> list:
    """Every record of `topic`, all partitions, from the beginning to the current end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000,
                             fetch_max_bytes=8 * 1024 * 1024)  # dead letters of giant events
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            batch = consumer.poll(timeout_ms=2000)
            if not batch:
                break
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        consumer.close()


def explain(settings: Settings, clicks: list[tuple[str, int]], sessions: list[str]) -> str:
    """Evidence for a mismatch: what the clicks topic holds and what the session table's changelog
    recorded for the given sessions."""
    import json

    lines = []
    records = read_topic(settings, settings.clicks_topic)
    lines.append(f"clicks topic holds {len(records)} records (sent {len(clicks)})")
    changelog = read_topic(settings, f"{settings.worker_id}-session-state-changelog")
    for sid in sessions:
        sent = [item for s_, item in clicks if s_ == sid]
        mine = [(r.partition, r.offset, json.loads(r.value)["item_id"]) for r in records if r.key == sid.encode()]
        lines.append(f"{sid}: sent {len(sent)}, topic has {len(mine)} at (partition, offset): "
                     f"{[(p, o) for p, o, _ in mine]}")
        states = [(r.partition, r.offset, json.loads(r.value)) for r in changelog if r.key == sid.encode()]
        lines.append(f"  changelog ({len(states)} records): " + ", ".join(
            f"@{p}:{o} count={st['count']} applied={st['applied']}" for p, o, st in states))
    return "\n".join(lines)


def mismatches(clicks, expected, item_counts, session_rows, item_rows) -> tuple[list, list]:
    bad_sessions = [
        (sid, {"count": want["count"], "recent": want["recent"]},
         None if got is None else {"count": got.get(s.CLICK_COUNT), "recent": got.get(s.RECENT_ITEMS)})
        for sid, want in expected.items()
        for got in [session_rows.get(sid)]
        if got is None or got.get(s.CLICK_COUNT) != want["count"] or got.get(s.RECENT_ITEMS) != want["recent"]
    ]
    bad_items = [
        (item, want, None if got is None else (got.get(s.CLICKS_1H), got.get(s.CLICKS_5M)))
        for item, want in item_counts.items()
        for got in [item_rows.get(item)]
        if got is None or got.get(s.CLICKS_1H) != want or got.get(s.CLICKS_5M) != want
    ]
    return bad_sessions, bad_items


REPEAT = int(os.environ.get("STREAMREC_FAULT_REPEAT", "1"))  # run the whole scenario N times in one session


def effect_counts(expected: dict, session_rows: dict, metrics: dict) -> str:
    """Produced vs reflected in the store: clicks lost, clicks counted twice, repeated recent items."""
    lost = doubled = repeated = 0
    for sid, want in expected.items():
        row = session_rows.get(sid) or {}
        got = int(row.get(s.CLICK_COUNT) or 0)
        lost += max(0, want["count"] - got)
        doubled += max(0, got - want["count"])
        recent = list(row.get(s.RECENT_ITEMS) or [])
        repeated += len(recent) - len(set(recent))
    return (f"counts: produced {EVENTS}, applied (store) {applied_total(session_rows)}, lost {lost}, "
            f"duplicates in effect {doubled} (+{repeated} repeated recent items); redeliveries the restarted "
            f"worker skipped {int(metrics.get('events.duplicate', 0))}")


@pytest.mark.parametrize("attempt", range(REPEAT))
def test_a_worker_killed_mid_replay_recovers_and_applies_every_click_exactly_once(restart_settings, attempt):
    settings = restart_settings
    tag = uuid.uuid4().hex[:6]
    clicks = workload(tag)
    expected = expected_sessions(clicks, settings.recent_items)
    item_counts = Counter(item for _, item in clicks)
    sessions, items = sorted(expected), sorted(item_counts)
    assert len(clicks) == EVENTS and len(expected) == SESSIONS

    # 1. A worker that is up and applying clicks (its first click is part of the workload).
    pid = start_applying_worker(WORKER, settings, clicks[0])

    # 2. Replay the rest; SIGKILL the worker mid-stream; restart it while the replay goes on.
    replay = Replay(settings, clicks[1:])
    thread = replay.start()
    time.sleep(KILL_AFTER_S)
    # Kill only once the item side has written too (it lags the session side by about a commit
    # interval), so both tables have state to recover; the replay is still going on.
    item_deadline = time.monotonic() + ITEM_SIDE_TIMEOUT_S
    while (replay.sent < EVENTS - 2 * RATE and time.monotonic() < item_deadline
           and not counted_total(read_store(settings, [], items)[1])):
        time.sleep(0.05)
    assert not replay.done.is_set(), "the replay finished before the kill: not a mid-stream crash"
    sent_at_kill = replay.sent + 1
    kill_hard(pid)
    killed_at = time.monotonic()
    time.sleep(RESTART_AFTER_S)
    session_rows, item_rows = read_store(settings, sessions, items)  # nobody writes now
    applied_at_kill, counted_at_kill = applied_total(session_rows), counted_total(item_rows)
    restarted_pid = start(settings)
    restarted_at = time.monotonic()
    assert restarted_pid != pid
    print(f"\nkilled worker pid {pid} after {sent_at_kill} of {EVENTS} clicks were sent; "
          f"store then held {applied_at_kill} session clicks and {counted_at_kill} item clicks; "
          f"restarted as pid {restarted_pid}")
    assert 0 < applied_at_kill < EVENTS, (
        f"the kill was not mid-stream: {applied_at_kill} session clicks of {EVENTS} applied at kill time")
    assert 0 < counted_at_kill < EVENTS, (
        f"the item side had {counted_at_kill} of {EVENTS} clicks at kill time: its recovery is not exercised")

    thread.join(60)
    assert replay.done.is_set() and not replay.errors, f"replay failed: {replay.errors[:3]}"
    assert replay.sent == EVENTS - 1
    print(f"replay done {time.monotonic() - killed_at:.1f}s after the kill")

    # 3. Wait (bounded) until the store holds every click, then demand exactness.
    first_progress_s = settled_s = None
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    bad_sessions = bad_items = []
    while time.monotonic() < deadline:
        session_rows, item_rows = read_store(settings, sessions, items)
        if first_progress_s is None and (applied_total(session_rows) > applied_at_kill
                                         or counted_total(item_rows) > counted_at_kill):
            first_progress_s = time.monotonic() - restarted_at
        bad_sessions, bad_items = mismatches(clicks, expected, item_counts, session_rows, item_rows)
        if not bad_sessions and not bad_items:
            settled_s = time.monotonic() - restarted_at
            break
        if process.is_running(WORKER, settings) is None:
            raise AssertionError("the restarted worker died:\n" + process.log_tail(WORKER, settings))
        time.sleep(0.5)
    time.sleep(3)  # a late redelivery must not change anything either
    session_rows, item_rows = read_store(settings, sessions, items)
    bad_sessions, bad_items = mismatches(clicks, expected, item_counts, session_rows, item_rows)
    metrics = worker_metrics(settings)

    report = (
        f"{EVENTS} clicks over {SESSIONS} sessions and {len(items)} items; kill after {sent_at_kill} sent, "
        f"{applied_at_kill} applied; after restart: first progress "
        f"{'never' if first_progress_s is None else f'{first_progress_s:.1f}s'}, settled "
        f"{'never' if settled_s is None else f'{settled_s:.1f}s'}; store totals now "
        f"{applied_total(session_rows)} session clicks, {counted_total(item_rows)} item clicks; "
        f"restarted worker's counters {metrics}"
    )
    print(report)
    print(effect_counts(expected, session_rows, metrics))
    if bad_sessions or bad_items:
        report += "\n" + explain(settings, clicks, [b[0] for b in bad_sessions[:3]])
        print(report)
    assert not bad_sessions, (
        f"{len(bad_sessions)} of {SESSIONS} sessions differ (session, expected, stored), e.g. "
        f"{bad_sessions[:3]}\n{report}\n{process.log_tail(WORKER, settings)}")
    assert not bad_items, (
        f"{len(bad_items)} of {len(items)} items differ (item, expected clicks_1h/5m, stored), e.g. "
        f"{bad_items[:5]}\n{report}\n{process.log_tail(WORKER, settings)}")
    # Exactly once in effect is the point; the redelivered clicks the new worker skipped are how.
    assert metrics.get("events.applied", 0) + metrics.get("events.duplicate", 0) >= EVENTS - applied_at_kill, report
    assert metrics.get("events.dead_lettered", 0) == 0, report
