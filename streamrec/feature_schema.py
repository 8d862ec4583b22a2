"""Names of entities, feature views, push sources, features and batch files, defined once.

Plain constants without a Feast import, so the worker, the API and training can share them
without paying for `import feast`. `features.py` builds the Feast objects from them.
"""

PROJECT = "streamrec"

# entities and join keys
ITEM_ENTITY = "item"
ITEM_KEY = "item_id"
SESSION_ENTITY = "session"
SESSION_KEY = "session_id"
EVENT_TIMESTAMP = "event_timestamp"

# batch feature views (written by training, materialized to Redis)
ITEM_EMBEDDINGS_VIEW = "item_embeddings"
EMBEDDING = "embedding"

ITEM_STATS_VIEW = "item_stats"
POPULARITY = "popularity"
POPULARITY_RANK = "popularity_rank"
CATEGORY = "category"

# streaming feature views (written by the Faust worker, via push sources)
SESSION_FEATURES_VIEW = "session_features"
SESSION_PUSH_SOURCE = "session_push"
RECENT_ITEMS = "recent_items"
CLICK_COUNT = "click_count"
LAST_EVENT_TS = "last_event_ts"  # event time of the newest applied click, unix milliseconds

ITEM_TRENDING_VIEW = "item_trending"
ITEM_PUSH_SOURCE = "item_trending_push"
CLICKS_5M = "clicks_5m"
CLICKS_1H = "clicks_1h"
WINDOW_END_TS = "window_end_ts"  # stream time the windows end at, unix milliseconds
TRENDING_BUCKET_MS = 60_000  # the worker counts clicks per item in one-minute event-time buckets
CLICKS_5M_WINDOW_MS = 5 * 60_000
CLICKS_1H_WINDOW_MS = 60 * 60_000

# the stream archive (streamrec.archive): archived clicks as an offline-only view, for point-in-time joins
ARCHIVED_CLICKS_VIEW = "archived_clicks"
ARCHIVED_CLICKS_SOURCE = "archived_clicks_source"
ARCHIVED_IMPRESSIONS_SOURCE = "archived_impressions_source"
CLICKED_ITEM = "clicked_item"  # the archive's item_id column, renamed: the view is keyed by session
EVENT_TYPE = "event_type"
ARCHIVED_CLICKS_FEATURES = (CLICKED_ITEM, EVENT_TYPE)

SESSION_FEATURES = (RECENT_ITEMS, CLICK_COUNT, LAST_EVENT_TS)
ITEM_TRENDING_FEATURES = (CLICKS_5M, CLICKS_1H, WINDOW_END_TS)
TRENDING_COUNTS = (CLICKS_5M, CLICKS_1H)  # the streaming features the ranker reads, by these names
ITEM_STATS_FEATURES = (POPULARITY, POPULARITY_RANK, CATEGORY)

# parquet batch sources, relative to Settings.batch_dir
ITEM_EMBEDDINGS_FILE = "item_embeddings.parquet"
ITEM_STATS_FILE = "item_stats.parquet"
SESSION_STREAM_FILE = "session_features.parquet"
ITEM_STREAM_FILE = "item_trending.parquet"

CATEGORY_UNKNOWN = -1


# --- view specs: the single description of every feature view's key, TTL and feature types -----
# features.py turns these into Feast objects; streamrec's own Redis codec reads and writes by them.
INT64 = "int64"
INT64_LIST = "int64_list"
FLOAT_LIST = "float_list"

DAY_S = 86_400


class ViewSpec:
    """Key, time-to-live and typed features of one feature view."""

    def __init__(self, name: str, join_key: str, key_kind: str, ttl_s: int, features: dict[str, str]):
        self.name = name
        self.join_key = join_key
        self.key_kind = key_kind  # INT64 or "string"
        self.ttl_s = ttl_s
        self.features = features


VIEWS: dict[str, ViewSpec] = {
    spec.name: spec
    for spec in (
        ViewSpec(ITEM_EMBEDDINGS_VIEW, ITEM_KEY, INT64, 3650 * DAY_S, {EMBEDDING: FLOAT_LIST}),
        ViewSpec(ITEM_STATS_VIEW, ITEM_KEY, INT64, 3650 * DAY_S,
                 {POPULARITY: INT64, POPULARITY_RANK: INT64, CATEGORY: INT64}),
        ViewSpec(SESSION_FEATURES_VIEW, SESSION_KEY, "string", DAY_S,
                 {RECENT_ITEMS: INT64_LIST, CLICK_COUNT: INT64, LAST_EVENT_TS: INT64}),
        ViewSpec(ITEM_TRENDING_VIEW, ITEM_KEY, INT64, DAY_S,
                 {CLICKS_5M: INT64, CLICKS_1H: INT64, WINDOW_END_TS: INT64}),
    )
}
