"""The Faust worker: clicks topic → session table + item windows → Feast online store (Redis),
and clicks + impressions → rewards per model version.

Three agents, one job each: `sessions` consumes the session-keyed clicks topic, keeps per-session
state in a table, dead-letters invalid events, forwards valid clicks re-keyed by item and hands
them to the reward attribution; `items` keeps per-item event-time windows; `impressions` hands the
inference log to the reward attribution (`streaming.attribution`). All batch events
(`take_events`) so each batch is one Redis round trip, and ack only after the batch's effects are
written (at-least-once, idempotent).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streaming import faust_patches, metrics
from streaming.attribution import ImpressionWatermark, RewardAttribution
from streaming.progress import SourceProgress
from streaming.topics import ITEM_TABLE, SESSION_TABLE, by_item_topic
from streaming.processor import (
    ItemBatchProcessor, ItemClick, RawRecord, SessionBatchProcessor, dead_letter_record, retry_until_done,
)
from streamrec.impressions import Impression, InvalidImpression
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings

log = logging.getLogger(__name__)

# How long the impression clock waits for the broker's partition ends; past it, it holds until the
# next measurement a second later (a click waits SETTLE_S anyway).
IMPRESSION_ENDS_TIMEOUT_S = 2.0


def create_app(settings: Settings) -> faust.App:
    """Build the worker app for `settings` (one app per process); refuses an unsupported Faust
    before any of its internals are patched."""
    faust_patches.check_faust_version()
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir / "worker" / "{conf.id}-data"),  # not the caller's cwd
        topic_partitions=settings.clicks_partitions,
        topic_replication_factor=1,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        web_host=settings.worker_web_host,
        web_bind=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        producer_linger_ms=5,
        stream_wait_empty=False,
        table_cleanup_interval=60.0,
    )
    clicks = app.topic(settings.clicks_topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw",
                       partitions=settings.clicks_partitions)
    dead_letters = app.topic(settings.dead_letter_topic, value_serializer="raw", partitions=1)
    impressions = app.topic(settings.impressions_topic, key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw", partitions=settings.clicks_partitions)
    by_item = app.topic(by_item_topic(settings), key_serializer="raw",
                        value_serializer="json", partitions=settings.clicks_partitions, internal=True)
    sessions = _key_partitioned_table(app, SESSION_TABLE, settings.clicks_partitions)
    items = _key_partitioned_table(app, ITEM_TABLE, settings.clicks_partitions)

    progress = SourceProgress()
    faust_patches.install_consumer_patches(
        app, {settings.clicks_topic, by_item_topic(settings), settings.impressions_topic}, progress.seeked)
    store = OnlineStore.from_url(settings.redis_url, timeout_s=settings.write_timeout_s)  # one timeout per batch
    attribution = RewardAttribution(store.client, settings.attribution_window_s, retry_until_done)
    watermark = ImpressionWatermark(rewinding=lambda: progress.rewinding(settings.impressions_topic))
    attribution.clock = watermark

    async def send_dead_letter(message: bytes) -> None:
        await dead_letters.send(value=message)

    async def forward(clicks: list[ItemClick]) -> None:
        """One message per by-item partition per batch, not one per click: the partition is the
        item key's partition, so the items table stays co-partitioned with its stream."""
        grouped: dict[int, list[dict[str, int]]] = {}
        for click in clicks:
            grouped.setdefault(item_partition(click.item_id, settings.clicks_partitions), []).append(click.to_json())
        for partition, payload in grouped.items():
            await by_item.send(value={"clicks": payload}, partition=partition)

    async def attribute_clicks(clicks) -> None:  # noqa: ANN001 - list[attribution.Click]
        await attribution.record(clicks=clicks)

    session_processor = SessionBatchProcessor(settings, store, sessions, send_dead_letter, forward, attribute_clicks)
    item_processor = ItemBatchProcessor(store, items)
    within = settings.flush_interval_ms / 1000

    async def processed(records: Iterable[tuple[str, int, int, float]],
                        holes: Iterable[tuple[str, int, int]] = ()) -> None:
        """Record a processed batch; fetch again what Faust skipped before it (streaming.progress),
        `holes` being those `progress.expect` found before the batch was processed."""
        for topic, partition, offset in [*holes, *progress.done(records)]:
            await app.consumer.seek(faust.types.TP(topic, partition), offset)

    @app.agent(clicks, name="sessions")
    async def process_sessions(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.flush_max_events, within=within):
            batch = [RawRecord(e.value, e.message.partition, e.message.offset, e.message.topic, e.message.timestamp)
                     for e in events]
            await session_processor.process(batch)
            await processed([(r.topic, r.partition, r.offset, r.timestamp or 0.0) for r in batch])

    @app.agent(by_item, name="items")
    async def process_items(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.flush_max_events, within=within):
            await item_processor.process([ItemClick.from_json(c) for e in events for c in _as_dict(e.value)["clicks"]])
            await processed([_position(e) for e in events])

    @app.agent(impressions, name="impressions")
    async def process_impressions(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.flush_max_events, within=within):
            valid = []
            for e in events:
                try:
                    valid.append(Impression.from_bytes(e.value))
                except InvalidImpression as invalid:
                    record = RawRecord(e.value, e.message.partition, e.message.offset, e.message.topic)
                    await send_dead_letter(dead_letter_record(record, f"impression: {invalid}"))
                    metrics.INVALID_IMPRESSIONS.inc()
            positions = [_position(e) for e in events]
            holes = progress.expect(positions)  # known while attributing: a later impression proves nothing then
            await attribution.record(impressions=valid)
            await processed(positions, holes)

    @app.timer(interval=1.0)
    async def decide_settled_clicks() -> None:
        """Clicks whose impression can no longer arrive (a session's last click, or none at all)."""
        await attribution.sweep()

    @app.timer(interval=min(60.0, settings.session_idle_s / 4))
    async def evict_idle_sessions() -> None:
        """A session idle for `session_idle_s` is over: its state leaves the worker's memory (its
        features stay readable in Redis until `session_ttl_s`; a later click starts afresh)."""
        metrics.SESSIONS_EVICTED.inc(await sessions.evict_idle(settings.session_idle_s))

    lag_reporter = metrics.LagReporter()

    @app.timer(interval=1.0)
    async def report_consumer_lag() -> None:
        """Lag per assigned partition: the highwater of the last fetch minus what the agents have
        processed (no broker request)."""
        lag_reporter.update(consumer_lags(app, progress))

    ends_at_assignment: dict[int, int] = {}  # impressions partition -> its end when first measured after assignment

    @app.timer(interval=1.0)
    async def measure_impression_progress() -> None:
        """The impression clock's input, against the partitions' ends as the broker has them now."""
        measured = await impression_progress(app, progress, settings.impressions_topic, ends_at_assignment)
        if measured is not None:  # not measured (broker unreachable): the clock holds where it was
            watermark.update(*measured)

    @app.page("/metrics")
    async def metrics_page(web, request):  # noqa: ANN001 - Faust web signature
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app


def consumer_lags(app: faust.App, progress: SourceProgress) -> dict[tuple[str, int], int]:
    """Per-partition lag from Faust's public consumer API; empty before the consumer has started."""
    try:
        assigned = app.consumer.assignment()
    except Exception:  # noqa: BLE001 - no consumer thread yet (starting or stopping)
        return {}

    def highwater(topic: str, partition: int) -> int | None:
        try:
            return app.consumer.highwater(faust.types.TP(topic, partition))
        except Exception:  # noqa: BLE001 - the partition was revoked since `assignment()`
            return None

    return progress.lags(((tp.topic, tp.partition) for tp in assigned), highwater)


async def impression_progress(app: faust.App, progress: SourceProgress, topic: str,
                              ends_at_assignment: dict[int, int],
                              ) -> tuple[dict[int, int | None], dict[int, float], float, dict[int, int | None]] | None:
    """For each assigned partition of the impressions topic: the records not yet read contiguously
    (None where it cannot be known yet: nothing processed since the last seek), the latest record
    time read contiguously, the wall time the ends were asked for, and the records below the end
    the partition had when first measured after its assignment not yet read (`ends_at_assignment`
    keeps those ends across calls, updated here: what a previous owner may have processed); None when the broker
    did not answer within `IMPRESSION_ENDS_TIMEOUT_S`.

    The ends come from the broker (`highwaters`: one ListOffsets request), not from the consumer's
    last fetch (`highwater`), which is stale while fetching stalls: every impression sent before
    the returned time is inside them."""
    asked_at = time.time()
    try:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == topic]
    except Exception:  # noqa: BLE001 - no consumer thread yet (starting or stopping)
        assigned = []
    first = ends_at_assignment
    for partition in set(first) - {tp.partition for tp in assigned}:
        del first[partition]  # revoked: a new assignment measures again
    if not assigned:
        return {}, {}, asked_at, {}
    try:
        ends = await asyncio.wait_for(app.consumer.highwaters(*assigned), IMPRESSION_ENDS_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - broker unreachable or slow, or revoked meanwhile: measure next time
        return None
    unread = {tp.partition: progress.unread(topic, tp.partition, ends.get(tp)) for tp in assigned}
    for tp in assigned:
        if tp.partition not in first and ends.get(tp) is not None:
            first[tp.partition] = ends[tp]
    inherited = {p: progress.unread(topic, p, first.get(p)) for p in unread}
    return unread, {p: progress.read_ts(topic, p) for p in unread}, asked_at, inherited


def _position(event) -> tuple[str, int, int, float]:  # noqa: ANN001 - a Faust event
    message = event.message
    return message.topic, message.partition, message.offset, message.timestamp or 0.0


class KeyPartitionedTable(faust.Table):
    """A table whose changelog partition is the key's partition, written a batch at a time.

    Faust's default partition is "the partition of the current event", which is wrong inside a
    batched agent (the current event is the batch's last); the producers of the source topics
    key by the same bytes with the same murmur2 partitioner, so this keeps tables co-partitioned.

    `put_many` replaces per-key assignment: Faust queues one changelog message per assignment
    in a buffer it drains one event-loop turn per message, and every commit waits for that
    buffer, which stalled the stream for seconds at 1,000 events/s. Here a batch's changelog
    messages go straight to the producer's accumulator; Faust's commit still flushes the
    producer before it commits source offsets, so the changelog is durable first (at-least-once).

    Why it stays (Faust 0.15.3): `table[key] = value` still goes through `Table.on_key_set` ->
    `send_changelog` -> `send_soon` into that buffer; the direct path took freshness p99 from
    4.1 s to 0.15 s at 1,000 new sessions/s (commit 9695ab1). Writing `self.data` skips
    `ManagedUserDict.__setitem__`/`on_key_set`: their key TTL is for windowed tables only, and
    their sensor call only counts table writes for Faust's monitor, which streamrec does not read;
    `streaming.faust_patches` fingerprints every function bypassed here.
    """

    def partition_for_key(self, key: bytes) -> int:  # type: ignore[override]
        return key_partition(key, int(self.partitions))  # type: ignore[arg-type]

    @property
    def written_at(self) -> dict[bytes, float]:
        """Monotonic time each key was last written here (keys recovered from the changelog are
        stamped by the first `evict_idle`)."""
        if not hasattr(self, "_written_at"):
            self._written_at: dict[bytes, float] = {}
        return self._written_at

    async def put_many(self, values: Mapping[bytes, object]) -> None:
        """Set every key and send its changelog message; same bytes as `table[key] = value`."""
        written_at, now = self.written_at, time.monotonic()
        for key, value in values.items():
            self.data[key] = value
            written_at[key] = now
            value_bytes, _ = self.changelog_topic.prepare_value(value, self.value_serializer)
            await self._send_key_changelog(key, value_bytes)

    async def _send_key_changelog(self, key: bytes, value: bytes | None) -> None:
        """One changelog message (None: a tombstone) straight to the producer's accumulator.
        Its own name: it used to shadow Faust's `Collection._send_changelog` with another
        signature, which only Faust's object tables (SetTable) call, never this one."""
        key_bytes, _ = self.changelog_topic.prepare_key(key, self.key_serializer)
        sent = await self.app.producer.send(self.changelog_topic.get_topic_name(), key_bytes, value,
                                            self.partition_for_key(key), None, None)
        sent.add_done_callback(_count_changelog_failure)  # type: ignore[attr-defined]

    async def evict_idle(self, idle_s: float) -> int:
        """Forget keys not written for `idle_s`, with a tombstone in the changelog so recovery
        forgets them too; returns how many. Bounds the worker's memory by the traffic of one idle
        window instead of letting every session ever seen stay in the table."""
        written_at, now = self.written_at, time.monotonic()
        for key in list(self.data.keys()):
            written_at.setdefault(key, now)
        cutoff = now - idle_s
        idle = [key for key, at in written_at.items() if at < cutoff]
        evicted = 0
        for key in idle:
            if written_at.get(key, now) >= cutoff:
                continue  # written again while earlier tombstones were being sent
            del written_at[key]
            self.data.pop(key, None)
            await self._send_key_changelog(key, None)
            evicted += 1
        return evicted


def _count_changelog_failure(sent: "asyncio.Future") -> None:
    if sent.cancelled() or sent.exception() is not None:
        metrics.CHANGELOG_FAILURES.inc()
        log.error("changelog write failed: %r", None if sent.cancelled() else sent.exception())


def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as kafka-python, aiokafka and the Java client)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@lru_cache(maxsize=1 << 16)
def item_partition(item_id: int, partitions: int) -> int:
    """Cached: items recur (every click is forwarded by its item, and item rows are keyed by it)."""
    return key_partition(str(item_id).encode(), partitions)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java `Utils.murmur2`), the same value as `aiokafka.partitioner.murmur2`
    at about half its cost: the 4-byte little-endian words are unpacked in one call."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & 3
    if tail:
        base = words * 4
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def _key_partitioned_table(app: faust.App, name: str, partitions: int) -> KeyPartitionedTable:
    table = KeyPartitionedTable(app, name=name, default=None, key_type=bytes, partitions=partitions)
    return app.tables.add(table)  # type: ignore[return-value]


def _as_dict(value: object) -> dict:
    return value if isinstance(value, dict) else json.loads(value)  # type: ignore[arg-type]


def run_worker(settings: Settings, loglevel: str = "WARNING") -> None:
    """Run the worker in the foreground until SIGTERM/SIGINT."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    level = logging.getLevelName(loglevel.upper())
    for noisy in ("aiokafka", "faust", "mode"):  # per-message debug records cost ~10% CPU otherwise
        logging.getLogger(noisy).setLevel(level)
    worker.execute_from_commandline()
