"""streamrec's own Redis read path returns exactly what Feast's SDK returns, on a live Redis.

Batch features are materialized by `feast materialize-incremental` (the `live_settings` fixture);
streaming features are written by `OnlineStore.write` (what the worker does), and in the reverse
direction by Feast's `write_to_online_store`. Every read is compared against
`FeatureStore.get_online_features(...).to_dict()` value for value, with types: embeddings as exact
float lists, int64 as int, missing entities as None for every feature.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import redis

from streamrec import feature_schema as s
from streamrec import feast_codec as codec
from streamrec.online_store import OnlineStore, ReadRequest, Row
from streamrec.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MISSING_ITEMS = (987_654_321_000, -7)  # never in the catalogue; a negative id exercises int64 keys


# --- helpers -----------------------------------------------------------------------------------

def _typed(value: object) -> object:
    """A value with its type spelled out, so 1 vs 1.0 vs True or [] vs None cannot compare equal."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_typed(v) for v in value))
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def _typed_rows(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{f: _typed(v) for f, v in row.items()} for row in rows]


def feast_rows(store, view: str, join_key: str, keys: Sequence[int | str],
               features: Sequence[str]) -> list[dict[str, object]]:
    """Feast SDK read, reshaped from to_dict()'s columns into one {feature: value} per key."""
    response = store.get_online_features(
        features=[f"{view}:{f}" for f in features],
        entity_rows=[{join_key: k} for k in keys],
    ).to_dict()
    assert response[join_key] == list(keys), "Feast reordered or dropped entity rows"
    return [{f: response[f][i] for f in features} for i in range(len(keys))]


def ours_rows(settings: Settings, view: str, keys: Sequence[int | str],
              features: tuple[str, ...] | None = None) -> list[dict[str, object]]:
    """streamrec read; a missing entity (None) becomes None for every feature, as Feast reports it."""
    wanted = features or tuple(s.VIEWS[view].features)

    async def read():
        store = OnlineStore.from_url(settings.redis_url)
        try:
            return await store.read(view, keys, features)
        finally:
            await store.close()

    rows = asyncio.run(read())
    assert len(rows) == len(keys)
    out = []
    for row in rows:
        if row is not None:
            assert tuple(row) == wanted, f"OnlineStore.read returned features {tuple(row)}, asked {wanted}"
        out.append({f: None for f in wanted} if row is None else dict(row))
    return out


def write_rows(settings: Settings, view: str, rows: list[Row], expire_s: int | None = None) -> int:
    async def write():
        store = OnlineStore.from_url(settings.redis_url)
        try:
            return await store.write(view, rows, expire_s=expire_s)
        finally:
            await store.close()

    return asyncio.run(write())


def assert_same(ours: list[dict], feast: list[dict], keys: Sequence, what: str) -> None:
    ours_t, feast_t = _typed_rows(ours), _typed_rows(feast)
    mismatches = [(k, o, f) for k, o, f in zip(keys, ours_t, feast_t) if o != f]
    assert not mismatches, (
        f"{what}: {len(mismatches)} of {len(keys)} rows differ from Feast; first ones "
        + "; ".join(f"key={k!r} ours={o} feast={f}" for k, o, f in mismatches[:3])
    )


@pytest.fixture(scope="module")
def feast_store(live_settings: Settings) -> Iterator[object]:
    """Feast's SDK on the fixture's registry and Redis (feature_store.yaml reads these env vars)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in live_settings.feast_env().items():
            mp.setenv(name, value)
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(live_settings.feature_repo))
        connection = store.config.online_store.connection_string
        assert connection == live_settings.redis_address, f"Feast points at {connection!r}"
        yield store


@pytest.fixture(scope="module")
def item_ids(live_settings: Settings) -> list[int]:
    stats = pd.read_parquet(live_settings.batch_dir / s.ITEM_STATS_FILE)
    real = sorted(int(i) for i in stats[s.ITEM_KEY].unique())
    assert len(real) >= 48
    picked = [real[i] for i in np.linspace(0, len(real) - 1, 48).astype(int)]
    # two absent ids, and a repeated real one (Feast dedups entity rows and fans them back out)
    return [*picked[:24], MISSING_ITEMS[0], *picked[24:], MISSING_ITEMS[1], picked[3]]


def _now() -> float:
    return time.time()


# --- 1. batch views materialized by Feast ------------------------------------------------------

@pytest.mark.parametrize("view", [s.ITEM_EMBEDDINGS_VIEW, s.ITEM_STATS_VIEW])
def test_materialized_item_views_match_feast(live_settings, feast_store, item_ids, view):
    features = tuple(s.VIEWS[view].features)
    feast = feast_rows(feast_store, view, s.ITEM_KEY, item_ids, features)
    ours = ours_rows(live_settings, view, item_ids)
    assert_same(ours, feast, item_ids, view)

    # the comparison is not vacuous: real items have values, the absent ones are null in both
    present = [k for k, row in zip(item_ids, feast) if all(v is not None for v in row.values())]
    assert len(present) >= 40, f"only {len(present)} of {len(item_ids)} items materialized in {view}"
    for missing in MISSING_ITEMS:
        row = ours[item_ids.index(missing)]
        assert row == {f: None for f in features}
    if view == s.ITEM_EMBEDDINGS_VIEW:
        vector = feast[0][s.EMBEDDING]
        assert isinstance(vector, list) and len(vector) > 1 and all(isinstance(x, float) for x in vector)
        assert isinstance(ours[0][s.EMBEDDING], np.ndarray) and ours[0][s.EMBEDDING].dtype == np.float32


def test_materialized_embeddings_equal_the_batch_parquet(live_settings, item_ids):
    """Independent of Feast's read: the decoded float32 vectors are bit-identical to the parquet."""
    batch = pd.read_parquet(live_settings.batch_dir / s.ITEM_EMBEDDINGS_FILE)
    batch = batch.sort_values(s.EVENT_TIMESTAMP).drop_duplicates(s.ITEM_KEY, keep="last")
    expected = {int(k): np.asarray(v, dtype=np.float32) for k, v in zip(batch[s.ITEM_KEY], batch[s.EMBEDDING])}
    ours = ours_rows(live_settings, s.ITEM_EMBEDDINGS_VIEW, item_ids)
    checked = 0
    for key, row in zip(item_ids, ours):
        if key in expected:
            assert row[s.EMBEDDING] is not None, f"item {key} has an embedding in the parquet but none online"
            assert row[s.EMBEDDING].tobytes() == expected[key].tobytes(), f"item {key}'s embedding differs"
            checked += 1
        else:
            assert row[s.EMBEDDING] is None
    assert checked >= 40


def test_feature_subsets_and_read_many_match_feast(live_settings, feast_store, item_ids):
    subset = (s.CATEGORY, s.POPULARITY)  # not the view's declared order
    feast = feast_rows(feast_store, s.ITEM_STATS_VIEW, s.ITEM_KEY, item_ids, subset)
    ours = ours_rows(live_settings, s.ITEM_STATS_VIEW, item_ids, subset)
    assert_same(ours, feast, item_ids, "item_stats subset")

    # both views in one SDK call, and in one streamrec round trip
    response = feast_store.get_online_features(
        features=[f"{s.ITEM_EMBEDDINGS_VIEW}:{s.EMBEDDING}"]
        + [f"{s.ITEM_STATS_VIEW}:{f}" for f in s.ITEM_STATS_FEATURES],
        entity_rows=[{s.ITEM_KEY: k} for k in item_ids],
        full_feature_names=True,
    ).to_dict()

    async def read():
        store = OnlineStore.from_url(live_settings.redis_url)
        try:
            return await store.read_many([
                ReadRequest(s.ITEM_EMBEDDINGS_VIEW, item_ids),
                ReadRequest(s.ITEM_STATS_VIEW, item_ids, (s.POPULARITY_RANK,)),
            ])
        finally:
            await store.close()

    embeddings, ranks = asyncio.run(read())
    for i, key in enumerate(item_ids):
        ours_embedding = None if embeddings[i] is None else embeddings[i][s.EMBEDDING]
        ours_rank = None if ranks[i] is None else ranks[i][s.POPULARITY_RANK]
        assert _typed(ours_embedding) == _typed(response[f"{s.ITEM_EMBEDDINGS_VIEW}__{s.EMBEDDING}"][i]), key
        assert _typed(ours_rank) == _typed(response[f"{s.ITEM_STATS_VIEW}__{s.POPULARITY_RANK}"][i]), key


# --- 2. streaming views written by streamrec ---------------------------------------------------

def _session_rows(tag: str, now: float) -> tuple[list[Row], list[str]]:
    now_ms = int(now * 1000)
    rows = [
        Row(f"{tag}-fresh", {s.RECENT_ITEMS: [17, 3, 2**40, 0, 800], s.CLICK_COUNT: 5, s.LAST_EVENT_TS: now_ms},
            now_ms / 1000),
        Row(f"{tag}-one", {s.RECENT_ITEMS: [42], s.CLICK_COUNT: 1, s.LAST_EVENT_TS: now_ms - 1234},
            (now_ms - 1234) / 1000),
        Row(f"{tag}-empty", {s.RECENT_ITEMS: [], s.CLICK_COUNT: 0, s.LAST_EVENT_TS: now_ms}, now_ms / 1000),
        Row(f"{tag}-ünïcode:web/1", {s.RECENT_ITEMS: list(range(20)), s.CLICK_COUNT: 2**33,
                                      s.LAST_EVENT_TS: now_ms}, now_ms / 1000),
        Row(f"{tag}-null-count", {s.RECENT_ITEMS: [9], s.LAST_EVENT_TS: now_ms}, now_ms / 1000),  # feature absent
    ]
    return rows, [f"{tag}-missing"]


def test_streamrec_written_sessions_match_feast(live_settings, feast_store):
    tag = f"it-{uuid.uuid4().hex[:8]}"
    rows, missing = _session_rows(tag, _now())
    assert write_rows(live_settings, s.SESSION_FEATURES_VIEW, rows, expire_s=live_settings.session_ttl_s) == len(rows)
    keys = [r.key for r in rows] + missing
    features = s.SESSION_FEATURES
    feast = feast_rows(feast_store, s.SESSION_FEATURES_VIEW, s.SESSION_KEY, keys, features)
    ours = ours_rows(live_settings, s.SESSION_FEATURES_VIEW, keys)
    assert_same(ours, feast, keys, "session_features written by OnlineStore.write")

    # and both equal what was written (so matching Feast is not matching on garbage)
    for row, got in zip(rows, ours):
        assert got == {f: row.values.get(f) for f in features}, row.key
    assert ours[-1] == {f: None for f in features}
    assert feast[2][s.RECENT_ITEMS] == []  # an empty list stays an empty list, not null


def test_streamrec_written_item_trending_matches_feast(live_settings, feast_store, item_ids):
    now_ms = int(_now() * 1000)
    real = item_ids[0]
    fresh = [
        Row(real, {s.CLICKS_5M: 3, s.CLICKS_1H: 40, s.WINDOW_END_TS: now_ms}, now_ms / 1000),
        Row(10**12 + 1, {s.CLICKS_5M: 0, s.CLICKS_1H: 0, s.WINDOW_END_TS: now_ms}, now_ms / 1000),
        Row(10**12 + 2, {s.CLICKS_5M: 2**40, s.CLICKS_1H: 2**41, s.WINDOW_END_TS: now_ms - 5}, (now_ms - 5) / 1000),
    ]
    assert write_rows(live_settings, s.ITEM_TRENDING_VIEW, fresh) == len(fresh)
    # a real item whose hash holds the batch views but no trending fields (materialization may
    # have loaded trending rows for any item, so take this one's away)
    spec = s.VIEWS[s.ITEM_TRENDING_VIEW]
    client = redis.Redis.from_url(live_settings.redis_url)
    try:
        client.hdel(codec.entity_key(spec, item_ids[1]), *codec.read_fields(spec))
        assert client.exists(codec.entity_key(spec, item_ids[1]))
    finally:
        client.close()
    keys = [r.key for r in fresh] + [MISSING_ITEMS[0], item_ids[1]]  # absent; real item without trending
    features = s.ITEM_TRENDING_FEATURES
    feast = feast_rows(feast_store, s.ITEM_TRENDING_VIEW, s.ITEM_KEY, keys, features)
    ours = ours_rows(live_settings, s.ITEM_TRENDING_VIEW, keys)
    assert_same(ours, feast, keys, "item_trending written by OnlineStore.write")
    for row, got in zip(fresh, ours):
        assert got == row.values
    assert ours[-2] == ours[-1] == {f: None for f in features}

    # the item's hash is shared with the batch views: writing trending left its embedding intact
    for view in (s.ITEM_EMBEDDINGS_VIEW, s.ITEM_STATS_VIEW):
        feats = tuple(s.VIEWS[view].features)
        assert_same(ours_rows(live_settings, view, [real]),
                    feast_rows(feast_store, view, s.ITEM_KEY, [real], feats), [real], f"{view} after trending")


# --- 3. expired rows: older than the view's TTL, or expired by Redis itself ---------------------
# Feast 0.67 applies a view's TTL when it materializes (only source rows newer than now - ttl are
# loaded), never when it reads: RedisOnlineStore._get_features_for_entity and
# utils._populate_response_from_feature_data return whatever the hash holds, status PRESENT, with
# the row's own event timestamp (OUTSIDE_MAX_AGE is only set for precomputed feature-service
# vectors). A key Redis has expired is simply absent. streamrec must agree on both.

def _expired_row(view: str, now: float) -> Row:
    """One row of `view` an hour past the view's TTL, with non-trivial values of every type."""
    old = now - s.VIEWS[view].ttl_s - 3600
    old_ms = int(old * 1000)
    values: dict[str, dict[str, object]] = {
        s.SESSION_FEATURES_VIEW: {s.RECENT_ITEMS: [1, 2**40, 3], s.CLICK_COUNT: 2, s.LAST_EVENT_TS: old_ms},
        s.ITEM_EMBEDDINGS_VIEW: {s.EMBEDDING: [0.25, -1.5, 3.0e-7, 1 / 3]},
        s.ITEM_STATS_VIEW: {s.POPULARITY: 7, s.POPULARITY_RANK: 123, s.CATEGORY: -1},
        s.ITEM_TRENDING_VIEW: {s.CLICKS_5M: 1, s.CLICKS_1H: 2**35, s.WINDOW_END_TS: old_ms},
    }
    key: int | str = (f"it-expired-{uuid.uuid4().hex[:8]}" if view == s.SESSION_FEATURES_VIEW
                      else 10**12 + uuid.uuid4().int % 10**9)  # a fresh, never-materialized item
    return Row(key, values[view], old)


def _expected(view: str, values: dict[str, object]) -> dict[str, object]:
    """What a reader gets back for written values (float lists come back as float32)."""
    out = {}
    for feature, kind in s.VIEWS[view].features.items():
        value = values.get(feature)
        out[feature] = (np.asarray(value, dtype=np.float32).tolist() if kind == s.FLOAT_LIST and value is not None
                        else value)
    return out


@pytest.mark.parametrize("view", list(s.VIEWS))
def test_rows_older_than_ttl_are_returned_like_feast(live_settings, feast_store, view):
    """Every view type (int64 lists, float lists, int64): an expired row reads as Feast reads it."""
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    now = _now()
    row = _expired_row(view, now)
    join_key = s.VIEWS[view].join_key
    assert now - row.event_ts > s.VIEWS[view].ttl_s
    write_rows(live_settings, view, [row])
    features = tuple(s.VIEWS[view].features)

    ours = ours_rows(live_settings, view, [row.key])
    feast = feast_rows(feast_store, view, join_key, [row.key], features)
    assert_same(ours, feast, [row.key], f"{view} row older than its TTL")

    # Feast does not filter it: the written values, status PRESENT, the row's old event time
    assert _typed_rows(feast) == _typed_rows([_expected(view, row.values)])
    response = feast_store.get_online_features(features=[f"{view}:{f}" for f in features],
                                               entity_rows=[{join_key: row.key}])
    names = list(response.proto.metadata.feature_names.val)
    for feature in features:
        vector = response.proto.results[names.index(feature)]
        assert vector.statuses[0] == FieldStatus.PRESENT, f"{feature}: {FieldStatus.Name(vector.statuses[0])}"
        assert vector.event_timestamps[0].seconds == int(row.event_ts)


@pytest.mark.parametrize("view", list(s.VIEWS))
def test_rows_expired_by_redis_read_as_missing_like_feast(live_settings, feast_store, view):
    """A key past its Redis EXPIRE (how streaming session rows age out) is missing for both readers."""
    row = _expired_row(view, _now())
    row = Row(row.key, row.values, _now())
    write_rows(live_settings, view, [row], expire_s=1)
    client = redis.Redis.from_url(live_settings.redis_url)
    try:
        key = codec.entity_key(s.VIEWS[view], row.key)
        assert client.exists(key)
        wait_deadline = time.monotonic() + 5
        while client.exists(key) and time.monotonic() < wait_deadline:
            time.sleep(0.05)
        assert not client.exists(key), "Redis did not expire the key"
    finally:
        client.close()
    features = tuple(s.VIEWS[view].features)
    ours = ours_rows(live_settings, view, [row.key])
    feast = feast_rows(feast_store, view, s.VIEWS[view].join_key, [row.key], features)
    assert_same(ours, feast, [row.key], f"{view} row expired by Redis")
    assert ours == [{f: None for f in features}]


def test_recommender_request_matches_feast(live_settings, feast_store, item_ids):
    """The read of one /recommend request (session + embeddings, one round trip) against one SDK
    call for both views, for fresh, expired and missing sessions and present and missing items."""
    now = _now()
    tag = f"it-req-{uuid.uuid4().hex[:8]}"
    fresh = Row(f"{tag}-fresh", {s.RECENT_ITEMS: item_ids[:5], s.CLICK_COUNT: 5,
                                 s.LAST_EVENT_TS: int(now * 1000)}, now)
    expired = _expired_row(s.SESSION_FEATURES_VIEW, now)
    write_rows(live_settings, s.SESSION_FEATURES_VIEW, [fresh, expired], expire_s=live_settings.session_ttl_s)

    for session_id in (fresh.key, expired.key, f"{tag}-missing"):
        response = feast_store.get_online_features(
            features=[f"{s.SESSION_FEATURES_VIEW}:{f}" for f in s.SESSION_FEATURES]
            + [f"{s.ITEM_EMBEDDINGS_VIEW}:{s.EMBEDDING}"],
            entity_rows=[{s.SESSION_KEY: session_id, s.ITEM_KEY: item} for item in item_ids],
        ).to_dict()

        async def read():
            store = OnlineStore.from_url(live_settings.redis_url)
            try:
                return await store.read_many([
                    ReadRequest(s.SESSION_FEATURES_VIEW, [session_id], s.SESSION_FEATURES),
                    ReadRequest(s.ITEM_EMBEDDINGS_VIEW, item_ids, (s.EMBEDDING,)),
                ])
            finally:
                await store.close()

        (session,), embeddings = asyncio.run(read())
        for feature in s.SESSION_FEATURES:
            ours = None if session is None else session[feature]
            assert all(_typed(v) == _typed(ours) for v in response[feature]), (session_id, feature)
        for i, item in enumerate(item_ids):
            ours = None if embeddings[i] is None else embeddings[i][s.EMBEDDING]
            assert _typed(ours) == _typed(response[s.EMBEDDING][i]), (session_id, item)
        assert (session is None) == session_id.endswith("-missing")
    assert any(e is None for e in embeddings) and sum(e is not None for e in embeddings) >= 40


# --- 4. the reverse: rows written by Feast's SDK, read by streamrec ----------------------------

def test_feast_written_sessions_read_identically(live_settings, feast_store):
    tag = f"it-feast-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    frame = pd.DataFrame({
        s.SESSION_KEY: [f"{tag}-a", f"{tag}-b", f"{tag}-ü", f"{tag}-empty"],
        s.RECENT_ITEMS: [[5, 6, 7], [2**40, 0], list(range(25)), []],
        s.CLICK_COUNT: [3, 12, 2**35, 0],
        s.LAST_EVENT_TS: [now_ms, now_ms - 10, now_ms - 999, now_ms],
        s.EVENT_TIMESTAMP: [now, pd.Timestamp(now) - pd.Timedelta(microseconds=10_007),
                            pd.Timestamp(now) - pd.Timedelta(seconds=1), now],
    })
    feast_store.write_to_online_store(s.SESSION_FEATURES_VIEW, frame)

    keys = list(frame[s.SESSION_KEY]) + [f"{tag}-missing"]
    feast = feast_rows(feast_store, s.SESSION_FEATURES_VIEW, s.SESSION_KEY, keys, s.SESSION_FEATURES)
    ours = ours_rows(live_settings, s.SESSION_FEATURES_VIEW, keys)
    assert_same(ours, feast, keys, "session_features written by Feast's write_to_online_store")
    for i, got in enumerate(ours[:-1]):
        assert got == {f: (list(frame[f][i]) if f == s.RECENT_ITEMS else int(frame[f][i]))
                       for f in s.SESSION_FEATURES}, keys[i]
    assert ours[-1] == {f: None for f in s.SESSION_FEATURES}

    # byte level: the hash Feast wrote is exactly the one streamrec's codec would write
    spec = s.VIEWS[s.SESSION_FEATURES_VIEW]
    client = redis.Redis.from_url(live_settings.redis_url)
    try:
        for i, key in enumerate(frame[s.SESSION_KEY]):
            stored = client.hgetall(codec.entity_key(spec, key))
            values = {f: (list(frame[f][i]) if f == s.RECENT_ITEMS else int(frame[f][i]))
                      for f in s.SESSION_FEATURES}
            expected = codec.encode_row(spec, values, pd.Timestamp(frame[s.EVENT_TIMESTAMP][i]).timestamp())
            assert stored == expected, key
    finally:
        client.close()
