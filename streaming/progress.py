"""How far the worker's agents have got in each source partition, and the records Faust skipped.

Faust 0.15 can hand records to a stream and then drop them unprocessed and unacked: a stream
skips every queued event while flow control is suspended or whose generation is not the app's
(upstream #216, #312). After a restart this happens around the table recovery: the simulation's
kill test caught the restarted worker processing offset 125 of a partition and then 212, every
partition of both topics jumping the same 86 records, and rewards lost with them. Kafka holds the
records, but the fetcher is past them and nothing fetches them again in this process.

`SourceProgress` keeps, per source partition, a contiguous cursor: the offset the agents should
process next. Faust's seeks set it (they reach us through `faust_patches.SourceReadOffsets`). A
processed record beyond the cursor means the records between were skipped: the partition is
rewound to the cursor once (a seek; the agents are idempotent per record, so what comes again
changes nothing). A hole that is still there `gap_grace_s` after its rewind is offsets that do not
exist (a compacted topic, transaction markers): it is accepted and counted.

The cursor is also what the reward attribution's clock needs: every impression before it has been
read, which the highest processed offset cannot say once records come out of order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streaming import metrics

log = logging.getLogger(__name__)

GAP_GRACE_S = 10.0  # records fetched before a rewind are processed within this; a hole after it is real


@dataclass
class Partition:
    next: int | None = None  # the contiguous cursor: every offset below it was processed (None: not known yet)
    last: int = -1  # the highest offset processed
    read_ts: float = 0.0  # the latest record time below the cursor
    rewound_to: int | None = None  # an outstanding rewind's offset
    rewound_at: float = 0.0


class SourceProgress:
    def __init__(self, gap_grace_s: float = GAP_GRACE_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.gap_grace_s = gap_grace_s
        self.monotonic = monotonic
        self.partitions: dict[tuple[str, int], Partition] = {}

    def seeked(self, topic: str, partition: int, offset: int | None) -> None:
        """The fetch position of a partition was set to `offset` (None: unknown, e.g. revoked):
        the next record processed should be that one."""
        p = self.partitions.setdefault((topic, partition), Partition())
        if p.rewound_to is not None and offset == p.rewound_to:
            return  # our own rewind
        p.next, p.rewound_to = offset, None

    def done(self, records: Iterable[tuple[str, int, int, float]]) -> list[tuple[str, int, int]]:
        """Mark processed (topic, partition, offset, record time) records, in processing order;
        returns the (topic, partition, offset) rewinds to make for records skipped before them."""
        rewinds: list[tuple[str, int, int]] = []
        for topic, partition, offset, ts in records:
            p = self.partitions.get((topic, partition))
            if p is None:
                p = self.partitions[(topic, partition)] = Partition()
            if offset > p.last:
                p.last = offset
            if p.next is None or offset == p.next:
                p.next, p.read_ts = offset + 1, max(p.read_ts, ts)
                if p.rewound_to is not None and offset >= p.rewound_to:
                    p.rewound_to = None
            elif offset > p.next:
                self._gap(topic, partition, p, offset, ts, rewinds)
        return rewinds

    def expect(self, records: Iterable[tuple[str, int, int, float]]) -> list[tuple[str, int, int]]:
        """Before a batch is processed: register the holes it leaves (a record beyond the cursor), so
        that `rewinding` says so while the batch is processed; returns the rewinds to make once it
        is. (Found after the batch, the attribution took the batch as read in order: a later
        impression decided a click whose own impression was in the hole.) `done` still advances
        the cursors."""
        rewinds: list[tuple[str, int, int]] = []
        cursors: dict[tuple[str, int], int] = {}
        for topic, partition, offset, _ in records:
            p = self.partitions.get((topic, partition))
            if p is None or p.next is None:
                continue  # no start known: `done` takes the first record as the cursor
            cursor = cursors.get((topic, partition), p.next)
            if offset == cursor:
                cursors[(topic, partition)] = offset + 1
            elif offset > cursor and p.rewound_to != cursor:
                self._rewind(topic, partition, p, cursor, offset, rewinds)
        return rewinds

    def _rewind(self, topic: str, partition: int, p: Partition, cursor: int, offset: int,
                rewinds: list[tuple[str, int, int]]) -> None:
        p.rewound_to, p.rewound_at = cursor, self.monotonic()
        rewinds.append((topic, partition, cursor))
        metrics.OFFSETS_REWOUND.labels(topic).inc(offset - cursor)
        log.warning("%s[%d]: offsets %d..%d were skipped unprocessed; fetching them again",
                    topic, partition, cursor, offset - 1)

    def _gap(self, topic: str, partition: int, p: Partition, offset: int, ts: float,
             rewinds: list[tuple[str, int, int]]) -> None:
        assert p.next is not None
        now = self.monotonic()
        if p.rewound_to != p.next:
            self._rewind(topic, partition, p, p.next, offset, rewinds)
        elif now - p.rewound_at > self.gap_grace_s:  # still there after the refetch: no such offsets
            metrics.OFFSETS_SKIPPED.labels(topic).inc(offset - p.next)
            log.warning("%s[%d]: offsets %d..%d do not exist (compaction or transaction markers)",
                        topic, partition, p.next, offset - 1)
            p.next, p.read_ts, p.rewound_to = offset + 1, max(p.read_ts, ts), None

    def lags(self, assigned: Iterable[tuple[str, int]], highwater: Callable[[str, int], int | None]
             ) -> dict[tuple[str, int], int]:
        """Records in each assigned partition past the highest processed one (a partition not yet
        fetched or processed is left out rather than guessed)."""
        out: dict[tuple[str, int], int] = {}
        for topic, partition in assigned:
            high = highwater(topic, partition)
            p = self.partitions.get((topic, partition))
            if high is not None and p is not None and p.last >= 0:
                out[(topic, partition)] = max(0, high - (p.last + 1))
        return out

    def unread(self, topic: str, partition: int, high: int | None) -> int | None:
        """Records of the partition not yet read contiguously (None: not known)."""
        p = self.partitions.get((topic, partition))
        if high is None:
            return None
        if p is None or p.next is None:
            return 0 if high == 0 else None
        return max(0, max(high, p.last + 1) - p.next)  # the highwater read may predate the last record

    def rewinding(self, topic: str) -> dict[int, float]:
        """Partitions of `topic` with a rewind outstanding, and the record time read contiguously
        in each: their later records may have been processed before the ones being fetched again."""
        return {partition: p.read_ts for (t, partition), p in self.partitions.items()
                if t == topic and p.rewound_to is not None}

    def read_ts(self, topic: str, partition: int) -> float:
        """The latest record time every record before which has been processed (0: none yet)."""
        p = self.partitions.get((topic, partition))
        return p.read_ts if p is not None else 0.0
