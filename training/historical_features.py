"""Historical (point-in-time) streaming item features for training, read through Feast's offline store.

The learned ranker must see `clicks_5m` / `clicks_1h` as the stream would have computed them at the
time of each training example, not values recomputed ad hoc. Two steps:

1. `backfill_item_trending` replays the training click log into the offline side of the
   `item_trending` view: the parquet batch source behind the `item_trending_push` push source
   (`batch_dir / ITEM_STREAM_FILE`), one row per (item, minute boundary) at which the item's window
   counts change.
2. `point_in_time_item_features` joins those rows to (item_id, event_timestamp) entity rows with
   `FeatureStore.get_historical_features` (duckdb offline store): each entity row gets the newest
   row with `row.event_timestamp <= entity.event_timestamp` and no older than the view's TTL
   (1 day, `schema.VIEWS`), i.e. Feast's own point-in-time semantics.

Call order (the registry records the parquet paths and schemas at `feast apply` time, and the
duckdb store reads the files at query time):

    write_batch_sources(settings.batch_dir, ...)      # writes the typed, empty push-source files
    backfill_item_trending(settings.batch_dir, data)  # overwrites item_trending.parquet
    feast_command(settings, ["apply"], check=True)    # registry under settings.data_dir
    point_in_time_item_features(settings, entity_df)

`write_batch_sources` keeps an existing, correctly typed push-source file, so running it after the
backfill does not wipe the backfilled rows; re-running the backfill does overwrite the file (it is
rebuilt from the click log, atomically). `feast apply` on a fresh registry does not connect to
Redis; `get_historical_features` on duckdb never does.

Window semantics (exact)
------------------------
The streaming worker (`streaming/item_windows.py`) counts clicks in one-minute event-time buckets
`[b, b + 60 s)` (b = ts_ms - ts_ms % 60 000, ts_ms = int(ts * 1000) as in the processor) and, at
stream time `now`, `window_counts` counts the buckets whose END lies in `(now - 5 min, ...)` /
`(now - 1 h, ...)`. The backfill evaluates that function at minute boundaries only: a row with
`event_timestamp = t` (t a multiple of 60 s; `window_end_ts = t` in ms) holds

    clicks_5m(t) = clicks in buckets whose end lies in (t - 5 min, t]  = clicks with ts in [t - 5 min, t)
    clicks_1h(t) = clicks in buckets whose end lies in (t - 1 h,   t]  = clicks with ts in [t - 1 h,   t)

This equals `window_counts(state, t)` where `state` is built by `apply_click` from every click whose
bucket has ENDED by t (ts < t). A click at exactly ts = t is in bucket [t, t + 60 s) and is not
counted at t (it is counted from t + 60 s), so every row counts only clicks strictly earlier than its
event_timestamp: no leakage. Compared with the live stream, which also counts the still-open current
bucket, a PIT read at time T sees the counts at floor_minute(T), i.e. it may lag by < 1 minute of
clicks -- the conservative side.

For an item with a click in the bucket ending at E, its counts can only change at t = E (enters
both windows), E + 5 min (leaves the 5-min window) and E + 1 h (leaves the hour). Rows are written
at exactly those boundaries, after dropping boundaries where the counts do not actually change; the
last row of each burst is (0, 0) at E + 1 h so a later PIT read does not keep a stale count (the
1-day TTL would otherwise let it live on). Before an item's first click there is no row: Feast
returns null, reported as 0.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from streamrec import feature_schema as s
from training.batch_sources import ITEM_STREAM_SCHEMA, TIMESTAMP
from streamrec.interactions import Interactions

_TIME_BITS = 42  # unix ms fit in 42 bits until the year 2109
_TIME_MAX = (1 << _TIME_BITS) - 1
_FIVE = s.CLICKS_5M_WINDOW_MS // s.TRENDING_BUCKET_MS  # window lengths in buckets
_HOUR = s.CLICKS_1H_WINDOW_MS // s.TRENDING_BUCKET_MS

STATS_FEATURES = (s.POPULARITY, s.CATEGORY)


def click_ms(timestamps_s: np.ndarray) -> np.ndarray:
    """Unix seconds → the stream's event time in ms (`int(event.ts * 1000)` in the processor)."""
    return (np.asarray(timestamps_s, dtype=np.float64) * 1000).astype(np.int64)


def item_trending_rows(item_ids: np.ndarray, ts_ms: np.ndarray) -> pd.DataFrame:
    """Rows of the item_trending view for clicks (item, ts_ms): see the module docstring.

    Columns item_id, clicks_5m, clicks_1h, window_end_ts (ms) as int64; sorted by (item_id, time).
    """
    item_ids = np.asarray(item_ids, dtype=np.int64)
    minute = np.asarray(ts_ms, dtype=np.int64) // s.TRENDING_BUCKET_MS  # bucket index (floor, also for < 0)
    columns = [s.ITEM_KEY, s.CLICKS_5M, s.CLICKS_1H, s.WINDOW_END_TS]
    if len(item_ids) == 0:
        return pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in columns})

    # clicks per non-empty (item, bucket)
    order = np.lexsort((minute, item_ids))
    item, minute = item_ids[order], minute[order]
    first = np.ones(len(item), dtype=bool)
    first[1:] = (item[1:] != item[:-1]) | (minute[1:] != minute[:-1])
    starts = np.flatnonzero(first)
    n = np.diff(np.append(starts, len(item))).astype(np.int64)
    item, end = item[starts], minute[starts] + 1  # end boundary of each bucket, in minutes

    # count deltas at the three boundaries where the bucket enters / leaves the windows
    k = len(item)
    ev_item = np.concatenate((item, item, item))
    ev_t = np.concatenate((end, end + _FIVE, end + _HOUR))
    zero = np.zeros(k, dtype=np.int64)
    d5 = np.concatenate((n, -n, zero))
    d60 = np.concatenate((n, zero, -n))

    order = np.lexsort((ev_t, ev_item))
    ev_item, ev_t, d5, d60 = ev_item[order], ev_t[order], d5[order], d60[order]
    first = np.ones(len(ev_item), dtype=bool)
    first[1:] = (ev_item[1:] != ev_item[:-1]) | (ev_t[1:] != ev_t[:-1])
    starts = np.flatnonzero(first)
    d5, d60 = np.add.reduceat(d5, starts), np.add.reduceat(d60, starts)
    ev_item, ev_t = ev_item[starts], ev_t[starts]
    # every item's deltas sum to zero, so one global running sum is each item's running count
    c5, c60 = np.cumsum(d5), np.cumsum(d60)
    changed = (d5 != 0) | (d60 != 0)  # boundaries where entering and leaving cancel out add nothing
    return pd.DataFrame({
        s.ITEM_KEY: ev_item[changed],
        s.CLICKS_5M: c5[changed],
        s.CLICKS_1H: c60[changed],
        s.WINDOW_END_TS: ev_t[changed] * s.TRENDING_BUCKET_MS,
    })


def feast_streaming_features(settings, data: Interactions):
    """The ranker's streaming features for `data`'s examples, point-in-time, through Feast.

    Backfills the stream's item windows for `data` into the offline store, registers the repo
    (`feast apply`; a fresh registry does not touch Redis), and returns a reader
    `(item_ids, times_s) -> {"clicks_5m": ..., "clicks_1h": ...}` over
    `point_in_time_item_features` (training.ranker.StreamingFeatureFn).
    """
    from training.feast_ops import feast_command

    backfill_item_trending(settings.batch_dir, data)
    feast_command(settings, ["apply"], check=True, to_stderr=True)

    def read(item_ids: np.ndarray, times_s: np.ndarray) -> dict[str, np.ndarray]:
        entity_df = pd.DataFrame({s.ITEM_KEY: np.asarray(item_ids, dtype=np.int64),
                                  s.EVENT_TIMESTAMP: pd.to_datetime(click_ms(times_s), unit="ms", utc=True)})
        out = point_in_time_item_features(settings, entity_df, item_stats=False)
        return {name: out[name].to_numpy(np.float32) for name in s.TRENDING_COUNTS}

    return read


def history_features(history: "TrendingHistory"):
    """A `training.ranker.StreamingFeatureFn` over an in-memory click history: the warm path's
    streaming features (its windows are minutes of clicks, not worth a Feast backfill)."""

    def read(item_ids: np.ndarray, times_s: np.ndarray) -> dict[str, np.ndarray]:
        item_ids, times_ms = np.asarray(item_ids, dtype=np.int64), click_ms(np.asarray(times_s))
        five = np.zeros(len(item_ids), np.float32)
        hour = np.zeros(len(item_ids), np.float32)
        order = np.argsort(times_ms, kind="stable")
        times, starts = np.unique(times_ms[order], return_index=True)
        for at, rows in zip(times, np.split(order, starts[1:])):  # one case's candidates share its time
            five[rows], hour[rows] = history.counts(item_ids[rows], float(at))
        return {s.CLICKS_5M: five, s.CLICKS_1H: hour}

    return read


class TrendingHistory:
    """Point-in-time trending counts from a click log, in memory: what the stream showed at time T.

    Same rows as the backfill and the same rule as Feast's point-in-time join on them (newest row
    with `window_end_ts <= T`, none older than the view's TTL); tested equal to
    `point_in_time_item_features`. Offline evaluation asks this for ~10^7 (item, time) pairs,
    which Feast's offline store would take minutes for; training reads through Feast.
    """

    def __init__(self, rows: pd.DataFrame, ttl_ms: int = s.VIEWS[s.ITEM_TRENDING_VIEW].ttl_s * 1000) -> None:
        self.items = rows[s.ITEM_KEY].to_numpy(dtype=np.int64)  # sorted by (item, time)
        self.ends = rows[s.WINDOW_END_TS].to_numpy(dtype=np.int64)
        self.five = rows[s.CLICKS_5M].to_numpy(dtype=np.float32)
        self.hour = rows[s.CLICKS_1H].to_numpy(dtype=np.float32)
        self.ttl_ms = ttl_ms
        # one sorted int64 key per row, (item's rank) << 42 | end time, so a lookup is one searchsorted
        self.keys = np.unique(self.items)
        self.row_keys = (np.searchsorted(self.keys, self.items) << _TIME_BITS) | np.clip(self.ends, 0, _TIME_MAX)

    @classmethod
    def from_clicks(cls, *datasets: Interactions) -> "TrendingHistory":
        items = np.concatenate([d.item_ids for d in datasets])
        times = np.concatenate([click_ms(d.timestamps) for d in datasets])
        return cls(item_trending_rows(items, times))

    def counts(self, item_ids: np.ndarray, at_ms: float) -> tuple[np.ndarray, np.ndarray]:
        """(clicks_5m, clicks_1h) of each item as of `at_ms`; 0 where no row is within the TTL."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        five = np.zeros(len(item_ids), dtype=np.float32)
        hour = np.zeros(len(item_ids), dtype=np.float32)
        if len(self.keys) == 0 or len(item_ids) == 0:
            return five, hour
        rank = np.searchsorted(self.keys, item_ids)
        known = self.keys[np.minimum(rank, len(self.keys) - 1)] == item_ids
        at = int(np.clip(at_ms, 0, _TIME_MAX))
        row = np.searchsorted(self.row_keys, (rank << _TIME_BITS) | at, side="right") - 1
        row = np.maximum(row, 0)
        hit = known & (self.items[row] == item_ids) & (self.ends[row] <= at_ms) & (self.ends[row] > at_ms - self.ttl_ms)
        five[hit], hour[hit] = self.five[row[hit]], self.hour[row[hit]]
        return five, hour


def backfill_item_trending(batch_dir: Path, data: Interactions) -> int:
    """Write the item_trending rows the stream would have produced for `data` into
    `batch_dir / ITEM_STREAM_FILE` (replacing it atomically); returns the number of rows written."""
    rows = item_trending_rows(data.item_ids, click_ms(data.timestamps))
    stamps = pa.array(rows[s.WINDOW_END_TS].to_numpy() * 1000, type=TIMESTAMP)  # ms → us
    table = pa.Table.from_arrays(
        [pa.array(rows[c].to_numpy(), type=pa.int64()) for c in (s.ITEM_KEY, s.CLICKS_5M, s.CLICKS_1H,
                                                                  s.WINDOW_END_TS)] + [stamps],
        schema=ITEM_STREAM_SCHEMA,
    )
    batch_dir = Path(batch_dir)
    batch_dir.mkdir(parents=True, exist_ok=True)
    path = batch_dir / s.ITEM_STREAM_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.backfill.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return table.num_rows


@contextmanager
def feast_environment(settings) -> Iterator[None]:
    """Set the variables feature_store.yaml / features.py read (Settings.feast_env()), then restore."""
    env = settings.feast_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _utc(timestamps: pd.Series) -> pd.Series:
    ts = pd.to_datetime(timestamps, utc=True)
    return ts.dt.as_unit("us")


def point_in_time_item_features(
    settings,
    entity_df: pd.DataFrame,
    *,
    item_stats: bool = True,
    stats_as_of: datetime | None = None,
    chunk_rows: int = 2_000_000,
    store=None,
) -> pd.DataFrame:
    """`entity_df` (item_id, event_timestamp tz-aware UTC, any other columns) with clicks_5m and
    clicks_1h as of each row's event_timestamp through Feast's point-in-time join (0 when no row
    within the view's TTL precedes it), plus popularity / category when `item_stats`.

    Rows keep their order and index. Duplicate (item_id, event_timestamp) pairs are queried once;
    unique pairs go to Feast in chunks of `chunk_rows`.

    item_stats rows are stamped with the training run's time (pipeline: now), later than any
    training example, so a PIT join at the examples' times would find nothing. They are therefore
    read through Feast once per distinct item as of `stats_as_of` (default: now), i.e. the latest
    training run's values -- a static per-item attribute, exactly what serving reads online.
    """
    from feast import FeatureStore

    missing = {s.ITEM_KEY, s.EVENT_TIMESTAMP} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks column(s) {sorted(missing)}")
    items = entity_df[s.ITEM_KEY].to_numpy(dtype=np.int64)
    stamps = _utc(entity_df[s.EVENT_TIMESTAMP]).reset_index(drop=True)
    keys = pd.DataFrame({s.ITEM_KEY: items, s.EVENT_TIMESTAMP: stamps})
    # pair number in order of first appearance == position in drop_duplicates()
    codes = keys.groupby([s.ITEM_KEY, s.EVENT_TIMESTAMP], sort=False).ngroup().to_numpy()
    pairs = keys.drop_duplicates().reset_index(drop=True)
    pairs["_pair"] = np.arange(len(pairs), dtype=np.int64)

    with feast_environment(settings):
        store = store or FeatureStore(repo_path=str(settings.feature_repo))
        refs = [f"{s.ITEM_TRENDING_VIEW}:{f}" for f in s.TRENDING_COUNTS]
        parts = []
        for lo in range(0, len(pairs), chunk_rows):
            part = store.get_historical_features(entity_df=pairs.iloc[lo:lo + chunk_rows], features=refs).to_df()
            parts.append(part[["_pair", *s.TRENDING_COUNTS]])
        got = pd.concat(parts) if parts else pd.DataFrame(columns=["_pair", *s.TRENDING_COUNTS])
        trending = np.zeros((len(pairs), len(s.TRENDING_COUNTS)), dtype=np.int64)
        at = got["_pair"].to_numpy(dtype=np.int64)
        trending[at] = got[list(s.TRENDING_COUNTS)].fillna(0).to_numpy(dtype=np.int64)

        if item_stats:
            distinct = np.unique(items)
            as_of = pd.Timestamp(stats_as_of or datetime.now(timezone.utc))
            stats_df = store.get_historical_features(
                entity_df=pd.DataFrame({s.ITEM_KEY: distinct,
                                        s.EVENT_TIMESTAMP: _utc(pd.Series([as_of] * len(distinct)))}),
                features=[f"{s.ITEM_STATS_VIEW}:{f}" for f in STATS_FEATURES],
            ).to_df()

    out = entity_df.copy()
    for j, name in enumerate(s.TRENDING_COUNTS):
        out[name] = trending[codes, j]
    if item_stats:
        stats = stats_df.set_index(s.ITEM_KEY)
        out[s.POPULARITY] = stats[s.POPULARITY].reindex(items).fillna(0).to_numpy(dtype=np.int64)
        out[s.CATEGORY] = stats[s.CATEGORY].reindex(items).fillna(s.CATEGORY_UNKNOWN).to_numpy(dtype=np.int64)
    return out


if __name__ == "__main__":  # pragma: no cover - timing helper: python -m training.historical_features DATASET
    import sys
    import tempfile

    from streamrec.datasets import load_dataset

    t0 = time.perf_counter()
    data = load_dataset(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        n = backfill_item_trending(Path(tmp), data)
        t2 = time.perf_counter()
        size = (Path(tmp) / s.ITEM_STREAM_FILE).stat().st_size
    print(f"{len(data)} clicks, {data.n_items} items: load {t1 - t0:.1f}s, backfill {n} rows "
          f"({size / 1e6:.1f} MB) in {t2 - t1:.2f}s")
