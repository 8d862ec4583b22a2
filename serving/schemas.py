"""Request and response models of the REST API: the API contract and its OpenAPI page."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamrec.events import SESSION_ID_PATTERN, ItemId

MAX_K = 100
MAX_SESSION_ITEMS = 500  # hard schema cap; the configured STREAMREC_MAX_SESSION_ITEMS is checked too

# Repeat clicks are common in sessions (the next click repeats an earlier item of the session in
# ~20% of Diginetica's and ~45% of some shopping datasets' cases): leaving seen items out costs
# 16 HR@20 points on Diginetica through POST /recommend (README, "Quality"). Callers that show
# only new items ask for it.
EXCLUDE_SEEN_DEFAULT = False

Stage = Literal["stream", "batch", "fallback_covisitation", "fallback_popular"]


class RecommendRequest(BaseModel):
    """Ask for the next items of a session."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"session_id": "web-7f3a", "k": 10, "session_items": [214, 5021], "exclude_seen": False}]
    })

    session_id: str = Field(..., pattern=SESSION_ID_PATTERN, description="Session to recommend for.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many items to return (1..100).")
    session_items: list[ItemId] = Field(
        default_factory=list, max_length=MAX_SESSION_ITEMS,
        description="Items the client knows the session saw, oldest first; merged after the "
        "session's streaming features.",
    )
    exclude_seen: bool = Field(EXCLUDE_SEEN_DEFAULT, strict=True, description=(
        "Leave out items the session already saw. Off by default: sessions often return to an item, "
        "and the ranker learned when to propose one again."))



class ScoredItem(BaseModel):
    item_id: int
    score: float
    explored: bool = Field(False, description="True for the item the exploration slot placed here instead of the "
                           "ranker's (STREAMREC_EXPLORE_STRENGTH): a candidate the model knows little about, shown "
                           "so that its clicks teach the model; its score is the ranker's.")


class Recommendation(BaseModel):
    """Top-k items, how they were produced and how long each step took."""

    request_id: str = Field(..., description="This answer's id in the inference log (the `impressions` topic): "
                            "clicks that follow are attributed to it.")
    session_id: str
    items: list[ScoredItem]
    stage: Stage = Field(..., description="stream: streaming session features were used; batch: only "
                         "items from the request; fallback_*: no usable session embedding, or the process was overloaded.")
    degraded: bool = Field(False, description="True when a dependency failed, the latency budget "
                           "forced a cheaper path, or the process shed work for overload.")
    degraded_reasons: list[str] = Field(default_factory=list, description="Why, one entry per cause, each "
                                        "'step: what happened' (e.g. 'overload: event loop 35 ms late …').")
    session_items_used: list[int] = Field(default_factory=list, description="Session items, oldest first.")
    model_version: str = Field(..., description="The version that answered (the arm the routing policy picked).")
    index_version: str
    policy: Literal["single", "ab", "shadow", "bandit"] = Field(
        "single", description="The routing policy in force (`streamrec models route`).")
    propensity: float = Field(1.0, description="The probability with which the policy picked this version for "
                              "this request (logged with the impression, for off-policy evaluation).")
    timings_ms: dict[str, float]


class EventAccepted(BaseModel):
    accepted: bool = True
    topic: str
    partition: int
    offset: int


class DependencyHealth(BaseModel):
    ok: bool
    detail: str = ""


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    redis: DependencyHealth
    kafka: DependencyHealth
    index: DependencyHealth
    model: DependencyHealth
    model_version: str = Field(description="The champion: the version that answers unless routing picks another.")
    index_version: str
    loaded_versions: list[str] = Field(description="Versions this API process holds loaded, the champion first, then "
                                       "the routing's arms; a promotion or a routing change is swapped in within "
                                       "about STREAMREC_MODEL_POLL_S.")
    routing_policy: Literal["single", "ab", "shadow", "bandit"] = Field(
        description="The routing config the loaded versions were built for.")
    catalogue_items: int = Field(description="Items the served model version knows.")
    index_items: int = Field(description="Items in the FAISS index.")
    scorer: Literal["lightgbm-lambdarank", "blend", "popularity"] = Field(description="What ranks the champion's candidates.")


class ErrorBody(BaseModel):
    detail: str


# Answers any JSON-body route can give before its handler runs (FastAPI for a body that is not
# JSON, the body-size middleware); listed in the spec so clients and schemathesis know them.
BODY_ERRORS: dict[int | str, dict] = {
    400: {"model": ErrorBody, "description": "The body is not JSON."},
    413: {"model": ErrorBody, "description": "The body is larger than the limit."},
}


class CatalogueItem(BaseModel):
    item_id: int
    category: int | None = Field(None, description="The dataset's category; null when it has none for this item.")
    popularity: int = Field(..., description="Clicks on the item in the model's training data.")
    rank: int = Field(..., description="Position by popularity, 1 = most clicked.")


class CataloguePage(BaseModel):
    """A page of the served model version's catalogue, most popular first."""

    model_version: str
    total: int = Field(..., description="Items in the catalogue.")
    offset: int
    limit: int
    has_categories: bool = Field(..., description="Whether the model version carries item categories.")
    items: list[CatalogueItem]


class ApiOps(BaseModel):
    """The API's own figures, summed over its worker processes."""

    events_accepted_total: float = Field(..., description="POST /events answered 202 since start.")
    events_unavailable_total: float = Field(..., description="POST /events answered 503 (Kafka unavailable).")
    events_per_s: float | None = Field(None, description="Accepted events per second over the window.")
    recommend_total: float = Field(..., description="POST /recommend answers since start.")
    recommend_per_s: float | None = None
    recommend_p50_ms: float | None = Field(None, description="Server-side latency over the window, from the "
                                           "streamrec_recommend_seconds buckets (interpolated, as histogram_quantile).")
    recommend_p99_ms: float | None = None
    degraded_share: float | None = Field(None, description="streamrec_recommend_degraded_total increase / answers "
                                         "in the window, at most 1 (a request degraded for two reasons counts twice).")
    stage_share: dict[str, float] = Field(default_factory=dict, description="Share of the window's answers per stage.")


class WorkerOps(BaseModel):
    """The streaming worker's figures, scraped from its /metrics (STREAMREC_WORKER_METRICS_URL)."""

    reachable: bool
    url: str
    error: str = ""
    applied_total: float | None = Field(None, description="Events applied to the online store since the worker started.")
    duplicate_total: float | None = None
    dead_lettered_total: float | None = None
    events_per_s: float | None = Field(None, description="Applied events per second over the window.")
    dead_lettered_per_s: float | None = None
    consumer_lag: float | None = Field(None, description="Records behind the log end, summed over topics and "
                                       "partitions; null when the worker does not export streamrec_worker_consumer_lag.")
    consumer_lag_by_topic: dict[str, float] = Field(default_factory=dict)
    freshness_p50_ms: float | None = Field(None, description="Kafka record timestamp → features written, over the "
                                           "window; null without streamrec_worker_freshness_seconds or new events.")
    freshness_p99_ms: float | None = None


class OpsPoint(BaseModel):
    """One interval between two consecutive snapshots of this API process (for the charts)."""

    at: float = Field(..., description="Unix seconds at the end of the interval.")
    api_events_per_s: float | None = None
    worker_events_per_s: float | None = None
    recommend_p99_ms: float | None = None
    freshness_p99_ms: float | None = None
    consumer_lag: float | None = None
    degraded_share: float | None = None


class OpsSummary(BaseModel):
    """Live operations figures. Totals are cumulative; rates and percentiles cover `window_s` seconds
    ending now, between two snapshots this API process took when it answered this endpoint (so they
    need a previous call: null on a process's first one)."""

    at: float = Field(..., description="Unix seconds of this snapshot.")
    window_s: float | None = Field(None, description="Seconds the rates and percentiles cover; null on the first call.")
    api: ApiOps
    worker: WorkerOps
    dependencies: dict[str, bool | None] = Field(
        ..., description="redis, kafka: the API's latest check (streamrec_dependency_up, every ~2 s); null before the first.")
    series: list[OpsPoint] = Field(default_factory=list, description="Recent intervals, oldest first (at most 120).")
