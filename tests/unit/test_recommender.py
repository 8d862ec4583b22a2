"""The /recommend pipeline on an in-memory model: stages, exclusion, and the latency budget."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from candidates.bundle import ModelBundle
from candidates.index import CandidateIndex, build_index
from candidates.session_knn import SessionKNN
from streamrec import feature_schema as s
from candidates.features import session_embedding
from candidates.features import merge_session_items
from serving.recommender import Recommender
from streamrec.artifacts import CoVisitation, ModelArtifacts
from streamrec.settings import Settings

N_ITEMS, DIM = 300, 16


def tiny_model(tmp_path) -> ModelArtifacts:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    item_ids = np.arange(1000, 1000 + N_ITEMS, dtype=np.int64)
    popularity = np.arange(N_ITEMS, 0, -1, dtype=np.int64)
    indptr = np.arange(0, 2 * N_ITEMS + 1, 2, dtype=np.int64)  # each item: its two successors
    neighbours = np.array([item_ids[(r + d) % N_ITEMS] for r in range(N_ITEMS) for d in (1, 2)], dtype=np.int64)
    scores = np.tile(np.array([2.0, 1.0], dtype=np.float32), N_ITEMS)
    return ModelArtifacts("v1", tmp_path, item_ids, embeddings, popularity, item_ids[:50].copy(),
                          CoVisitation(indptr, neighbours, scores))


class FakeStore:
    """Online store stand-in serving the model's embeddings and given session rows; `hang`: every
    read waits until cancelled (a Redis that stopped answering), and says so in `cancelled`."""

    def __init__(self, model: ModelArtifacts, sessions: dict | None = None, hang: bool = False,
                 fail: bool = False):
        self.model, self.sessions, self.hang, self.fail = model, sessions or {}, hang, fail
        self.calls = 0
        self.cancelled = 0

    async def read_many(self, requests):
        self.calls += 1
        if self.hang:
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.fail:
            raise ConnectionError("redis down")
        out = []
        for request in requests:
            rows = []
            for key in request.keys:
                if request.view == s.SESSION_FEATURES_VIEW:
                    rows.append(self.sessions.get(key))
                elif request.view == s.ITEM_EMBEDDINGS_VIEW:
                    row = self.model.row_of(key)
                    rows.append(None if row is None else {s.EMBEDDING: self.model.item_embeddings[row]})
                else:
                    rows.append(None)
            out.append(rows)
        return out


def recommender(model, store, budget_ms=50.0, scorer=None, **settings) -> Recommender:
    index, info = build_index(model.item_embeddings, model.item_ids)
    return Recommender(Settings(latency_budget_ms=budget_ms, **settings), store,
                       ModelBundle(model, CandidateIndex(index, info), SessionKNN.load(model.path)), scorer=scorer)


def test_merge_keeps_latest_position_and_limit():
    assert merge_session_items([1, 2, 3], [2, 4], limit=10) == [1, 3, 2, 4]
    assert merge_session_items([1, 2, 3], [4], limit=2) == [3, 4]


def test_session_embedding_weights_recent_items_more():
    a, b = np.eye(2, dtype=np.float32)
    vector = session_embedding(np.array([a, b]), decay=0.5)
    assert vector[1] > vector[0] and abs(np.linalg.norm(vector) - 1) < 1e-6
    assert session_embedding(np.zeros((0, 2)), 0.5) is None


async def test_empty_session_gets_popular_items(tmp_path):
    model = tiny_model(tmp_path)
    result = await recommender(model, FakeStore(model)).recommend("s", 5, [])
    assert result.stage == "fallback_popular"
    assert [i for i, _ in result.items] == model.popular[:5].tolist()


async def test_streaming_items_are_used_and_excluded(tmp_path):
    model = tiny_model(tmp_path)
    store = FakeStore(model, sessions={"s": {s.RECENT_ITEMS: [1010, 1011]}})
    result = await recommender(model, store).recommend("s", 10, [1012], exclude_seen=True)
    assert result.stage == "stream"
    assert result.session_items == [1010, 1011, 1012]
    ids = [i for i, _ in result.items]
    assert len(ids) == 10 and not {1010, 1011, 1012} & set(ids)
    assert 1013 in ids  # co-visited successor of the last item is a candidate and scores high
    assert not result.degraded_reasons


async def test_seen_items_may_be_recommended_again_by_default(tmp_path):
    # repeat clicks are common in sessions: the API's default keeps seen items among the candidates
    model = tiny_model(tmp_path)
    store = FakeStore(model, sessions={"s": {s.RECENT_ITEMS: [1010, 1011]}})
    result = await recommender(model, store).recommend("s", 10, [1012])
    assert {1010, 1011, 1012} & {i for i, _ in result.items}


async def test_request_items_only_is_the_batch_stage(tmp_path):
    model = tiny_model(tmp_path)
    result = await recommender(model, FakeStore(model)).recommend("new", 5, [1100])
    assert result.stage == "batch" and len(result.items) == 5


async def test_request_items_ride_along_with_the_session_read(tmp_path):
    model = tiny_model(tmp_path)
    store = ViewCountingStore(model)
    result = await recommender(model, store).recommend("new", 5, [1100, 1101])
    assert result.stage == "batch" and not result.degraded_reasons
    # session row and both embeddings in one round trip (then the candidates' trending rows)
    assert store.views_per_call[0] == [s.SESSION_FEATURES_VIEW, s.ITEM_EMBEDDINGS_VIEW]
    assert [s.ITEM_EMBEDDINGS_VIEW] not in store.views_per_call
    assert store.keys_read[s.ITEM_EMBEDDINGS_VIEW] == 2


async def test_only_stream_items_the_client_did_not_send_are_read_afterwards(tmp_path):
    model = tiny_model(tmp_path)
    store = ViewCountingStore(model)
    store.sessions = {"s": {s.RECENT_ITEMS: [1010, 1011, 1012]}}
    result = await recommender(model, store).recommend("s", 5, [1012])
    assert result.session_items == [1010, 1011, 1012] and not result.degraded_reasons
    assert store.views_per_call[:2] == [[s.SESSION_FEATURES_VIEW, s.ITEM_EMBEDDINGS_VIEW], [s.ITEM_EMBEDDINGS_VIEW]]
    assert store.keys_read[s.ITEM_EMBEDDINGS_VIEW] == 3  # 1012 with the session row, then 1010 and 1011


async def test_a_hanging_online_store_is_cut_off_by_the_budget(tmp_path, monkeypatch):
    # behaviour, not wall time (bench serve measures the latency): the read that never answers is
    # given at most the request's budget, then cancelled, and the answer comes from memory
    import serving.budget

    granted: list[float] = []
    wait_for = asyncio.wait_for

    def spy(awaitable, timeout):
        granted.append(timeout)
        return wait_for(awaitable, timeout)

    monkeypatch.setattr(serving.budget.asyncio, "wait_for", spy)
    model = tiny_model(tmp_path)
    store = FakeStore(model, hang=True)
    result = await wait_for(recommender(model, store, budget_ms=30).recommend("s", 5, [1100]), timeout=10)
    assert store.calls >= 1 and store.cancelled == store.calls
    assert granted and all(0 < t <= 0.030 for t in granted), granted
    assert result.degraded_reasons and "budget" in result.degraded_reasons[0]
    assert len(result.items) == 5


async def test_redis_failure_serves_from_memory_and_opens_the_breaker(tmp_path):
    model = tiny_model(tmp_path)
    store = FakeStore(model, fail=True)
    rec = recommender(model, store)
    first = await rec.recommend("s", 5, [1100])
    assert first.stage == "batch" and len(first.items) == 5
    assert any("unavailable" in r for r in first.degraded_reasons)
    calls = store.calls
    second = await rec.recommend("s", 5, [1100])
    assert store.calls == calls  # breaker open: no new attempt, no timeout paid
    assert second.degraded_reasons


def test_trending_counts_only_from_recent_windows():
    from serving.recommender import trending_clicks

    now = 10_000_000_000
    rows = [{s.CLICKS_5M: 2, s.CLICKS_1H: 5, s.WINDOW_END_TS: now - 1000},
            {s.CLICKS_5M: 1, s.CLICKS_1H: 9, s.WINDOW_END_TS: now - 4_000_000}, None]
    five, hour = trending_clicks(rows, now)
    assert five.tolist() == [2.0, 0.0, 0.0] and hour.tolist() == [5.0, 0.0, 0.0]


async def test_trending_history_replaces_the_online_read_at_the_requested_time(tmp_path):
    class Spy:
        def __init__(self):
            self.calls = []

        def counts(self, item_ids, at_ms):
            self.calls.append((np.asarray(item_ids).copy(), at_ms))
            return np.full(len(item_ids), 3, np.float32), np.full(len(item_ids), 7, np.float32)

    model = tiny_model(tmp_path)
    index, info = build_index(model.item_embeddings, model.item_ids)
    spy, store = Spy(), FakeStore(model)
    served = Recommender(Settings(), store, ModelBundle(model, CandidateIndex(index, info), SessionKNN.load(model.path)),
                         trending_history=spy)
    scored = []
    served.scorer.score = lambda candidates: scored.append(candidates) or candidates.features["clicks_1h"]
    result = await served.recommend("s", 5, [1010, 1011], use_stream=False, at_ms=1.5e12)
    assert len(result.items) == 5
    assert len(spy.calls) == 1 and spy.calls[0][1] == 1.5e12
    assert spy.calls[0][0].tolist() == scored[0].item_ids.tolist()
    assert (scored[0].features["clicks_5m"] == 3).all() and (scored[0].features["clicks_1h"] == 7).all()
    assert store.calls == 1  # embeddings only: no online trending read


def test_breaker_opens_only_after_consecutive_failures():
    from serving.budget import CircuitBreaker

    breaker = CircuitBreaker(open_s=60, threshold=3)
    breaker.failure(TimeoutError("slow"))
    breaker.failure(TimeoutError("slow"))
    assert not breaker.is_open  # a slow reply or two is not an outage
    breaker.success()
    breaker.failure(ConnectionError("down"))
    breaker.failure(ConnectionError("down"))
    assert not breaker.is_open  # the success reset the count
    breaker.failure(ConnectionError("down"))
    assert breaker.is_open and breaker.last_error == "down"


class ViewCountingStore(FakeStore):
    """FakeStore that also answers trending rows and counts the keys read per view."""

    def __init__(self, model: ModelArtifacts) -> None:
        super().__init__(model)
        self.keys_read: dict[str, int] = {}
        self.views_per_call: list[list[str]] = []

    async def read_many(self, requests):
        self.views_per_call.append([request.view for request in requests])
        for request in requests:
            self.keys_read[request.view] = self.keys_read.get(request.view, 0) + len(request.keys)
        out = await super().read_many(requests)
        now_ms = time.time() * 1000
        for request, rows in zip(requests, out):
            if request.view == s.ITEM_TRENDING_VIEW:
                rows[:] = [{s.CLICKS_5M: 3, s.CLICKS_1H: 9, s.WINDOW_END_TS: now_ms} for _ in request.keys]
        return out


class TrendingScorer:
    """Scores by the last hour's clicks, so the test sees whether trending reached the scorer."""

    uses = frozenset({"clicks_1h"})

    def score(self, candidates):
        return candidates.features["clicks_1h"]


async def test_trending_is_not_read_when_the_scorer_does_not_use_it(tmp_path):
    model = tiny_model(tmp_path)
    store = ViewCountingStore(model)
    rec = recommender(model, store)
    rec.scorer.booster = None  # the blend uses clicks_1h; a ranker without it must not read it
    rec.scorer.feature_names = ()
    assert "clicks_1h" in rec.scorer.uses
    await rec.recommend("s", 10, [1000, 1001])
    assert store.keys_read.get(s.ITEM_TRENDING_VIEW, 0) > 0

    class BatchOnly:
        uses = frozenset({"session_knn", "similarity"})

        def score(self, candidates):
            return candidates.features["similarity"]

    store.keys_read.clear()
    rec.scorer = BatchOnly()
    result = await rec.recommend("s", 10, [1000, 1001])
    assert s.ITEM_TRENDING_VIEW not in store.keys_read and result.items and not result.degraded_reasons


async def test_trending_rows_are_reused_within_the_cache_ttl_only(tmp_path):
    model = tiny_model(tmp_path)
    store = ViewCountingStore(model)
    rec = recommender(model, store, scorer=TrendingScorer(), item_feature_cache_ms=200)
    now = [1000.0]
    rec.trending_cache.clock = lambda: now[0]
    first = await rec.recommend("s", 10, [1000, 1001])
    read_once = store.keys_read[s.ITEM_TRENDING_VIEW]
    again = await rec.recommend("s", 10, [1000, 1001])
    assert store.keys_read[s.ITEM_TRENDING_VIEW] == read_once  # every candidate served from the cache
    assert again.items == first.items and first.items[0][1] == 9.0  # the cached rows reach the scorer
    now[0] += 0.199
    await rec.recommend("s", 10, [1000, 1001])
    assert store.keys_read[s.ITEM_TRENDING_VIEW] == read_once  # still within the TTL
    now[0] += 0.002
    await rec.recommend("s", 10, [1000, 1001])
    assert store.keys_read[s.ITEM_TRENDING_VIEW] == 2 * read_once  # expired: read again


async def test_no_cache_reads_trending_on_every_request(tmp_path):
    model = tiny_model(tmp_path)
    store = ViewCountingStore(model)
    rec = recommender(model, store, scorer=TrendingScorer(), item_feature_cache_ms=0)
    await rec.recommend("s", 10, [1000, 1001])
    await rec.recommend("s", 10, [1000, 1001])
    assert store.keys_read[s.ITEM_TRENDING_VIEW] > 0
    assert store.keys_read[s.ITEM_TRENDING_VIEW] % 2 == 0 and rec.trending_cache.hits == 0


def test_rows_of_matches_row_of_and_marks_unknown_items(tmp_path):
    model = tiny_model(tmp_path)
    ids = np.array([1005, 999, 1000, 1299, 5000, 1005], dtype=np.int64)
    expected = [model.row_of(int(i)) if model.row_of(int(i)) is not None else -1 for i in ids]
    assert model.rows_of(ids).tolist() == expected
    assert model.rows_of(np.zeros(0, np.int64)).tolist() == []


async def test_a_version_whose_embeddings_are_not_online_reads_none_and_uses_its_own(tmp_path):
    model = tiny_model(tmp_path)
    store = ViewCountingStore(model)
    store.sessions = {"s": {s.RECENT_ITEMS: [1010, 1011]}}
    served = recommender(model, store)
    served.embeddings_online = False  # serving.model_pool found another version's embeddings online
    result = await served.recommend("s", 5, [1012])
    assert result.session_items == [1010, 1011, 1012] and result.stage == "stream" and not result.degraded_reasons
    assert s.ITEM_EMBEDDINGS_VIEW not in store.keys_read


async def test_an_overloaded_process_answers_from_memory_without_reading_redis(tmp_path):
    model = tiny_model(tmp_path)
    store = FakeStore(model, sessions={"s": {s.RECENT_ITEMS: [1010, 1011]}})
    rec = recommender(model, store)
    result = await rec.recommend("s", 5, [1012], exclude_seen=True, overload="event loop 35 ms late (shedding over 20 ms)")
    assert store.calls == 0
    assert result.stage == "fallback_covisitation"
    assert result.degraded_reasons == ["overload: event loop 35 ms late (shedding over 20 ms)"]
    assert [i for i, _ in result.items][:2] == [1013, 1014]  # the request item's co-visited successors
    assert (await rec.recommend("s", 5, [1012], overload=None)).stage == "stream"
