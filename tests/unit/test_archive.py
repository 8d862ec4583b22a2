"""The archive's files are its commit log: names carry (partition, offset range), a restart resumes
after the highest archived offset, overlapping ranges are refused, a killed write leaves no file,
and every offset of a range is either a row or a listed skipped record. Plain data, no broker."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from streamrec import archive as layout
from streamrec import feature_schema as s
from streamrec.events import ClickEvent
from streamrec.settings import Settings
from streaming.archive import ArchiveWriter, archive_lock, consume, hour_segments

HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def _click(settings: Settings, offset: int, ts: float, session: str = "s1", item: int = 7):
    raw = ClickEvent(session_id=session, item_id=item, ts=ts).to_bytes()
    return consume(layout.CLICKS, offset, raw, int(ts * 1000), settings)


def _bad(settings: Settings, offset: int, ts: float):
    return consume(layout.CLICKS, offset, b"{not json", int(ts * 1000), settings)


def test_file_name_round_trips_and_rejects_other_names() -> None:
    assert layout.file_name(3, 5, 1_234) == "p3-o000000000005-000000001234.parquet"
    assert layout.parse_file_name("p3-o000000000005-000000001234.parquet") == (3, 5, 1234)
    assert layout.parse_file_name("p3-o000000000005-000000001234.parquet.tmp") is None
    assert layout.parse_file_name("p3-o000000000009-000000000005.parquet") is None  # last < first
    with pytest.raises(ValueError):
        layout.file_name(0, 9, 5)


def test_writer_resumes_after_the_highest_archived_offset(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writer = ArchiveWriter(layout.CLICKS, settings.archive_path)
    assert writer.next_offset(0) is None
    writer.write(0, [_click(settings, o, T0 + o) for o in range(0, 10)])
    writer.write(0, [_click(settings, o, T0 + o) for o in range(10, 25)])
    writer.write(2, [_click(settings, o, T0 + o) for o in range(100, 103)])
    again = ArchiveWriter(layout.CLICKS, settings.archive_path)  # a restart: state from the names only
    assert again.next_offset(0) == 25
    assert again.next_offset(2) == 103
    assert again.next_offset(1) is None


def test_overlapping_range_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writer = ArchiveWriter(layout.CLICKS, settings.archive_path)
    writer.write(0, [_click(settings, o, T0 + o) for o in range(10, 20)])
    before = layout.list_files(writer.root)
    for first, last in ((15, 30), (5, 10), (19, 19), (0, 100)):
        with pytest.raises(layout.ArchiveOverlap):
            writer.write(0, [_click(settings, o, T0 + o) for o in range(first, last + 1)])
    assert layout.list_files(writer.root) == before
    writer.write(0, [_click(settings, o, T0 + o) for o in range(20, 22)])  # adjacent is fine
    writer.write(1, [_click(settings, o, T0 + o) for o in range(10, 20)])  # other partition is fine


def test_overlapping_files_on_disk_stop_the_writer_and_the_reader(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writer = ArchiveWriter(layout.CLICKS, settings.archive_path)
    path = writer.write(0, [_click(settings, o, T0 + o) for o in range(10, 20)])[0]
    (path.parent / layout.file_name(0, 15, 25)).write_bytes(path.read_bytes())  # a duplicate made by hand
    with pytest.raises(layout.ArchiveOverlap):
        ArchiveWriter(layout.CLICKS, settings.archive_path)
    with pytest.raises(layout.ArchiveOverlap):
        layout.read_archive(settings, layout.CLICKS)


def test_temp_files_of_a_killed_write_are_ignored_then_removed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writer = ArchiveWriter(layout.CLICKS, settings.archive_path)
    path = writer.write(0, [_click(settings, o, T0 + o) for o in range(0, 5)])[0]
    leftover = path.parent / (layout.file_name(0, 5, 9) + layout.TEMP_SUFFIX)
    leftover.write_bytes(b"half a parquet file")
    assert len(layout.read_archive(settings, layout.CLICKS)) == 5  # readers skip it
    again = ArchiveWriter(layout.CLICKS, settings.archive_path)
    assert again.removed_temp == [leftover] and not leftover.exists()
    assert again.next_offset(0) == 5  # the temp file's range is read again, not skipped


def test_every_offset_is_a_row_or_a_listed_skipped_record(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writer = ArchiveWriter(layout.CLICKS, settings.archive_path)
    records = [_bad(settings, 0, T0), _click(settings, 1, T0 + 1), _bad(settings, 2, T0 + 2),
               _click(settings, 3, T0 + 3), _bad(settings, 4, T0 + 4)]
    [path] = writer.write(0, records)
    assert layout.parse_file_name(path.name) == (0, 0, 4)
    assert layout.skipped_offsets(path) == [0, 2, 4]
    assert pq.read_table(path).column(layout.KAFKA_OFFSET).to_pylist() == [1, 3]
    assert writer.rows == 2 and writer.skipped == 3


def test_a_batch_of_only_malformed_records_still_advances_the_resume_point(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writer = ArchiveWriter(layout.CLICKS, settings.archive_path)
    [path] = writer.write(0, [_bad(settings, o, T0) for o in range(3)])
    assert pq.read_table(path).num_rows == 0 and layout.skipped_offsets(path) == [0, 1, 2]
    assert ArchiveWriter(layout.CLICKS, settings.archive_path).next_offset(0) == 3


def test_future_clicks_are_judged_against_their_kafka_time_so_a_reread_decides_the_same(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    raw = ClickEvent(session_id="s", item_id=1, ts=T0 + settings.max_future_skew_s + 10).to_bytes()
    assert consume(layout.CLICKS, 0, raw, int(T0 * 1000), settings).row is None
    assert consume(layout.CLICKS, 0, raw, int((T0 + 20) * 1000), settings).row is not None


def test_batches_split_at_event_hour_changes_into_contiguous_files(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    records = [_click(settings, 0, T0 + HOUR - 2), _bad(settings, 1, T0), _click(settings, 2, T0 + HOUR + 1),
               _click(settings, 3, T0 + HOUR - 1), _click(settings, 4, T0 + HOUR + 5)]  # offset 3: a late event
    assert [[r.offset for r in seg] for seg in hour_segments(records)] == [[0, 1], [2], [3], [4]]
    writer = ArchiveWriter(layout.CLICKS, settings.archive_path)
    paths = writer.write(0, records)
    rel = [str(p.relative_to(writer.root)) for p in paths]
    assert rel == ["date=2026-01-01/hour=00/p0-o000000000000-000000000001.parquet",
                   "date=2026-01-01/hour=01/p0-o000000000002-000000000002.parquet",
                   "date=2026-01-01/hour=00/p0-o000000000003-000000000003.parquet",
                   "date=2026-01-01/hour=01/p0-o000000000004-000000000004.parquet"]


def test_reader_filters_by_event_time_and_orders_rows(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writer = ArchiveWriter(layout.CLICKS, settings.archive_path)
    writer.write(1, [_click(settings, o, T0 + o * 600, session=f"s{o % 3}", item=o) for o in range(12)])
    writer.write(0, [_click(settings, o, T0 + o * 600 + 1, item=100 + o) for o in range(12)])
    everything = layout.read_archive(settings, layout.CLICKS)
    assert len(everything) == 24
    assert everything[s.EVENT_TIMESTAMP].is_monotonic_increasing
    since = datetime.fromtimestamp(T0 + HOUR, tz=timezone.utc)
    until = datetime.fromtimestamp(T0 + 1.5 * HOUR, tz=timezone.utc)
    window = layout.read_archive(settings, layout.CLICKS, since=since, until=until)
    assert sorted(window[s.ITEM_KEY]) == [6, 7, 8, 106, 107, 108]
    with pytest.raises(ValueError):
        layout.read_archive(settings, layout.CLICKS, since=datetime(2026, 1, 1))  # naive: ambiguous


def test_archived_clicks_become_interactions_with_stable_session_codes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ArchiveWriter(layout.CLICKS, settings.archive_path).write(
        0, [_click(settings, o, T0 + o, session=("a", "b")[o % 2], item=o) for o in range(6)])
    data = layout.read_archived_clicks(settings)
    assert len(data) == 6 and data.n_sessions == 2
    assert set(data.session_ids.tolist()) == {layout.session_code("a"), layout.session_code("b")}
    assert layout.session_code("a") == 2_340_832_890_917_691_671  # fixed: the same in every process
    assert data.item_ids[data.session_ids == layout.session_code("a")].tolist() == [0, 2, 4]


def test_impressions_archive_with_their_lists(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    raw = json.dumps({"request_id": "r1", "session_id": "s", "ts": T0, "model_version": "v1", "policy": "single",
                      "propensity": 1.0, "stage": "ranked", "degraded": False, "items": [3, 1],
                      "scores": [0.5, 0.25]}).encode()
    records = [consume(layout.IMPRESSIONS, 0, raw, int(T0 * 1000), settings),
               consume(layout.IMPRESSIONS, 1, b"[]", int(T0 * 1000), settings)]
    ArchiveWriter(layout.IMPRESSIONS, settings.archive_path).write(0, records)
    frame = layout.read_archive(settings, layout.IMPRESSIONS)
    assert frame["items"].map(list).tolist() == [[3, 1]]
    assert frame["request_id"].tolist() == ["r1"]


def test_one_archiver_per_folder(tmp_path: Path) -> None:
    with archive_lock(tmp_path):
        with pytest.raises(RuntimeError, match="another archiver"):
            with archive_lock(tmp_path):
                pass
