"""Rebalances on the real broker and Redis: a second worker joins the consumer group in the middle of
a replay (the partitions are split between the two), then the first one leaves (SIGTERM: the second
takes every partition). Afterwards every produced click is reflected exactly once in effect.

Faust's fetch loop is where records can go missing around a rebalance (upstream issues #216,
#312), and `streaming.fast_delivery` changes how that loop hands records over; this runs it through
two rebalances with records in flight.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from infra import process
from infra.kafka import free_port
from streamrec.settings import Settings
from tests.conftest import CLI, wait_for
from tests.faults.conftest import own_worker_settings, worker_metrics
from tests.faults.test_worker_restart import (
    EVENTS, Replay, applied_total, expected_sessions, mismatches, read_store, start_applying_worker, workload,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(400)]

FIRST, SECOND = "worker-rebalance-a", "worker-rebalance-b"
RATE = 300.0  # slow enough that the second worker joins (~10 s) while clicks still arrive
SETTLE_TIMEOUT_S = 120.0


@pytest.fixture()
def two_workers(live_settings: Settings) -> Iterator[tuple[Settings, Settings]]:
    """The same group and topics, each worker with its own web port."""
    with own_worker_settings(live_settings, "rebalance", FIRST) as first:
        second = Settings(**{**first.model_dump(), "worker_web_port": free_port()})
        try:
            yield first, second
        finally:
            process.stop(SECOND, second)


@pytest.mark.xfail(strict=False, reason=(
    "known loss, not fixed yet: 1-12 of 6,000 clicks were missing from the session counts afterwards "
    "in 2 of 6 runs with streaming.fast_delivery and 2 of 5 with Faust's own fetch loop (3 of 5, up "
    "to 245, with stream_wait_empty=True). Single-worker crash/restart (test_worker_restart) is exact."))
def test_clicks_survive_a_worker_joining_and_one_leaving_mid_replay(two_workers) -> None:
    first, second = two_workers
    clicks = workload(uuid.uuid4().hex[:6], seed=23)
    expected = expected_sessions(clicks, first.recent_items)
    item_counts = Counter(item for _, item in clicks)
    sessions, items = sorted(expected), sorted(item_counts)

    start_applying_worker(FIRST, first, clicks[0])

    replay = Replay(first, clicks[1:], rate=RATE)
    thread = replay.start()
    process.start_detached(SECOND, [*CLI, "stream"], second, env=second.to_env())
    # The group has rebalanced once the newcomer has applied clicks of its own partitions.
    wait_for(lambda: worker_metrics(second).get("events.applied", 0) > 0, 60,
             "the second worker to get partitions and apply clicks")
    joined_at_sent = replay.sent
    first_applied = worker_metrics(first).get("events.applied", 0)
    assert not replay.done.is_set(), "the replay ended before the second worker joined: no rebalance under load"
    process.stop(FIRST, first)  # SIGTERM: leaves the group, the second worker takes every partition
    left_at_sent = replay.sent
    assert not replay.done.is_set(), "the replay ended before the first worker left"

    thread.join(120)
    assert replay.done.is_set() and not replay.errors, f"replay failed: {replay.errors[:3]}"

    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    bad_sessions = bad_items = []
    while time.monotonic() < deadline:
        session_rows, item_rows = read_store(second, sessions, items)
        bad_sessions, bad_items = mismatches(clicks, expected, item_counts, session_rows, item_rows)
        if not bad_sessions and not bad_items:
            break
        time.sleep(0.5)
    time.sleep(3)  # a late redelivery must not change anything either
    session_rows, item_rows = read_store(second, sessions, items)
    bad_sessions, bad_items = mismatches(clicks, expected, item_counts, session_rows, item_rows)
    stored = applied_total(session_rows)
    report = (f"{EVENTS} clicks; the second worker joined after {joined_at_sent} were sent (the first had "
              f"applied {first_applied:.0f}), the first left after {left_at_sent}; store now holds "
              f"{stored} session clicks; the second worker's counters {worker_metrics(second)}")
    print(f"\nFIGURES case=4 worker-rebalance injected='second worker joins after {joined_at_sent} of {EVENTS} "
          f"clicks, first leaves (SIGTERM) after {left_at_sent}' events={len(clicks)} stored={stored} "
          f"lost_or_doubled={stored - len(clicks):+d} sessions_wrong={len(bad_sessions)} of {len(sessions)} "
          f"items_wrong={len(bad_items)} of {len(items)}\n{report}")
    assert not bad_sessions, f"{len(bad_sessions)} sessions differ, e.g. {bad_sessions[:3]}\n{report}\n" \
                             f"{process.log_tail(SECOND, second)}"
    assert not bad_items, f"{len(bad_items)} items differ, e.g. {bad_items[:5]}\n{report}"
