"""The stream archive's layout on disk, and its reader: clicks and impressions as hive-partitioned parquet.

`streaming.archive` writes it; training (the continual learner) and Feast (`feature_repo`) read it.

Layout, by event time (UTC)::

    <archive_path>/<clicks|impressions>/date=YYYY-MM-DD/hour=HH/p{partition}-o{first:012d}-{last:012d}.parquet

Each file holds the valid records of one topic partition's offsets `first..last` (both included) and
accounts for every offset of that range: a record is either a row or listed in the file's metadata
as skipped (malformed). Ranges of one partition never overlap, so a (partition, offset) is in the
archive at most once, and the archiver resumes after the highest archived offset: the files
themselves are the archive's commit log (no Kafka commit is involved). A file appears whole or not
at all (written under a `.tmp` name, then renamed); readers ignore `.tmp` files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamrec import feature_schema as s
from streamrec.interactions import Interactions

CLICKS = "clicks"
IMPRESSIONS = "impressions"
KINDS = (CLICKS, IMPRESSIONS)

KAFKA_PARTITION = "kafka_partition"
KAFKA_OFFSET = "kafka_offset"
KAFKA_TIMESTAMP = "kafka_timestamp"  # the record's Kafka timestamp (producer CreateTime), when it has one
TIMESTAMP = pa.timestamp("us", tz="UTC")

_KAFKA_COLUMNS = [(KAFKA_PARTITION, pa.int32()), (KAFKA_OFFSET, pa.int64()), (KAFKA_TIMESTAMP, TIMESTAMP)]
CLICK_SCHEMA = pa.schema([
    (s.SESSION_KEY, pa.string()), (s.ITEM_KEY, pa.int64()), ("ts", pa.float64()), ("user_id", pa.string()),
    ("event_type", pa.string()), *_KAFKA_COLUMNS, (s.EVENT_TIMESTAMP, TIMESTAMP),
])
IMPRESSION_SCHEMA = pa.schema([
    ("request_id", pa.string()), (s.SESSION_KEY, pa.string()), ("ts", pa.float64()), ("model_version", pa.string()),
    ("policy", pa.string()), ("propensity", pa.float64()), ("stage", pa.string()), ("degraded", pa.bool_()),
    ("items", pa.list_(pa.int64())), ("scores", pa.list_(pa.float64())), ("shadow", pa.bool_()),
    ("experiment", pa.string()), *_KAFKA_COLUMNS, (s.EVENT_TIMESTAMP, TIMESTAMP),
])
SCHEMAS = {CLICKS: CLICK_SCHEMA, IMPRESSIONS: IMPRESSION_SCHEMA}

SKIPPED_KEY = b"streamrec.skipped_offsets"  # parquet metadata: JSON list of the range's malformed offsets
TEMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^p(\d+)-o(\d{12,})-(\d{12,})\.parquet$")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR_DIR = re.compile(r"^hour=(\d{2})$")


class ArchiveOverlap(RuntimeError):
    """A file would archive offsets that another file already holds: writing it would duplicate rows."""


@dataclass(frozen=True, order=True)
class ArchivedFile:
    """One archive file: the offsets `first..last` of one partition, in one event-time hour."""

    partition: int
    first: int
    last: int
    path: Path

    @property
    def hour_start(self) -> datetime:
        """Start of the event-time hour whose folder holds this file."""
        date = _DATE_DIR.match(self.path.parent.parent.name)
        hour = _HOUR_DIR.match(self.path.parent.name)
        if not (date and hour):
            raise ValueError(f"{self.path} is not under date=YYYY-MM-DD/hour=HH")
        return datetime.strptime(f"{date.group(1)} {hour.group(1)}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc)


def file_name(partition: int, first: int, last: int) -> str:
    """The name that carries a file's partition and offset range."""
    if not 0 <= first <= last:
        raise ValueError(f"offset range {first}..{last} is empty or negative")
    return f"p{partition}-o{first:012d}-{last:012d}.parquet"


def parse_file_name(name: str) -> tuple[int, int, int] | None:
    """(partition, first, last) of an archive file's name; None for anything else (temp files too)."""
    match = _NAME.match(name)
    if match is None:
        return None
    partition, first, last = (int(g) for g in match.groups())
    return (partition, first, last) if first <= last else None


def hour_dir(kind_dir: Path, event_time_s: float) -> Path:
    """The hive folder `date=YYYY-MM-DD/hour=HH` of an event time (unix seconds, UTC)."""
    at = datetime.fromtimestamp(event_time_s, tz=timezone.utc)
    return kind_dir / f"date={at:%Y-%m-%d}" / f"hour={at:%H}"


def kind_dir(archive_path: Path, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown archive {kind!r}; one of {KINDS}")
    return Path(archive_path) / kind


def glob_pattern(archive_path: Path, kind: str) -> str:
    """Every archive file of `kind`, as a glob duckdb (Feast's offline store) reads."""
    return str(kind_dir(archive_path, kind) / "date=*" / "hour=*" / "*.parquet")


def list_files(kind_path: Path) -> list[ArchivedFile]:
    """The archive files under one kind's folder, sorted by (partition, first offset); temp files skipped."""
    files = []
    for path in Path(kind_path).glob("date=*/hour=*/*.parquet"):
        parsed = parse_file_name(path.name)
        if parsed is not None:
            files.append(ArchivedFile(*parsed, path))
    return sorted(files)


def temp_files(kind_path: Path) -> list[Path]:
    """Files a killed writer left behind (never part of the archive)."""
    return sorted(Path(kind_path).glob(f"date=*/hour=*/*{TEMP_SUFFIX}"))


def check_disjoint(files: Iterable[ArchivedFile]) -> None:
    """Raise ArchiveOverlap if two files of one partition share an offset."""
    previous: ArchivedFile | None = None
    for f in sorted(files):
        if previous is not None and previous.partition == f.partition and f.first <= previous.last:
            raise ArchiveOverlap(f"{f.path} (offsets {f.first}..{f.last}) overlaps {previous.path} "
                                 f"(offsets {previous.first}..{previous.last})")
        previous = f


def next_offsets(files: Iterable[ArchivedFile]) -> dict[int, int]:
    """Per partition, the first offset not yet archived: highest archived offset + 1."""
    nxt: dict[int, int] = {}
    for f in files:
        nxt[f.partition] = max(nxt.get(f.partition, 0), f.last + 1)
    return nxt


def skipped_offsets(path: Path) -> list[int]:
    """The offsets of a file's range that were malformed (not rows), from its parquet metadata."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(SKIPPED_KEY, b"[]"))


def _in_window(f: ArchivedFile, since: datetime | None, until: datetime | None) -> bool:
    start = f.hour_start.timestamp()
    return (since is None or start + 3600 > since.timestamp()) and (until is None or start < until.timestamp())


def _utc(at: datetime | None) -> datetime | None:
    if at is not None and at.tzinfo is None:
        raise ValueError("since/until must be timezone-aware (UTC)")
    return at


def read_archive(settings, kind: str, since: datetime | None = None, until: datetime | None = None):
    """The archived rows of `kind` (clicks | impressions) with event time in [since, until), as a
    pandas DataFrame sorted by event time then (partition, offset); only the hour folders that can
    hold such rows are opened. Columns: SCHEMAS[kind]."""
    since, until = _utc(since), _utc(until)
    files = [f for f in list_files(kind_dir(settings.archive_path, kind)) if _in_window(f, since, until)]
    check_disjoint(files)
    schema = SCHEMAS[kind]
    tables = [pq.read_table(f.path, schema=schema) for f in files]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    frame = table.to_pandas()
    stamps = frame[s.EVENT_TIMESTAMP]
    keep = np.ones(len(frame), dtype=bool)
    if since is not None:
        keep &= (stamps >= since).to_numpy()
    if until is not None:
        keep &= (stamps < until).to_numpy()
    frame = frame[keep].sort_values([s.EVENT_TIMESTAMP, KAFKA_PARTITION, KAFKA_OFFSET], kind="stable")
    return frame.reset_index(drop=True)


def session_code(session_id: str) -> int:
    """A session id's int64 code: the same in every call and process (hash, not order of appearance)."""
    return int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest(), "big") >> 1


def read_archived_clicks(settings, since: datetime | None = None, until: datetime | None = None) -> Interactions:
    """Archived clicks with event time in [since, until) as Interactions (session ids → `session_code`):
    the new events a continual learner trains on after a model's training window."""
    frame = read_archive(settings, CLICKS, since, until)
    codes = np.fromiter((session_code(v) for v in frame[s.SESSION_KEY]), dtype=np.int64, count=len(frame))
    return Interactions(codes, frame[s.ITEM_KEY].to_numpy(np.int64), frame["ts"].to_numpy(np.float64),
                        name="archive")
