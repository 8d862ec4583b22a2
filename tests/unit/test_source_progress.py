"""The worker's contiguous progress per source partition: lags, and the records Faust handed over
and dropped (fetched again by a rewind), seen through the seeks Faust makes."""

from __future__ import annotations

from collections import namedtuple

from streaming import metrics
from streaming.faust_patches import SourceReadOffsets
from streaming.progress import SourceProgress

TP = namedtuple("TP", "topic partition")


def progress(mono: list[float] | None = None) -> SourceProgress:
    clock = mono if mono is not None else [0.0]
    return SourceProgress(gap_grace_s=10.0, monotonic=lambda: clock[0])


def records(topic: str, partition: int, offsets, ts: float = 100.0):  # noqa: ANN001, ANN201
    return [(topic, partition, o, ts + o) for o in offsets]


def test_lags_are_highwater_minus_the_next_offset_after_the_highest_processed() -> None:
    p = progress()
    p.done(records("clicks", 0, [9]) + records("clicks", 1, [0]))
    p.done(records("clicks", 0, [4]))  # a redelivered older record does not move the mark back
    highwaters = {("clicks", 0): 15, ("clicks", 1): 1, ("clicks", 2): 7}
    # partition 2 has nothing processed yet: left out, not reported as 7 or 0
    assert p.lags(highwaters, lambda t, n: highwaters[(t, n)]) == {("clicks", 0): 5, ("clicks", 1): 0}
    assert p.lags([("clicks", 0)], lambda t, n: None) == {}


def test_records_skipped_after_a_seek_are_fetched_again_once() -> None:
    p = progress()
    p.seeked("imps", 3, 125)  # Faust seeks to the committed offset
    assert p.done(records("imps", 3, [125])) == []
    rewound = metrics.OFFSETS_REWOUND.labels("imps")._value.get()
    assert p.done(records("imps", 3, [212, 213])) == [("imps", 3, 126)]  # Faust dropped 126..211
    assert metrics.OFFSETS_REWOUND.labels("imps")._value.get() - rewound == 86
    assert p.done(records("imps", 3, [214])) == []  # fetched before the rewind: no second rewind
    assert p.unread("imps", 3, 300) == 300 - 126 and p.read_ts("imps", 3) == 225.0
    p.seeked("imps", 3, 126)  # the rewind's own seek changes nothing
    assert p.done(records("imps", 3, range(126, 215))) == []
    assert p.unread("imps", 3, 300) == 300 - 215 and p.read_ts("imps", 3) == 314.0


def test_a_hole_still_there_after_the_grace_is_taken_as_missing_offsets() -> None:
    mono = [0.0]
    p = progress(mono)
    p.done(records("clicks", 0, [10]))
    assert p.done(records("clicks", 0, [12])) == [("clicks", 0, 11)]  # offset 11: a transaction marker
    mono[0] = 5.0
    assert p.done(records("clicks", 0, [12])) == []  # the refetch starts at 12: wait out the grace
    skipped = metrics.OFFSETS_SKIPPED.labels("clicks")._value.get()
    mono[0] = 11.0
    assert p.done(records("clicks", 0, [13])) == []
    assert metrics.OFFSETS_SKIPPED.labels("clicks")._value.get() - skipped == 2
    assert p.unread("clicks", 0, 14) == 0


def test_a_seek_by_faust_moves_the_cursor_and_cancels_a_rewind() -> None:
    p = progress()
    p.done(records("clicks", 0, [10]))
    assert p.done(records("clicks", 0, [20])) == [("clicks", 0, 11)]
    p.seeked("clicks", 0, 30)  # a rebalance: someone else processed up to 30
    assert p.done(records("clicks", 0, [30, 31])) == []
    p.seeked("clicks", 0, None)  # revoked: position unknown until a record is processed
    assert p.unread("clicks", 0, 40) is None
    assert p.done(records("clicks", 0, [35])) == [] and p.unread("clicks", 0, 40) == 4


def test_faust_seeks_reach_the_progress_and_deliveries_do_not() -> None:
    seen = []
    offsets = SourceReadOffsets({"clicks"}, lambda topic, partition, offset: seen.append((partition, offset)))
    offsets[TP("clicks", 0)] = 5  # Consumer.seek / _seek_wait
    offsets.update({TP("clicks", 1): 7, TP("changelog", 0): 3})  # perform_seek
    offsets.pop(TP("clicks", 1), None)  # on_partitions_revoked
    del offsets[TP("clicks", 0)]  # _seek_wait to offset 0
    offsets.delivered(TP("clicks", 2), 99)  # the fetch loop handing a record over: not a seek
    offsets[TP("clicks", 3)] = None  # Faust's "no committed offset"
    assert seen == [(0, 5), (1, 7), (1, None), (0, None), (3, None)]
    assert offsets[TP("clicks", 2)] is None and offsets[TP("changelog", 0)] == 3  # reads stay blind for sources


def test_a_hole_counts_as_unread_even_past_a_stale_highwater_and_is_reported_live() -> None:
    p = progress()
    p.done(records("imps", 0, [10]))
    assert p.done(records("imps", 0, [15])) == [("imps", 0, 11)]
    # the highwater read a second ago (12) predates record 15: the hole 11..14 still counts
    assert p.unread("imps", 0, 12) == 5
    assert p.rewinding("imps") == {0: 110.0} and p.rewinding("clicks") == {}
    p.done(records("imps", 0, range(11, 16)))
    assert p.rewinding("imps") == {} and p.unread("imps", 0, 12) == 0


def test_a_hole_is_known_before_the_batch_past_it_is_processed() -> None:
    p = progress()
    p.done(records("imps", 0, [10]))
    batch = records("imps", 0, [11, 12, 20, 21])  # Faust dropped 13..19
    rewound = metrics.OFFSETS_REWOUND.labels("imps")._value.get()
    assert p.expect(batch) == [("imps", 0, 13)]
    assert p.rewinding("imps") == {0: 110.0}  # what the attribution sees while the batch is processed
    assert p.expect(batch) == []  # one rewind per hole
    assert p.done(batch) == []  # registered already: done only advances the cursor
    assert metrics.OFFSETS_REWOUND.labels("imps")._value.get() - rewound == 7
    assert p.unread("imps", 0, 22) == 22 - 13 and p.read_ts("imps", 0) == 112.0
    assert p.expect(records("imps", 0, range(13, 22))) == []  # the refetch
    p.done(records("imps", 0, range(13, 22)))
    assert p.rewinding("imps") == {} and p.unread("imps", 0, 22) == 0
    assert p.expect(records("imps", 1, [40])) == []  # no cursor yet: nothing to compare with
