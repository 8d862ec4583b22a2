"""Backfilled item_trending rows match the streaming windows; Feast's PIT join reads them back."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from streamrec import feature_schema as s
from streaming import item_windows
from infra.kafka import free_port
from streamrec.settings import Settings
from training.batch_sources import ITEM_STREAM_SCHEMA, write_batch_sources
from streamrec.interactions import Interactions
from training.historical_features import (
    TrendingHistory,
    backfill_item_trending,
    item_trending_rows,
    point_in_time_item_features,
)

MIN = 60_000
BASE_MS = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)  # a minute boundary

# (item, click time in ms after BASE_MS): bursts in one bucket, clicks exactly on bucket
# boundaries, a click 5 and 60 min later, a gap of more than an hour, a lone click
CLICKS = [
    (10, 10_000), (10, 20_000), (10, 70_000), (10, 2 * MIN), (10, 400_000),
    (10, 5 * MIN + 70_000), (10, 61 * MIN), (10, 3 * 3_600_000 + 1),
    (20, 30_000), (20, 30_500), (20, 6 * MIN), (20, 6 * MIN + 59_999),
    (30, 59 * MIN + 59_999),
]


def _data(clicks=CLICKS) -> Interactions:
    items = np.array([i for i, _ in clicks], dtype=np.int64)
    ms = np.array([BASE_MS + t for _, t in clicks], dtype=np.int64)
    return Interactions(np.arange(len(clicks)) % 3, items, ms / 1000.0)  # timestamps in seconds


def stream_counts(item: int, t_ms: int, clicks=CLICKS) -> tuple[int, int]:
    """What a backfilled row at minute boundary t_ms must hold: replay, through the worker's own
    apply_click, every click of `item` whose bucket has ended by t_ms (ts < t_ms), in time order
    with the stream time advancing, then the worker's window_counts at t_ms."""
    assert t_ms % MIN == 0
    state = None
    now = 0
    times = sorted(BASE_MS + t for i, t in clicks if i == item and BASE_MS + t < t_ms)
    for offset, ts in enumerate(times):
        now = max(now, ts)
        state, applied = item_windows.apply_click(state, ts, 0, offset, now)
        assert applied
    return item_windows.window_counts(state, t_ms) if state else (0, 0)


def pit_expected(item: int, t_ms: int, clicks=CLICKS) -> tuple[int, int]:
    """A read at any time T sees the row of the last minute boundary <= T."""
    return stream_counts(item, t_ms - t_ms % MIN, clicks)


def test_rows_equal_the_stream_windows_at_their_timestamps() -> None:
    data = _data()
    rows = item_trending_rows(data.item_ids, (data.timestamps * 1000).astype(np.int64))
    assert len(rows) and (rows[s.WINDOW_END_TS] % MIN == 0).all()
    for row in rows.itertuples(index=False):
        item, t = int(getattr(row, s.ITEM_KEY)), int(getattr(row, s.WINDOW_END_TS))
        assert (getattr(row, s.CLICKS_5M), getattr(row, s.CLICKS_1H)) == stream_counts(item, t), (item, t)
        # no leakage: every counted click is strictly earlier than the row's timestamp
        earlier = sum(1 for i, c in CLICKS if i == item and BASE_MS + c < t)
        assert getattr(row, s.CLICKS_1H) <= earlier
    # rows are only written where the counts change, and a burst ends with (0, 0) an hour later
    for item, group in rows.groupby(s.ITEM_KEY):
        values = list(zip(group[s.CLICKS_5M], group[s.CLICKS_1H]))
        assert all(a != b for a, b in zip(values, values[1:])), item
        assert values[-1] == (0, 0)
        assert group[s.WINDOW_END_TS].is_monotonic_increasing


def test_latest_row_at_every_minute_is_the_stream_value() -> None:
    """No change point is missed: at every minute boundary, the newest row at or before it holds
    exactly the stream's counts (and the absence of a row means 0)."""
    data = _data()
    rows = item_trending_rows(data.item_ids, (data.timestamps * 1000).astype(np.int64))
    for item in (10, 20, 30, 99):
        mine = rows[rows[s.ITEM_KEY] == item]
        stamps = mine[s.WINDOW_END_TS].to_numpy()
        for t in range(BASE_MS - 2 * MIN, BASE_MS + 5 * 3_600_000, MIN):
            k = np.searchsorted(stamps, t, side="right") - 1
            got = (0, 0) if k < 0 else (int(mine[s.CLICKS_5M].iloc[k]), int(mine[s.CLICKS_1H].iloc[k]))
            assert got == stream_counts(item, t), (item, t - BASE_MS)


def test_hand_checked_values() -> None:
    assert stream_counts(10, BASE_MS + MIN) == (2, 2)  # the two clicks of bucket 0
    assert stream_counts(10, BASE_MS + 2 * MIN) == (3, 3)  # the click at exactly 2 min is not yet in
    assert stream_counts(10, BASE_MS + 3 * MIN) == (4, 4)
    assert stream_counts(10, BASE_MS + 6 * MIN) == (2, 4)  # bucket 0 left the 5-min window
    assert stream_counts(10, BASE_MS + 61 * MIN) == (0, 4)  # bucket 0 left the hour
    assert stream_counts(20, BASE_MS + 7 * MIN) == (2, 4)


def test_backfill_writes_the_push_source_schema_atomically(tmp_path: Path) -> None:
    n = backfill_item_trending(tmp_path, _data())
    table = pq.read_table(tmp_path / s.ITEM_STREAM_FILE)
    assert table.schema == ITEM_STREAM_SCHEMA and table.num_rows == n > 0
    df = table.to_pandas()
    assert (df[s.EVENT_TIMESTAMP].astype("int64") // 1000 == df[s.WINDOW_END_TS]).all()  # us vs ms
    assert [p.name for p in tmp_path.iterdir()] == [s.ITEM_STREAM_FILE]  # no temp file left behind
    assert backfill_item_trending(tmp_path, _data(CLICKS[:3])) < n  # overwritten, not appended
    assert pq.read_table(tmp_path / s.ITEM_STREAM_FILE).num_rows < n
    assert backfill_item_trending(tmp_path, _data([])) == 0
    assert pq.read_table(tmp_path / s.ITEM_STREAM_FILE).schema == ITEM_STREAM_SCHEMA


def test_point_in_time_features_through_feast(tmp_path: Path) -> None:
    # Nothing listens on this port: a fresh `feast apply` does not touch the Redis online store,
    # and get_historical_features on duckdb never does.
    from training.feast_ops import feast_command

    settings = Settings(data_dir=tmp_path / "data", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    data = _data()
    items = np.array([10, 20, 30])
    write_batch_sources(settings.batch_dir, items, np.ones((3, 4), dtype=np.float32), np.array([8, 4, 1]),
                        {10: 7, 20: 5})
    assert backfill_item_trending(settings.batch_dir, data) > 0
    write_batch_sources(settings.batch_dir, items, np.ones((3, 4), dtype=np.float32), np.array([8, 4, 1]),
                        {10: 7, 20: 5})  # a later re-write keeps the backfilled rows
    assert pq.read_table(settings.batch_dir / s.ITEM_STREAM_FILE).num_rows > 0
    feast_command(settings, ["apply"], check=True)

    queries = [
        (10, -3_600_000),  # before any click
        (10, 59_999),  # first bucket still open
        (10, MIN),  # exactly at a bucket boundary: the bucket just ended is in
        (10, 2 * MIN),  # boundary with a click at exactly that time: that click is not yet in
        (10, 2 * MIN + 1),
        (10, 6 * MIN),
        (10, 30 * MIN + 123),
        (10, 61 * MIN),
        (10, 2 * 3_600_000 + 2 * MIN),  # every click left the hour: the (0, 0) row, not a stale count
        (20, 7 * MIN),
        (20, 7 * MIN),  # duplicate pair
        (20, 6 * MIN + 59_999),
        (30, 60 * MIN),
        (30, 3 * 86_400_000),  # beyond the 1-day TTL
        (99, 30 * MIN),  # an item with no row at all
        (10, 3 * 3_600_000 + MIN),
    ]
    entity_df = pd.DataFrame({
        s.ITEM_KEY: np.array([i for i, _ in queries], dtype=np.int64),
        s.EVENT_TIMESTAMP: pd.to_datetime([BASE_MS + t for _, t in queries], unit="ms", utc=True),
        "example": np.arange(len(queries)),
    }, index=np.arange(len(queries))[::-1])
    before = os.environ.get("STREAMREC_DATA_DIR")
    out = point_in_time_item_features(settings, entity_df)
    assert os.environ.get("STREAMREC_DATA_DIR") == before  # environment restored

    assert list(out.index) == list(entity_df.index) and out["example"].tolist() == list(range(len(queries)))
    got = list(zip(out[s.CLICKS_5M].tolist(), out[s.CLICKS_1H].tolist()))
    expected = [pit_expected(i, BASE_MS + t) for i, t in queries]
    assert got == expected
    # the in-memory reader offline evaluation uses gives exactly what Feast's PIT join gives
    history = TrendingHistory.from_clicks(data)
    in_memory = [history.counts(np.array([i]), BASE_MS + t) for i, t in queries]
    assert [(int(five[0]), int(hour[0])) for five, hour in in_memory] == got
    five, hour = history.counts(np.array([10, 99, 20]), BASE_MS + 7 * MIN)  # vectorised, unknown item
    assert list(zip(five.tolist(), hour.tolist())) == [pit_expected(10, BASE_MS + 7 * MIN), (0, 0),
                                                       pit_expected(20, BASE_MS + 7 * MIN)]
    assert expected[:4] == [(0, 0), (0, 0), (2, 2), (3, 3)] and expected[8] == (0, 0)
    assert out[s.CLICKS_5M].dtype == np.int64 and out[s.CLICKS_1H].dtype == np.int64
    assert out[s.POPULARITY].tolist() == [{10: 8, 20: 4, 30: 1}.get(i, 0) for i, _ in queries]
    assert out[s.CATEGORY].tolist() == [{10: 7, 20: 5}.get(i, s.CATEGORY_UNKNOWN) for i, _ in queries]

    only = point_in_time_item_features(settings, entity_df, item_stats=False, chunk_rows=4)
    assert list(zip(only[s.CLICKS_5M], only[s.CLICKS_1H])) == expected
    assert s.POPULARITY not in only.columns


@pytest.mark.parametrize("minutes", [0, 1, 59, 60, 61])
def test_single_click_lifecycle(minutes: int) -> None:
    rows = item_trending_rows(np.array([5]), np.array([BASE_MS + 30_000]))
    assert list(zip(rows[s.WINDOW_END_TS] - BASE_MS, rows[s.CLICKS_5M], rows[s.CLICKS_1H])) == [
        (MIN, 1, 1), (6 * MIN, 0, 1), (61 * MIN, 0, 0)]
    t = BASE_MS + minutes * MIN
    assert stream_counts(5, t, [(5, 30_000)]) == ((1 if 1 <= minutes < 6 else 0), (1 if 1 <= minutes < 61 else 0))
