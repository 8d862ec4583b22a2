"""Redis down under a real worker: while clicks are replayed through the real broker, the worker's
Redis is first frozen (SIGSTOP: writes hang past STREAMREC_WRITE_TIMEOUT_S) and then crashed
(SIGKILL: connections refused) and restarted on the same data (append-only file, fsync on every
write: the same store, not an empty one). The worker must stall and retry its batches rather than
drop or re-apply them: afterwards every session's click count and recent items, and every item's
click windows, equal what was produced (0 lost, 0 doubled)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from infra import process, redis_server
from infra.kafka import free_port
from streamrec import feature_schema as s
from streamrec.settings import Settings
from tests.conftest import wait_for
from tests.faults.conftest import own_worker_settings, worker_metrics
from tests.faults.test_worker_restart import (
    Replay, applied_total, expected_sessions, mismatches, read_store, start_applying_worker, workload,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(400)]

WORKER = "worker-redis-down"
REDIS = "redis-down-worker"  # our own redis-server, with persistence (infra's runs without)
EVENTS = 6000  # workload() makes this many clicks
RATE = 400.0  # clicks per second: the replay (~15 s) spans both faults
WRITE_TIMEOUT_S = 1.0
BEFORE_S = 2.0
FROZEN_S = 3.0  # > WRITE_TIMEOUT_S: the worker's batch writes time out and are retried
THAWED_S = 1.5
KILLED_S = 3.0  # > WRITE_TIMEOUT_S: connections refused, retried with backoff
SETTLE_TIMEOUT_S = 120.0


def start_redis(settings: Settings) -> int:
    """redis-server on our port and dir; AOF with fsync always, so a SIGKILL loses no acked write."""
    port = settings.redis_url.rsplit(":", 1)[1].split("/")[0]
    workdir = settings.data_dir / f"{REDIS}-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--daemonize", "no", "--dir", str(workdir), "--logfile", ""]
    pid = process.start_detached(REDIS, argv, settings, cwd=workdir)
    wait_for(lambda: redis_server.answers(settings.redis_url, 0.5), 30, "our redis-server to answer PING")
    return pid


def wait_dead(pid: int) -> None:
    wait_for(lambda: process._proc_info(pid) is None, 10, f"redis-server pid {pid} to die")


@pytest.fixture()
def down_settings(live_settings: Settings) -> Iterator[Settings]:
    live = Settings(**{**live_settings.model_dump(), "redis_url": f"redis://127.0.0.1:{free_port()}/0",
                       "write_timeout_s": WRITE_TIMEOUT_S})
    with own_worker_settings(live, "rdw", WORKER) as settings:
        try:
            start_redis(settings)
            yield settings
        finally:
            pid = process.is_running(REDIS, settings, expect="redis-server")
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
            process.stop(REDIS, settings, expect="redis-server")


def write_retries(settings: Settings) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    lines = [line for line in text.splitlines() if line.startswith("streamrec_worker_online_write_retries_total")]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_a_worker_loses_and_doubles_nothing_while_redis_is_frozen_then_killed_and_restarted(down_settings):
    settings = down_settings
    tag = uuid.uuid4().hex[:6]
    clicks = workload(tag, seed=23)
    expected = expected_sessions(clicks, settings.recent_items)
    item_counts = Counter(item for _, item in clicks)
    sessions, items = sorted(expected), sorted(item_counts)
    assert len(clicks) == EVENTS

    start_applying_worker(WORKER, settings, clicks[0])
    replay = Replay(settings, clicks[1:], rate=RATE)
    thread = replay.start()
    time.sleep(BEFORE_S)
    pid = process.is_running(REDIS, settings, expect="redis-server")
    assert pid is not None
    applied_before = applied_total(read_store(settings, sessions, [])[0])

    os.kill(pid, signal.SIGSTOP)  # frozen: the worker's writes hang until their timeout
    frozen_at_sent = replay.sent
    time.sleep(FROZEN_S)
    os.kill(pid, signal.SIGCONT)
    time.sleep(THAWED_S)
    os.killpg(pid, signal.SIGKILL)  # crashed: connections refused
    wait_dead(pid)
    killed_at_sent = replay.sent
    time.sleep(KILLED_S)
    restarted_pid = start_redis(settings)
    restarted_at_sent = replay.sent
    retries_during = write_retries(settings)
    assert not replay.done.is_set(), "the replay finished before Redis came back: not a mid-replay outage"

    thread.join(60)
    assert replay.done.is_set() and not replay.errors, f"replay failed: {replay.errors[:3]}"

    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    settled_s = None
    back_at = time.monotonic()
    bad_sessions = bad_items = []
    while time.monotonic() < deadline:
        session_rows, item_rows = read_store(settings, sessions, items)
        bad_sessions, bad_items = mismatches(clicks, expected, item_counts, session_rows, item_rows)
        if not bad_sessions and not bad_items:
            settled_s = time.monotonic() - back_at
            break
        if process.is_running(WORKER, settings) is None:
            raise AssertionError("the worker died:\n" + process.log_tail(WORKER, settings))
        time.sleep(0.5)
    time.sleep(3)  # a late retry or redelivery must not change anything either
    session_rows, item_rows = read_store(settings, sessions, items)
    bad_sessions, bad_items = mismatches(clicks, expected, item_counts, session_rows, item_rows)
    metrics = worker_metrics(settings)
    retries = write_retries(settings)
    lost = sum(max(0, want["count"] - int((session_rows.get(sid) or {}).get(s.CLICK_COUNT) or 0))
               for sid, want in expected.items())
    doubled = sum(max(0, int((session_rows.get(sid) or {}).get(s.CLICK_COUNT) or 0) - want["count"])
                  for sid, want in expected.items())
    print(f"\nFIGURES case=9 redis-down-worker injected='SIGSTOP {FROZEN_S:g}s, SIGCONT {THAWED_S:g}s, "
          f"SIGKILL {KILLED_S:g}s, restart on its AOF (write timeout {WRITE_TIMEOUT_S:g}s)' events={EVENTS} "
          f"sent at freeze/kill/restart={frozen_at_sent}/{killed_at_sent}/{restarted_at_sent} "
          f"applied before the freeze={applied_before} lost={lost} doubled={doubled} "
          f"bad_sessions={len(bad_sessions)} bad_items={len(bad_items)} write_retries={retries:.0f} "
          f"(by restart {retries_during:.0f}) settled={'never' if settled_s is None else f'{settled_s:.1f}s'} "
          f"after the replay; redis pid {pid} -> {restarted_pid}; worker counters {metrics}")

    assert 0 < applied_before < EVENTS, f"the outage was not mid-replay: {applied_before} applied before it"
    assert retries_during > 0, "the worker never retried a write: the outage did not reach it"
    assert lost == 0 and doubled == 0, (lost, doubled)
    assert not bad_sessions, (f"{len(bad_sessions)} of {len(expected)} sessions differ, e.g. {bad_sessions[:3]}\n"
                              + process.log_tail(WORKER, settings))
    assert not bad_items, f"{len(bad_items)} of {len(items)} items differ, e.g. {bad_items[:5]}"
    assert metrics.get("events.dead_lettered", 0) == 0, metrics
