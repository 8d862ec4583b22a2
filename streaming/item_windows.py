"""Per-item click counts in one-minute event-time buckets, for the trending features.

Like session state, each item state keeps the highest applied offset per source partition of
the clicks topic, so a click forwarded twice (at-least-once) is counted once.
"""

from __future__ import annotations

from typing import TypedDict

from streamrec import feature_schema as s

BUCKET_MS = s.TRENDING_BUCKET_MS
FIVE_MINUTES_MS = s.CLICKS_5M_WINDOW_MS
HOUR_MS = s.CLICKS_1H_WINDOW_MS


class ItemWindows(TypedDict):
    buckets: dict[str, int]  # bucket start (unix ms, as str for JSON) -> clicks
    applied: dict[str, int]  # clicks-topic partition -> highest applied offset


def empty_item() -> ItemWindows:
    return {"buckets": {}, "applied": {}}


def apply_click(
    state: ItemWindows | None, ts_ms: int, partition: int, offset: int, now_ms: int
) -> tuple[ItemWindows, bool]:
    """Count one click; drop buckets that fell out of the longest window."""
    new, counted = apply_clicks(state, [(ts_ms, partition, offset)], now_ms)
    return new, counted > 0


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


def apply_clicks(
    state: ItemWindows | None, clicks: list[tuple[int, int, int]], now_ms: int
) -> tuple[ItemWindows, int]:
    """`apply_click` for all of one item's clicks of a batch, (ts_ms, partition, offset) in offset
    order per partition: the same state and count, with one copy of the buckets instead of one
    per click (the item side's hot loop). Returns the state and how many clicks counted."""
    current = state if state is not None else empty_item()
    applied = dict(current["applied"])
    horizon = now_ms - HOUR_MS
    buckets: dict[str, int] | None = None
    counted = 0
    for ts_ms, partition, offset in clicks:
        key = str(partition)
        if offset <= applied.get(key, -1):
            continue
        if buckets is None:
            buckets = {b: n for b, n in current["buckets"].items() if int(b) + BUCKET_MS > horizon}
        start = ts_ms - ts_ms % BUCKET_MS
        if start + BUCKET_MS > horizon:  # a bucket that ended over an hour ago counts in no window
            buckets[str(start)] = buckets.get(str(start), 0) + 1
        applied[key] = offset
        counted += 1
    if buckets is None:
        return current, 0
    return {"buckets": buckets, "applied": applied}, counted
