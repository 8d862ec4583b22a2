"""Turn batches of raw click records into streaming features in the online store.

Kept free of Faust so it can be tested with plain dicts as tables. Order inside a batch:
validate → update state → write full rows to the online store → remember state (table) →
only then the caller acks the offsets. Rows are full overwrites, so replaying a batch after a
crash rewrites the same values: at-least-once delivery with idempotent effect.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TypeVar

from redis.exceptions import RedisError

from streamrec import feature_schema as s
from streaming import item_windows, metrics, session_state
from streaming.attribution import Click
from streamrec.events import InvalidEvent, parse_event
from streamrec.online_store import OnlineStore, Row
from streamrec.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RawRecord:
    """A Kafka record as the worker received it."""

    value: bytes | None
    partition: int
    offset: int
    topic: str = ""
    timestamp: float | None = None  # the record's Kafka timestamp (CreateTime), seconds


@dataclass(frozen=True)
class ItemClick:
    """A valid click forwarded to the item-partitioned stream."""

    item_id: int
    ts_ms: int
    partition: int  # of the clicks topic: with `offset`, the click's identity
    offset: int

    def to_json(self) -> dict[str, int]:
        return {"item_id": self.item_id, "ts_ms": self.ts_ms, "p": self.partition, "o": self.offset}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> "ItemClick":
        return cls(int(data["item_id"]), int(data["ts_ms"]), int(data["p"]), int(data["o"]))


# Kafka refuses messages over ~1 MB (broker and producer defaults); a near-1 MB junk value, base64'd
# or JSON-escaped, would not fit, and a dead letter that cannot be sent would stop the agent.
DEAD_LETTER_MAX_VALUE_BYTES = 128 * 1024  # JSON-escaped, at most 6x: still < 1 MB


def dead_letter_record(record: RawRecord, reason: str) -> bytes:
    """The dead-letter message: why, where from, and the original bytes (the first 128 KiB of a
    bigger value, marked `truncated` with the full size and SHA-256, so the record always fits)."""
    raw = record.value or b""
    kept = raw[:DEAD_LETTER_MAX_VALUE_BYTES]
    extra: dict[str, object] = {}
    if len(kept) < len(raw):
        extra = {"truncated": True, "original_bytes": len(raw), "original_sha256": hashlib.sha256(raw).hexdigest()}
    try:
        original: dict[str, object] = {"value": kept.decode("utf-8")}
    except UnicodeDecodeError:
        original = {"value_b64": base64.b64encode(kept).decode()}
    return json.dumps(
        {"reason": reason, "topic": record.topic, "partition": record.partition, "offset": record.offset,
         "dead_lettered_at": time.time(), **original, **extra}
    ).encode()


DeadLetter = Callable[[bytes], Awaitable[object]]
Forward = Callable[[list[ItemClick]], Awaitable[object]]
ClicksHook = Callable[[list[Click]], Awaitable[object]]


class SessionBatchProcessor:
    """clicks topic → session features (and item clicks forwarded for the trending windows)."""

    def __init__(self, settings: Settings, store: OnlineStore, sessions: MutableMapping,
                 dead_letter: DeadLetter, forward: Forward, on_clicks: ClicksHook | None = None) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.dead_letter = dead_letter
        self.forward = forward
        self.on_clicks = on_clicks  # the reward attribution: every valid click, after the features

    async def process(self, batch: list[RawRecord]) -> int:
        """Apply a batch; returns the number of newly applied clicks."""
        touched: dict[str, session_state.SessionState] = {}
        forwarded: list[ItemClick] = []
        clicks: list[Click] = []
        written_stamps: list[float | None] = []  # of the records whose features this batch writes
        applied = resent = 0
        now = time.time()
        for record in batch:
            try:
                event = parse_event(record.value, max_bytes=self.settings.max_event_bytes,
                                    max_future_skew_s=self.settings.max_future_skew_s, now=now)
            except InvalidEvent as invalid:
                await self.dead_letter(dead_letter_record(record, invalid.reason))
                metrics.EVENTS.labels("dead_lettered").inc()
                continue
            ts_ms = int(event.ts * 1000)
            previous = touched.get(event.session_id) or self.sessions.get(event.session_id.encode())
            identity = session_state.event_identity(event.item_id, event.ts, event.event_type)
            if session_state.resent_copy(previous, identity, record.partition, record.offset):
                resent += 1  # the same event sent twice: neither applied nor forwarded
                continue
            state, changed = session_state.apply_click(
                previous, event.item_id, ts_ms, record.partition, record.offset, self.settings.recent_items,
                identity,
            )
            # Rewrite even an unchanged (redelivered) session: its last write may be what was lost.
            touched[event.session_id] = state
            written_stamps.append(record.timestamp)
            applied += changed
            # Always forward: the item side dedupes by (partition, offset), and a forward lost in a
            # crash is only resent if we resend on redelivery.
            forwarded.append(ItemClick(event.item_id, ts_ms, record.partition, record.offset))
            clicks.append(Click(event.session_id, event.item_id, record.timestamp or event.ts,
                                record.partition, record.offset))
        if forwarded:
            await self.forward(forwarded)
        if touched:
            rows = [session_row(sid, st) for sid, st in touched.items()]
            with metrics.WRITE_SECONDS.labels(s.SESSION_FEATURES_VIEW).time():
                await write_until_done(self.store, s.SESSION_FEATURES_VIEW, rows, self.settings.session_ttl_s)
            metrics.observe_freshness(written_stamps, time.time())
            await put_state(self.sessions, {sid.encode(): st for sid, st in touched.items()})
        if clicks and self.on_clicks is not None:
            await self.on_clicks(clicks)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.EVENTS.labels("applied").inc(applied)
        metrics.EVENTS.labels("duplicate").inc(len(forwarded) - applied + resent)  # redelivered or re-sent
        return applied


async def write_until_done(store: OnlineStore, view: str, rows: list[Row], expire_s: int | None = None) -> None:
    """Write, retrying with backoff while Redis is unreachable (see `retry_until_done`)."""
    # The store bounds the whole batch by its timeout and drops a connection left mid-reply, so
    # the retry starts on a clean one.
    await retry_until_done(lambda: store.write(view, rows, expire_s=expire_s))


async def retry_until_done(call: Callable[[], Awaitable[T]]) -> T:
    """Run `call` until Redis takes it, with backoff.

    The batch is not acked until this returns, so stalling here (rather than dropping the
    batch or crashing the agent) is what keeps an outage from losing clicks.
    """
    delay = 0.05
    while True:
        try:
            return await call()
        except (RedisError, OSError) as exc:
            metrics.WRITE_RETRIES.inc()
            log.warning("online store write failed (%s); retrying in %.2fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def put_state(table: MutableMapping, values: dict[bytes, object]) -> None:
    """Store a batch of states: `put_many` on a worker table, plain assignment on a test dict."""
    put_many = getattr(table, "put_many", None)
    if put_many is not None:
        await put_many(values)
    else:
        table.update(values)


def session_row(session_id: str, state: session_state.SessionState) -> Row:
    return Row(
        key=session_id,
        values={s.RECENT_ITEMS: state["recent"], s.CLICK_COUNT: state["count"], s.LAST_EVENT_TS: state["last_ts"]},
        event_ts=state["last_ts"] / 1000,
    )


class ItemBatchProcessor:
    """Item-partitioned clicks → windowed counts per item (trending features)."""

    def __init__(self, store: OnlineStore, items: MutableMapping) -> None:
        self.store = store
        self.items = items
        self.stream_time_ms = 0

    async def process(self, batch: list[ItemClick]) -> int:
        if not batch:
            return 0
        self.stream_time_ms = max(self.stream_time_ms, max(c.ts_ms for c in batch))
        now_ms = self.stream_time_ms
        by_item: dict[int, list[tuple[int, int, int]]] = {}
        for click in batch:
            by_item.setdefault(click.item_id, []).append((click.ts_ms, click.partition, click.offset))
        touched: dict[int, item_windows.ItemWindows] = {}
        counted = 0
        for item_id, clicks in by_item.items():
            previous = self.items.get(str(item_id).encode())
            touched[item_id], changed = item_windows.apply_clicks(previous, clicks, now_ms)
            counted += changed
        rows = []
        for item_id, state in touched.items():
            five, hour = item_windows.window_counts(state, now_ms)
            rows.append(Row(item_id, {s.CLICKS_5M: five, s.CLICKS_1H: hour, s.WINDOW_END_TS: now_ms}, now_ms / 1000))
        with metrics.WRITE_SECONDS.labels(s.ITEM_TRENDING_VIEW).time():
            await write_until_done(self.store, s.ITEM_TRENDING_VIEW, rows)
        metrics.ITEM_CLICKS.labels("counted").inc(counted)
        metrics.ITEM_CLICKS.labels("duplicate").inc(len(batch) - counted)
        await put_state(self.items, {str(item_id).encode(): st for item_id, st in touched.items()})
        return counted
