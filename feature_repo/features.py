"""Feast definitions: entities, batch sources, push sources and feature views.

Batch sources are parquet files written by `streamrec train` under `$STREAMREC_DATA_DIR/batch`
(absolute paths: the duckdb offline store needs them). Streaming views are fed through push
sources by the Faust worker. The stream archive (`streamrec archive`, under
`$STREAMREC_ARCHIVE_DIR`, default `$STREAMREC_DATA_DIR/archive`) is registered as two glob file
sources over its hive folders, and archived clicks as an offline-only view for point-in-time joins.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, Int64, String

from streamrec import archive
from streamrec import feature_schema as s
from streamrec.settings import Settings

BATCH_DIR = Settings().batch_dir  # the same STREAMREC_DATA_DIR the trainer writes under
ARCHIVE_DIR = Settings().archive_path  # where `streamrec archive` writes


def _parquet(name: str) -> FileSource:
    return FileSource(
        name=f"{name.removesuffix('.parquet')}_source",
        path=str(BATCH_DIR / name),
        timestamp_field=s.EVENT_TIMESTAMP,
    )


item = Entity(name=s.ITEM_ENTITY, join_keys=[s.ITEM_KEY], value_type=ValueType.INT64,
              description="A catalogue item.")
session = Entity(name=s.SESSION_ENTITY, join_keys=[s.SESSION_KEY], value_type=ValueType.STRING,
                 description="A visitor's browsing session.")

_DTYPES = {s.INT64: Int64, s.INT64_LIST: Array(Int64), s.FLOAT_LIST: Array(Float32)}
_ENTITIES = {s.ITEM_KEY: item, s.SESSION_KEY: session}


def _view(name: str, source, description: str) -> FeatureView:
    spec = s.VIEWS[name]
    return FeatureView(
        name=spec.name,
        entities=[_ENTITIES[spec.join_key]],
        ttl=timedelta(seconds=spec.ttl_s),
        schema=[Field(name=f, dtype=_DTYPES[kind]) for f, kind in spec.features.items()],
        source=source,
        online=True,
        description=description,
    )


item_embeddings = _view(
    s.ITEM_EMBEDDINGS_VIEW, _parquet(s.ITEM_EMBEDDINGS_FILE),
    "L2-normalised item factors trained with implicit (stage 1).",
)
item_stats = _view(
    s.ITEM_STATS_VIEW, _parquet(s.ITEM_STATS_FILE),
    "Training-window popularity, its rank (1 = most popular) and category (-1 when unknown).",
)
session_push = PushSource(name=s.SESSION_PUSH_SOURCE, batch_source=_parquet(s.SESSION_STREAM_FILE))
session_features = _view(
    s.SESSION_FEATURES_VIEW, session_push,
    "Streaming session state: recent items (oldest first), clicks, last event time (ms).",
)
item_trending_push = PushSource(name=s.ITEM_PUSH_SOURCE, batch_source=_parquet(s.ITEM_STREAM_FILE))
item_trending = _view(
    s.ITEM_TRENDING_VIEW, item_trending_push,
    "Streaming per-item click counts over event-time windows ending at window_end_ts.",
)


# --- the stream archive ---------------------------------------------------------------------------
# duckdb reads the glob (date=*/hour=*/*.parquet; the .tmp files of a write in progress never match).
# Queries need at least one archived file: an empty archive is an error in duckdb, not an empty result.
archived_clicks_source = FileSource(
    name=s.ARCHIVED_CLICKS_SOURCE,
    path=archive.glob_pattern(ARCHIVE_DIR, archive.CLICKS),
    file_format=ParquetFormat(),
    timestamp_field=s.EVENT_TIMESTAMP,
    field_mapping={s.ITEM_KEY: s.CLICKED_ITEM},
    description="Every valid click of the clicks topic, once, by event time (streamrec archive).",
)
archived_impressions_source = FileSource(
    name=s.ARCHIVED_IMPRESSIONS_SOURCE,
    path=archive.glob_pattern(ARCHIVE_DIR, archive.IMPRESSIONS),
    file_format=ParquetFormat(),
    timestamp_field=s.EVENT_TIMESTAMP,
    description="Every valid record of the impressions topic (the inference log), once, by event time.",
)
archived_clicks = FeatureView(
    name=s.ARCHIVED_CLICKS_VIEW,
    entities=[session],
    ttl=timedelta(seconds=s.DAY_S),
    schema=[Field(name=s.SESSION_KEY, dtype=String), Field(name=s.CLICKED_ITEM, dtype=Int64),
            Field(name=s.EVENT_TYPE, dtype=String)],
    source=archived_clicks_source,
    online=False,  # training data only: never materialized to Redis
    description="A session's latest archived click (item, kind) as of a time: point-in-time joins over the archive.",
)
