"""The recommendation pipeline behind `POST /recommend` (and offline evaluation).

One request is a short pipeline of named, timed steps:
session features (online store, stage 3) → item embeddings (online store, stage 1 output) →
session embedding → candidates (FAISS kNN + co-visitation, stage 2) → candidate features
(batch + streaming) → scores → top k. Each optional step runs only if it fits the latency
budget; when a step fails or would be late the request degrades to the next fallback and the
response says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from candidates.bundle import ModelBundle
from candidates.exploration import explore_slot, request_rng
from candidates.features import STREAMING_FEATURES, CandidateSet, merge_session_items, session_embedding
from streamrec import feature_schema as s
from serving.budget import Budget, CircuitBreaker, StepCost, StepTimings
from serving.feature_cache import TTLCache
from serving.schemas import EXCLUDE_SEEN_DEFAULT
from serving.scoring import Scorer, top_k
from streamrec.online_store import OnlineStore, ReadRequest
from streamrec.settings import Settings

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000


class TrendingAt(Protocol):
    def counts(self, item_ids: np.ndarray, at_ms: float) -> tuple[np.ndarray, np.ndarray]: ...


def trending_clicks(rows: list[dict | None], now_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """(last-5-minute, last-hour) clicks per candidate; 0 when unknown or the window is over an hour old."""
    five = np.zeros(len(rows), dtype=np.float32)
    hour = np.zeros(len(rows), dtype=np.float32)
    for position, row in enumerate(rows):
        if row and (row.get(s.WINDOW_END_TS) or 0) > now_ms - HOUR_MS:
            five[position] = row.get(s.CLICKS_5M) or 0
            hour[position] = row.get(s.CLICKS_1H) or 0
    return five, hour


@dataclass
class Result:
    items: list[tuple[int, float]]
    stage: str
    session_items: list[int]
    timings_ms: dict[str, float]
    degraded_reasons: list[str] = field(default_factory=list)
    # Each shown item's probability under the exploration slot, aligned with `items`; empty: the
    # list is deterministic given the session (every propensity 1: fallbacks, exploration off).
    propensities: list[float] = field(default_factory=list)
    explored_position: int | None = None  # the place the slot gave to an explored item, if any


class Recommender:
    """Owns the model, index and online-store client; safe to share across concurrent requests."""

    def __init__(self, settings: Settings, store: OnlineStore | None, bundle: ModelBundle, *,
                 scorer: Scorer | None = None, trending_history: TrendingAt | None = None) -> None:
        """`trending_history` replaces the online trending read with counts as of a past time
        (offline evaluation replays test sessions at their own timestamps); `scorer` overrides the
        model version's ranker (ablations)."""
        self.settings = settings
        self.store = store
        self.trending_history = trending_history
        self.bundle = bundle
        self.model = bundle.artifacts
        self.index = bundle.index
        self.index_version = bundle.index_version
        self.generators = bundle.generators(ann_k=settings.candidates_k)
        self.fallbacks = self.generators.fallbacks
        self.scorer = scorer or Scorer.for_version(bundle.ranker, bundle.artifacts.meta)
        self.trending_cache = TTLCache(settings.item_feature_cache_ms / 1000)
        self.redis_breaker = CircuitBreaker(open_s=1.0)
        self.retrieval_cost = StepCost(initial_s=0.002)
        # Kept for the fallback path and the event loop's own delays once a read gives up: 5 ms left
        # a request 2.3 ms over a 50 ms budget in CI's Redis-outage test (2 cores, worker busy).
        self.reserve_ms = min(10.0, settings.latency_budget_ms * 0.2)
        self.explore_strength = settings.explore_strength
        # Whether the online store holds this version's item embeddings (serving.model_pool checks it
        # when it loads a version): the store has one version's, materialized by `streamrec train`; a
        # version beside it (an arm, or a champion promoted later) uses its own copy, never another's.
        self.embeddings_online = True

    @property
    def model_version(self) -> str:
        return self.model.version

    # --- steps ---------------------------------------------------------------------------------
    async def _read(self, budget: Budget, requests: list[ReadRequest], what: str, reasons: list[str]):
        """Online-store read within budget; None (and a reason) if Redis is down or too slow."""
        if self.store is None:
            return None
        if self.redis_breaker.is_open:
            reasons.append(f"{what}: online store unavailable ({self.redis_breaker.last_error})")
            return None
        try:
            rows = await budget.run(self.store.read_many(requests))
        except asyncio.TimeoutError:
            reasons.append(f"{what}: skipped, latency budget exhausted")
            return None
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades, never 500s
            self.redis_breaker.failure(exc)
            reasons.append(f"{what}: online store unavailable ({exc})")
            return None
        self.redis_breaker.success()
        return rows

    def _embedding_from_model(self, item: int) -> np.ndarray | None:
        row = self.model.row_of(item)
        return None if row is None else self.model.item_embeddings[row]

    async def _item_embeddings(self, budget: Budget, items: list[int], reasons: list[str],
                               prefetched: dict[int, dict | None]) -> list[np.ndarray]:
        """Embeddings of the session's items from the online store (rows already `prefetched` are
        not read again; the others are added to it); the model's copy if it is down."""
        stored = prefetched
        to_read = [item for item in items if item not in stored] if self.embeddings_online else []
        if to_read:
            rows = await self._read(budget, [ReadRequest(s.ITEM_EMBEDDINGS_VIEW, to_read, (s.EMBEDDING,))],
                                    "item embeddings", reasons)
            if rows is not None:
                stored.update(zip(to_read, rows[0]))
        found: list[np.ndarray] = []
        missing = 0  # read fine but absent: e.g. Redis restarted empty, not re-materialized yet
        for item in items:
            row = stored.get(item)
            vector = row[s.EMBEDDING] if row else None
            if vector is None:
                vector = self._embedding_from_model(item)
                missing += item in stored and vector is not None
            if vector is not None and len(vector) == self.model.dim:
                found.append(np.asarray(vector, dtype=np.float32))
        if missing:
            reasons.append(f"item embeddings: {missing} of {len(items)} missing from the online store "
                           "(not materialized?), the model's copy used")
        return found

    async def _trending(self, budget: Budget, item_ids: np.ndarray, at_ms: float | None,
                        reasons: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Windowed click counts of the candidates: the stream's, or the history's at `at_ms`."""
        if self.scorer.uses.isdisjoint(STREAMING_FEATURES):
            return None  # this version's ranker was trained without them: no read
        if self.trending_history is not None:
            return self.trending_history.counts(item_ids, time.time() * 1000 if at_ms is None else at_ms)
        keys = item_ids.tolist()
        rows, missing = self.trending_cache.lookup(keys)
        if missing:
            fetched = await self._read(
                budget, [ReadRequest(s.ITEM_TRENDING_VIEW, [keys[i] for i in missing], s.ITEM_TRENDING_FEATURES)],
                "trending features", reasons)
            if fetched is None:
                return None
            for position, row in zip(missing, fetched[0]):
                rows[position] = row
            self.trending_cache.store([keys[i] for i in missing], fetched[0])
        return trending_clicks(rows, now_ms=time.time() * 1000)

    async def warm_up(self) -> None:
        """One full request before serving, so the first user does not pay for lazy set-up."""
        popular = [int(i) for i in self.model.popular[:3]]
        for _ in range(3):
            await self.recommend("__warm_up__", 10, popular, use_stream=True, request_id="__warm_up__")

    # --- the pipeline ----------------------------------------------------------------------------
    async def recommend(self, session_id: str, k: int, request_items: list[int], exclude_seen: bool = EXCLUDE_SEEN_DEFAULT,
                        use_stream: bool = True, at_ms: float | None = None, overload: str | None = None,
                        request_id: str | None = None) -> Result:
        """`at_ms`: the request's time when replaying history (offline evaluation); None = now.
        `overload`: why the process is overloaded (its loop watch's signal): answer from the
        in-memory fallbacks at once, shedding work instead of queueing it.
        `request_id`: the answer's id, which seeds its exploration slot (`explore_strength`); None =
        no exploration (a shadow list is never shown, so nothing is learned from exploring it)."""
        timings = StepTimings()
        if overload:
            items = merge_session_items([], request_items, self.settings.max_session_items)
            return self._fallback(items, k, set(items) if exclude_seen else set(), timings, [f"overload: {overload}"])
        budget = Budget(self.settings.latency_budget_ms, self.reserve_ms)
        reasons: list[str] = []

        stream_items: list[int] = []
        prefetched: dict[int, dict | None] = {}
        if use_stream:
            # The embeddings of the items the client sent ride along with the session read: most
            # requests then need one round trip, and only the stream's other items a second one.
            known = list(dict.fromkeys(request_items))
            reads = [ReadRequest(s.SESSION_FEATURES_VIEW, [session_id], (s.RECENT_ITEMS,))]
            if known and self.embeddings_online:
                reads.append(ReadRequest(s.ITEM_EMBEDDINGS_VIEW, known, (s.EMBEDDING,)))
            rows = await self._read(budget, reads, "session features", reasons)
            session_row = rows[0][0] if rows else None
            stream_items = list(session_row[s.RECENT_ITEMS] or []) if session_row else []
            if rows is not None and len(rows) > 1:
                prefetched = dict(zip(known, rows[1]))
            timings.lap("session_features")
        items = merge_session_items(stream_items, request_items, self.settings.max_session_items)
        exclude = set(items) if exclude_seen else set()

        embeddings = await self._item_embeddings(budget, items, reasons, prefetched) if items else []
        timings.lap("embeddings")
        embedding = session_embedding(np.asarray(embeddings), self.settings.recency_decay) if embeddings else None

        if embedding is None or not budget.fits(2 * self.retrieval_cost.mean_s):
            if embedding is not None:
                reasons.append("retrieval: skipped, latency budget exhausted")
            return self._fallback(items, k, exclude, timings, reasons)

        started = time.perf_counter()
        candidates = self.generators.generate(items, embedding)
        self.retrieval_cost.observe(time.perf_counter() - started)
        timings.lap("retrieval")

        trending = await self._trending(budget, candidates.item_ids, at_ms, reasons)
        if trending is not None:
            candidates.features[s.CLICKS_5M], candidates.features[s.CLICKS_1H] = trending
        timings.lap("candidate_features")

        scores = self.scorer.score(candidates)
        ranked = top_k(candidates.item_ids, scores, k, exclude)
        if len(ranked) < k:  # tiny catalogues: top up from popular
            seen = exclude | {item for item, _ in ranked}
            ranked += [(item, 0.0) for item, _ in self.fallbacks.popular(k - len(ranked), exclude=seen)]
        timings.lap("scoring")
        stage = "stream" if stream_items else "batch"
        result = Result(ranked, stage, items, [], reasons)
        if self.explore_strength > 0 and request_id is not None and ranked:
            self._explore(result, candidates, scores, exclude, request_id)
            timings.lap("exploration")
        result.timings_ms = timings.total()
        return result

    def _explore(self, result: Result, candidates: CandidateSet, scores: np.ndarray, exclude: set[int],
                 request_id: str) -> None:
        """The exploration slot (`candidates.exploration`) over the candidates the ranker left out.
        An item's exposure is what the process knows of it at ranking time: its clicks in the
        model's training data plus its last-hour clicks from the stream (0 when not read)."""
        shown = [item for item, _ in result.items]
        blocked = exclude.union(shown)  # a set, not np.isin: a sort per request cost 0.1 ms
        left_out = np.fromiter((item not in blocked for item in candidates.item_ids.tolist()), dtype=bool,
                               count=len(candidates.item_ids))
        pool = candidates.item_ids[left_out]
        # the popularity feature is log1p(training clicks): its inverse is the count, without a row lookup
        exposure = (np.expm1(candidates.features["popularity"][left_out].astype(np.float64))
                    + candidates.features[s.CLICKS_1H][left_out])
        explored = explore_slot(shown, pool, exposure, self.explore_strength, request_rng(request_id))
        result.propensities = explored.propensities
        position = explored.explored_position
        if position is not None:
            item = explored.items[position]
            result.items[position] = (item, float(scores[left_out][pool == item][0]))  # the ranker's score, shown as is
            result.explored_position = position

    def _fallback(self, items: list[int], k: int, exclude: set[int], timings: StepTimings,
                  reasons: list[str]) -> Result:
        """Co-visitation of the last items, topped up with popular items: in memory, no I/O."""
        ranked = self.fallbacks.covisited(items, k, exclude=exclude) if items else []
        stage = "fallback_covisitation" if ranked else "fallback_popular"
        if len(ranked) < k:
            seen = exclude | {item for item, _ in ranked}
            ranked = list(ranked) + list(self.fallbacks.popular(k - len(ranked), exclude=seen))
        timings.lap("fallback")
        return Result([(int(i), float(v)) for i, v in ranked], stage, items, timings.total(), reasons)
