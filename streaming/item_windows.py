"""Per-item click counts in one-minute event-time buckets, for the trending features.

Like session state, each item state keeps the highest applied offset per source partition of
the clicks topic, so a click forwarded twice (at-least-once) is counted once.
"""

from __future__ import annotations

from typing import TypedDict

BUCKET_MS = 60_000
FIVE_MINUTES_MS = 5 * 60_000
HOUR_MS = 60 * 60_000


class ItemWindows(TypedDict):
    buckets: dict[str, int]  # bucket start (unix ms, as str for JSON) -> clicks
    applied: dict[str, int]  # clicks-topic partition -> highest applied offset


def empty_item() -> ItemWindows:
    return {"buckets": {}, "applied": {}}


def apply_click(
    state: ItemWindows | None, ts_ms: int, partition: int, offset: int, now_ms: int
) -> tuple[ItemWindows, bool]:
    """Count one click; drop buckets that fell out of the longest window."""
    current = state if state is not None else empty_item()
    if offset <= current["applied"].get(str(partition), -1):
        return current, False
    horizon = now_ms - HOUR_MS
    buckets = {b: n for b, n in current["buckets"].items() if int(b) + BUCKET_MS > horizon}
    if ts_ms + BUCKET_MS > horizon:  # a click older than an hour counts in no window
        bucket = str(ts_ms - ts_ms % BUCKET_MS)
        buckets[bucket] = buckets.get(bucket, 0) + 1
    applied = dict(current["applied"])
    applied[str(partition)] = offset
    return {"buckets": buckets, "applied": applied}, True


def window_counts(state: ItemWindows, now_ms: int) -> tuple[int, int]:
    """Clicks in the last 5 minutes and the last hour before `now_ms` (bucket granularity)."""
    five = hour = 0
    for bucket, count in state["buckets"].items():
        end = int(bucket) + BUCKET_MS
        if end > now_ms - HOUR_MS:
            hour += count
            if end > now_ms - FIVE_MINUTES_MS:
                five += count
    return five, hour
