"""The stream archiver: clicks and impressions topics → hive-partitioned parquet in the offline store.

Exactly once in effect without Kafka commits: the archive's file names are its commit log
(`streamrec.archive`). On start the archiver removes temp files a killed run left, reads the highest
archived offset of every partition from the names and seeks each partition to the next one. A file
is written under a temp name and renamed into place, so a kill leaves either the whole file (its
offsets are never read again) or no file (they are read again). A file whose range overlaps an
archived one is refused (`ArchiveOverlap`). One archiver per archive folder: a lock file says so.

Records are buffered per partition and written every `archive_flush_rows` records or
`archive_flush_s` seconds; a batch is split where its records' event-time hour changes, so each
file lies in one `date=/hour=` folder and covers one contiguous offset range. Malformed records
(what the worker dead-letters) are skipped and counted, and listed in their file's metadata, so
every offset of a range is accounted for. Clicks are validated as the worker does, with the
record's own Kafka timestamp as "now" for the future-skew rule, so a re-read decides the same.
"""

from __future__ import annotations

import bisect
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import Counter, Gauge, Histogram

from streamrec import archive as layout
from streamrec import feature_schema as s
from streamrec.events import InvalidEvent, parse_event
from streamrec.impressions import Impression, InvalidImpression
from streamrec.settings import Settings

log = logging.getLogger("streamrec.archive")

ROWS = Counter("streamrec_archive_rows_total", "Records written to the archive as rows, by topic kind.", ["kind"])
SKIPPED = Counter("streamrec_archive_skipped_total",
                  "Malformed records the archive skipped (listed in their file's metadata), by topic kind.", ["kind"])
FILES = Counter("streamrec_archive_files_total", "Parquet files written to the archive, by topic kind.", ["kind"])
LAG = Gauge("streamrec_archive_lag_records", "Records in the topic not yet in the archive, by topic kind.", ["kind"])
DELAY = Histogram("streamrec_archive_delay_seconds",
                  "From a record's Kafka timestamp to the moment its file is in place (newest record of each file).",
                  buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300))

_MAX_TS = 32_503_680_000.0  # year 3000: later event times cannot be hive folders (and are no real events)
_LOG_EVERY_S = 5.0
_REFRESH_PARTITIONS_S = 10.0


@dataclass(frozen=True, slots=True)
class Consumed:
    """One Kafka record as the archive needs it: where it was, when, and its row (None: malformed)."""

    offset: int
    kafka_ts_s: float | None
    row: dict | None
    event_ts_s: float = 0.0  # event time, unix seconds (valid records only)


def click_row(value: bytes | None, kafka_ts_s: float | None, settings: Settings) -> tuple[dict, float]:
    """The archive row of a click record and its event time; InvalidEvent when the worker would dead-letter it."""
    if value is None:
        raise InvalidEvent("empty message")
    event = parse_event(value, max_bytes=settings.max_event_bytes, max_future_skew_s=settings.max_future_skew_s,
                        now=kafka_ts_s)
    return ({s.SESSION_KEY: event.session_id, s.ITEM_KEY: event.item_id, "ts": event.ts, "user_id": event.user_id,
             "event_type": event.event_type}, event.ts)


def impression_row(value: bytes | None, kafka_ts_s: float | None, settings: Settings) -> tuple[dict, float]:
    """The archive row of an impression record and its event time; InvalidImpression when unusable."""
    imp = Impression.from_bytes(value)
    if not 0 < imp.ts < _MAX_TS:
        raise InvalidImpression(f"ts {imp.ts} is not a plausible unix time")
    return ({"request_id": imp.request_id, s.SESSION_KEY: imp.session_id, "ts": imp.ts,
             "model_version": imp.model_version, "policy": imp.policy, "propensity": imp.propensity,
             "stage": imp.stage, "degraded": imp.degraded, "items": list(imp.items), "scores": list(imp.scores),
             "shadow": imp.shadow, "experiment": imp.experiment}, imp.ts)


_Parser = Callable[[bytes | None, float | None, Settings], tuple[dict, float]]
_PARSERS: dict[str, tuple[_Parser, type[Exception]]] = {
    layout.CLICKS: (click_row, InvalidEvent), layout.IMPRESSIONS: (impression_row, InvalidImpression)}


def consume(kind: str, offset: int, value: bytes | None, kafka_ts_ms: int | None, settings: Settings) -> Consumed:
    """Parse one record of `kind`'s topic; a malformed one becomes a row-less Consumed (skipped)."""
    parser, invalid = _PARSERS[kind]
    kafka_ts_s = kafka_ts_ms / 1000 if kafka_ts_ms is not None and kafka_ts_ms >= 0 else None
    try:
        row, event_ts = parser(value, kafka_ts_s, settings)
    except invalid:
        return Consumed(offset, kafka_ts_s, None)
    return Consumed(offset, kafka_ts_s, row, event_ts)


def hour_segments(records: list[Consumed]) -> Iterator[list[Consumed]]:
    """Split offset-ordered records where the event-time hour of a valid record changes; a malformed
    record joins the segment it falls in, so the segments cover the batch's offsets without gaps."""
    segment: list[Consumed] = []
    hour: int | None = None
    for record in records:
        record_hour = None if record.row is None else int(record.event_ts_s // 3600)
        if record_hour is not None and hour is not None and record_hour != hour:
            yield segment
            segment, hour = [], None
        segment.append(record)
        hour = record_hour if record_hour is not None and hour is None else hour
    if segment:
        yield segment


class ArchiveWriter:
    """The files of one topic's archive: resume point per partition, overlap refusal, atomic writes."""

    def __init__(self, kind: str, archive_path: Path) -> None:
        self.kind = kind
        self.schema = layout.SCHEMAS[kind]
        self.root = layout.kind_dir(archive_path, kind)
        self.root.mkdir(parents=True, exist_ok=True)
        self.removed_temp = layout.temp_files(self.root)
        for leftover in self.removed_temp:
            leftover.unlink(missing_ok=True)
        files = layout.list_files(self.root)
        layout.check_disjoint(files)
        self._ranges: dict[int, list[tuple[int, int]]] = {}
        for f in files:
            self._ranges.setdefault(f.partition, []).append((f.first, f.last))
        self.files_found = len(files)
        self.rows = self.skipped = self.files = 0  # written by this run
        self.gaps = sum(1 for ranges in self._ranges.values() for a, b in zip(ranges, ranges[1:]) if b[0] > a[1] + 1)

    def next_offset(self, partition: int) -> int | None:
        """First offset of `partition` not yet archived; None if nothing of it is archived."""
        ranges = self._ranges.get(partition)
        return ranges[-1][1] + 1 if ranges else None

    def overlapping(self, partition: int, first: int, last: int) -> tuple[int, int] | None:
        ranges = self._ranges.get(partition, [])
        i = bisect.bisect_right(ranges, (last, float("inf")))  # ranges starting at or before `last`
        if i and ranges[i - 1][1] >= first:
            return ranges[i - 1]
        return None

    def write(self, partition: int, records: list[Consumed]) -> list[Path]:
        """Archive offset-ordered records of one partition: one file per event-time hour segment."""
        return [self._write_segment(partition, seg) for seg in hour_segments(records)]

    def _write_segment(self, partition: int, records: list[Consumed]) -> Path:
        first, last = records[0].offset, records[-1].offset
        clash = self.overlapping(partition, first, last)
        if clash is not None:
            raise layout.ArchiveOverlap(f"{self.kind} partition {partition}: offsets {first}..{last} overlap the "
                                        f"archived {clash[0]}..{clash[1]}; refusing to write duplicates")
        rows = [r for r in records if r.row is not None]
        skipped = [r.offset for r in records if r.row is None]
        if rows:
            hour_ts = rows[0].event_ts_s
        else:  # only malformed records: file them under their Kafka time (they hold no rows)
            hour_ts = records[-1].kafka_ts_s if records[-1].kafka_ts_s is not None else time.time()
        table = self._table(partition, rows).replace_schema_metadata(
            {layout.SKIPPED_KEY: json.dumps(skipped).encode()})
        folder = layout.hour_dir(self.root, hour_ts)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / layout.file_name(partition, first, last)
        tmp = path.with_name(path.name + layout.TEMP_SUFFIX)
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(folder)
        bisect.insort(self._ranges.setdefault(partition, []), (first, last))
        self.rows, self.skipped, self.files = self.rows + len(rows), self.skipped + len(skipped), self.files + 1
        ROWS.labels(self.kind).inc(len(rows))
        SKIPPED.labels(self.kind).inc(len(skipped))
        FILES.labels(self.kind).inc()
        newest = max((r.kafka_ts_s for r in records if r.kafka_ts_s is not None), default=None)
        if newest is not None:
            DELAY.observe(max(0.0, time.time() - newest))
        return path

    def _table(self, partition: int, rows: list[Consumed]) -> pa.Table:
        columns: dict[str, list] = {name: [r.row[name] for r in rows if r.row is not None] for name in self.schema.names
                                    if name not in (layout.KAFKA_PARTITION, layout.KAFKA_OFFSET,
                                                    layout.KAFKA_TIMESTAMP, s.EVENT_TIMESTAMP)}
        columns[layout.KAFKA_PARTITION] = [partition] * len(rows)
        columns[layout.KAFKA_OFFSET] = [r.offset for r in rows]
        columns[layout.KAFKA_TIMESTAMP] = [None if r.kafka_ts_s is None else int(r.kafka_ts_s * 1_000_000)
                                           for r in rows]
        columns[s.EVENT_TIMESTAMP] = [int(round(r.event_ts_s * 1_000_000)) for r in rows]
        return pa.Table.from_pydict({name: pa.array(columns[name], type=self.schema.field(name).type)
                                     for name in self.schema.names}, schema=self.schema)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def archive_lock(archive_path: Path) -> Iterator[None]:
    """Hold the archive folder's lock: a second archiver would write overlapping ranges."""
    archive_path.mkdir(parents=True, exist_ok=True)
    with open(archive_path / ".archiver.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another archiver is writing {archive_path}; run one per archive folder") from None
        yield


@dataclass
class _Buffer:
    records: list[Consumed] = field(default_factory=list)
    since: float = 0.0


class Archiver:
    """Consume the clicks and impressions topics and archive them (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = {settings.clicks_topic: layout.CLICKS, settings.impressions_topic: layout.IMPRESSIONS}
        self.writers = {kind: ArchiveWriter(kind, settings.archive_path) for kind in layout.KINDS}
        self.buffers: dict[tuple[str, int], _Buffer] = {}
        self.stopping = False
        self.consumer: Any = None  # kafka.KafkaConsumer, made in run()

    def _consumer(self):  # -> kafka.KafkaConsumer
        from kafka import KafkaConsumer

        return KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             allow_auto_create_topics=False, fetch_max_wait_ms=100, request_timeout_ms=30_000,
                             client_id="streamrec-archiver")

    def _assign(self) -> list:
        """Assign every partition of both topics (those that exist), each at its archive's resume offset."""
        from kafka import TopicPartition

        wanted = []
        for topic in self.topics:
            for p in sorted(self.consumer.partitions_for_topic(topic) or ()):
                wanted.append(TopicPartition(topic, p))
        if set(wanted) != set(self.consumer.assignment()):
            self.flush(force=True)
            self.consumer.assign(wanted)
            for tp in wanted:
                resume = self.writers[self.topics[tp.topic]].next_offset(tp.partition)
                if resume is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, resume)
            log.info("archiving %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in wanted) or "nothing yet")
        return wanted

    def flush(self, force: bool = False) -> None:
        """Write every partition buffer that is full, old enough, or all of them when `force`."""
        now = time.monotonic()
        for (topic, partition), buffer in list(self.buffers.items()):
            if buffer.records and (force or len(buffer.records) >= self.settings.archive_flush_rows
                                   or now - buffer.since >= self.settings.archive_flush_s):
                self.writers[self.topics[topic]].write(partition, buffer.records)
                del self.buffers[(topic, partition)]

    def _take(self, polled: dict) -> None:
        now = time.monotonic()
        for tp, records in polled.items():
            kind = self.topics[tp.topic]
            buffer = self.buffers.setdefault((tp.topic, tp.partition), _Buffer(since=now))
            for record in records:
                buffer.records.append(consume(kind, record.offset, record.value, record.timestamp, self.settings))
            if len(buffer.records) >= self.settings.archive_flush_rows:
                self.writers[kind].write(tp.partition, buffer.records)
                del self.buffers[(tp.topic, tp.partition)]

    def lag(self, assigned: list) -> dict[str, int]:
        """Records per topic kind that are in Kafka but not yet archived."""
        ends = self.consumer.end_offsets(assigned) if assigned else {}
        behind = {kind: 0 for kind in layout.KINDS}
        for tp, end in ends.items():
            kind = self.topics[tp.topic]
            behind[kind] += max(0, end - (self.writers[kind].next_offset(tp.partition) or 0))
        for kind, n in behind.items():
            LAG.labels(kind).set(n)
        return behind

    def run(self, max_seconds: float | None = None) -> None:
        """Archive until SIGTERM/SIGINT (or `max_seconds`), then write what is buffered and return."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for kind, writer in self.writers.items():
            log.info("%s archive: %d files, %d temp files of a killed run removed, %d gaps between ranges",
                     kind, writer.files_found, len(writer.removed_temp), writer.gaps)
        self.consumer = self._consumer()
        started = last_log = last_refresh = time.monotonic()
        try:
            assigned = self._assign()
            while not self.stopping and (max_seconds is None or time.monotonic() - started < max_seconds):
                polled = self.consumer.poll(timeout_ms=200, max_records=self.settings.archive_flush_rows)
                self._take(polled)
                self.flush()
                now = time.monotonic()
                if now - last_refresh >= _REFRESH_PARTITIONS_S:
                    assigned, last_refresh = self._assign(), now
                if now - last_log >= _LOG_EVERY_S:
                    self._log_progress(assigned)
                    last_log = now
            self.flush(force=True)
            self._log_progress(assigned)
        finally:
            self.consumer.close(autocommit=False)

    def _log_progress(self, assigned: list) -> None:
        behind = self.lag(assigned)
        log.info("archived " + "; ".join(
            f"{kind}: {w.rows} rows, {w.skipped} skipped, {w.files} files, {behind[kind]} records behind"
            for kind, w in self.writers.items()))

    def _stop(self, signum, frame) -> None:  # noqa: ANN001 - signal handler signature
        self.stopping = True


def run_archiver(settings: Settings, max_seconds: float | None = None) -> None:
    """`streamrec archive`: the lock, the optional metrics server, the loop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO lines (connections, metadata) drown ours
    with archive_lock(settings.archive_path):
        if settings.archive_metrics_port:
            from prometheus_client import start_http_server

            start_http_server(settings.archive_metrics_port, addr=settings.worker_web_host)
        log.info("archiving %s and %s from %s into %s", settings.clicks_topic, settings.impressions_topic,
                 settings.kafka_bootstrap, settings.archive_path)
        Archiver(settings).run(max_seconds)

