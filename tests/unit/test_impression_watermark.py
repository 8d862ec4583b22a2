"""The clock by which the worker decides clicks: the wall clock once the impression log is read up
to its end, else the time of the latest impression read contiguously from the partitions still
behind (streaming.progress keeps those times)."""

from __future__ import annotations

from streaming.attribution import ImpressionWatermark


def watermark(up_s: float) -> ImpressionWatermark:
    mono = [0.0]
    mark = ImpressionWatermark(grace_s=30.0, clock=lambda: 10_000.0, monotonic=lambda: mono[0])
    mono[0] = up_s
    return mark


def test_nothing_assigned_yet_holds_clicks_back_however_long_it_takes() -> None:
    assert watermark(up_s=5)() == 0.0
    mark = watermark(up_s=31)
    mark.update({})  # the consumer runs but waits for its assignment (a dead member's session)
    assert mark() == 0.0
    mark.update({0: 0, 1: 0}, {0: 9_000.0, 1: 9_500.0})
    assert mark() == 10_000.0


def test_a_rebalance_holds_the_clock_where_it_was_until_partitions_are_assigned_again() -> None:
    now = [10_000.0]
    mark = ImpressionWatermark(grace_s=30.0, clock=lambda: now[0], monotonic=lambda: 100.0)
    mark.update({0: 0, 1: 4}, {0: 9_990.0, 1: 9_900.0})
    assert mark() == 9_900.0
    mark.update({})  # revoked: clicks read before must wait for what is still unread
    now[0] = 20_000.0
    assert mark() == 9_900.0
    mark.update({0: 0, 1: 0}, {0: 19_990.0, 1: 19_995.0})
    assert mark() == 20_000.0


def test_a_partition_behind_holds_the_clock_at_its_latest_impression() -> None:
    mark = watermark(up_s=5)
    read = {0: 9_000.0, 1: 9_500.0}
    mark.update({0: 0, 1: 12}, read)
    assert mark() == 9_500.0
    mark.update({0: 3, 1: 12}, read)
    assert mark() == 9_000.0
    mark.update({0: 0, 1: 0}, read)  # read to the end: the wall clock
    assert mark() == 10_000.0


def test_a_partition_behind_and_never_read_holds_clicks_back() -> None:
    mark = watermark(up_s=100)
    mark.update({0: 0, 1: 7})
    assert mark() == 0.0


def test_an_unknown_lag_holds_clicks_back_during_the_grace_period_only() -> None:
    mono = [0.0]
    mark = ImpressionWatermark(grace_s=30.0, clock=lambda: 10_000.0, monotonic=lambda: mono[0])
    mark.update({0: None, 1: 0}, {0: 9_000.0})
    mono[0] = 29.0
    assert mark() == 9_000.0
    mono[0] = 31.0
    assert mark() == 10_000.0


def test_the_grace_for_an_unknown_lag_starts_when_the_partition_is_assigned() -> None:
    mono = [0.0]
    mark = ImpressionWatermark(grace_s=30.0, clock=lambda: 10_000.0, monotonic=lambda: mono[0])
    mono[0] = 40.0  # a slow start-up: past the grace before anything was assigned
    mark.update({0: None}, {0: 9_000.0})
    assert mark() == 9_000.0  # assigned just now: still in its grace
    mono[0] = 69.0
    mark.update({0: None}, {0: 9_000.0})
    assert mark() == 9_000.0
    mono[0] = 71.0
    assert mark() == 10_000.0
    mark.update({0: None, 1: None}, {0: 9_000.0, 1: 9_800.0})  # partition 1 assigned by a rebalance: its own grace
    assert mark() == 9_800.0


def test_caught_up_moves_the_clock_only_to_when_the_ends_were_measured() -> None:
    now = [10_000.0]
    mark = ImpressionWatermark(grace_s=30.0, clock=lambda: now[0], monotonic=lambda: 100.0)
    mark.update({0: 0, 1: 0}, {0: 9_990.0, 1: 9_995.0}, at=9_999.0)
    assert mark() == 9_999.0  # not the wall clock: impressions sent after 9,999 are not in those ends
    now[0] = 10_060.0  # no measurement since (fetching stalled, or the broker is down): the clock waits
    assert mark() == 9_999.0
    mark.update({0: 0, 1: 0}, {0: 10_050.0, 1: 10_055.0}, at=10_059.0)
    assert mark() == 10_059.0


def test_a_partition_vouches_for_order_only_once_read_up_to_its_end_at_assignment() -> None:
    # A restarted worker: its predecessor wrote later impressions to Redis while one before them was
    # still unread; until this process has read what the partition held when assigned, a later
    # impression proves nothing.
    mono = [100.0]
    mark = ImpressionWatermark(grace_s=30.0, clock=lambda: 10_000.0, monotonic=lambda: mono[0])
    assert not mark.in_order  # nothing assigned yet: nothing is known
    mark.update({0: 0, 1: 5}, {0: 9_990.0, 1: 9_900.0}, inherited={0: 0, 1: 5})
    assert not mark.in_order  # partition 1 still holds records its previous owner may have processed
    mark.update({0: 0, 1: 2}, {0: 9_991.0, 1: 9_950.0}, inherited={0: 0, 1: 0})
    assert mark.in_order  # read past its end at assignment: it vouches from now on ...
    mark.update({0: 0, 1: 9}, {0: 9_992.0, 1: 9_960.0}, inherited={0: 0, 1: 3})
    assert mark.in_order  # ... whatever later records it is behind on (that is the clock's business)
    mark.update({0: 0, 2: None}, {0: 9_993.0}, inherited={0: 0, 2: None})  # a rebalance brings partition 2
    assert not mark.in_order  # unknown: it vouches only after the grace
    mono[0] = 131.0
    mark.update({0: 0, 2: None}, {0: 9_994.0}, inherited={0: 0, 2: None})
    assert mark.in_order
    mark.update({})  # a rebalance takes every partition: nothing is known again
    assert not mark.in_order
