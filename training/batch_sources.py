"""Feast batch sources written by training: the parquet files behind the feature views.

Column names and types come from feature_repo/schema.py. The push-source batch files are written
empty but typed, because Feast needs the files to exist (and to have the right schema) for
`feast apply` and for push sources' offline side; an existing, correctly typed one is kept. Writes are atomic (temp file + rename) so a
concurrent `feast materialize` never reads a half-written file.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamrec import feature_schema as s

TIMESTAMP = pa.timestamp("us", tz="UTC")

ITEM_EMBEDDINGS_SCHEMA = pa.schema([(s.ITEM_KEY, pa.int64()), (s.EMBEDDING, pa.list_(pa.float32())),
                                    (s.EVENT_TIMESTAMP, TIMESTAMP)])
ITEM_STATS_SCHEMA = pa.schema([(s.ITEM_KEY, pa.int64()), (s.POPULARITY, pa.int64()),
                               (s.POPULARITY_RANK, pa.int64()), (s.CATEGORY, pa.int64()),
                               (s.EVENT_TIMESTAMP, TIMESTAMP)])
SESSION_STREAM_SCHEMA = pa.schema([(s.SESSION_KEY, pa.string()), (s.RECENT_ITEMS, pa.list_(pa.int64())),
                                   (s.CLICK_COUNT, pa.int64()), (s.LAST_EVENT_TS, pa.int64()),
                                   (s.EVENT_TIMESTAMP, TIMESTAMP)])
ITEM_STREAM_SCHEMA = pa.schema([(s.ITEM_KEY, pa.int64()), (s.CLICKS_5M, pa.int64()), (s.CLICKS_1H, pa.int64()),
                                (s.WINDOW_END_TS, pa.int64()), (s.EVENT_TIMESTAMP, TIMESTAMP)])


def popularity_ranks(popularity: np.ndarray) -> np.ndarray:
    """1 = most popular; ties broken by row order, so ranks are a permutation of 1..n."""
    ranks = np.empty(len(popularity), dtype=np.int64)
    ranks[np.argsort(-np.asarray(popularity), kind="stable")] = np.arange(1, len(popularity) + 1)
    return ranks


def _write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_batch_sources(batch_dir: Path, item_ids: np.ndarray, embeddings: np.ndarray, popularity: np.ndarray,
                        categories: dict[int, int] | None = None, *,
                        event_time: datetime | None = None) -> dict[str, Path]:
    """Write the four batch parquet files; batch rows carry `event_time` (default: now, UTC)."""
    batch_dir = Path(batch_dir)
    batch_dir.mkdir(parents=True, exist_ok=True)
    event_time = event_time or datetime.now(timezone.utc)
    n, dim = embeddings.shape
    item_ids = np.asarray(item_ids, dtype=np.int64)
    stamps = pa.array(np.full(n, int(event_time.timestamp() * 1_000_000), dtype=np.int64), type=TIMESTAMP)
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    vectors = pa.ListArray.from_arrays(offsets, flat, type=pa.list_(pa.float32()))
    categories = categories or {}
    category = np.array([categories.get(int(i), s.CATEGORY_UNKNOWN) for i in item_ids.tolist()], dtype=np.int64)
    popularity = np.asarray(popularity, dtype=np.int64)

    paths = {name: batch_dir / name for name in (s.ITEM_EMBEDDINGS_FILE, s.ITEM_STATS_FILE,
                                                  s.SESSION_STREAM_FILE, s.ITEM_STREAM_FILE)}
    _write(pa.Table.from_arrays([pa.array(item_ids), vectors, stamps], schema=ITEM_EMBEDDINGS_SCHEMA),
           paths[s.ITEM_EMBEDDINGS_FILE])
    _write(pa.Table.from_arrays([pa.array(item_ids), pa.array(popularity), pa.array(popularity_ranks(popularity)),
                                 pa.array(category), stamps], schema=ITEM_STATS_SCHEMA),
           paths[s.ITEM_STATS_FILE])
    for name, schema in ((s.SESSION_STREAM_FILE, SESSION_STREAM_SCHEMA), (s.ITEM_STREAM_FILE, ITEM_STREAM_SCHEMA)):
        if not paths[name].exists() or pq.read_schema(paths[name]) != schema:  # never wipe pushed rows
            _write(schema.empty_table(), paths[name])
    return paths
