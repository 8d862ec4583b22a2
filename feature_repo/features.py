"""Feast definitions: entities, batch sources, push sources and feature views.

Batch sources are parquet files written by `streamrec train` under `$STREAMREC_DATA_DIR/batch`
(absolute paths: the duckdb offline store needs them). Streaming views are fed through push
sources by the Faust worker.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Int64

from streamrec import feature_schema as s
from streamrec.settings import Settings

BATCH_DIR = Settings().batch_dir  # the same STREAMREC_DATA_DIR the trainer writes under


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
