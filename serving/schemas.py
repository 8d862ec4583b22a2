"""Request and response models of the REST API: the API contract and its OpenAPI page."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamrec.events import SESSION_ID_PATTERN, ItemId

MAX_K = 100
MAX_SESSION_ITEMS = 500  # hard schema cap; the configured STREAMREC_MAX_SESSION_ITEMS is checked too

Stage = Literal["stream", "batch", "fallback_covisitation", "fallback_popular"]


class RecommendRequest(BaseModel):
    """Ask for the next items of a session."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"session_id": "web-7f3a", "k": 10, "session_items": [214, 5021], "exclude_seen": True}]
    })

    session_id: str = Field(..., pattern=SESSION_ID_PATTERN, description="Session to recommend for.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many items to return (1..100).")
    session_items: list[ItemId] = Field(
        default_factory=list, max_length=MAX_SESSION_ITEMS,
        description="Items the client knows the session saw, oldest first; merged after the "
        "session's streaming features.",
    )
    exclude_seen: bool = Field(True, strict=True, description="Leave out items the session already saw.")



class ScoredItem(BaseModel):
    item_id: int
    score: float


class Recommendation(BaseModel):
    """Top-k items, how they were produced and how long each step took."""

    session_id: str
    items: list[ScoredItem]
    stage: Stage = Field(..., description="stream: streaming session features were used; batch: only "
                         "items from the request; fallback_*: no usable session embedding.")
    degraded: bool = Field(False, description="True when a dependency failed or the latency budget "
                           "forced a cheaper path.")
    degraded_reasons: list[str] = Field(default_factory=list)
    session_items_used: list[int] = Field(default_factory=list, description="Session items, oldest first.")
    model_version: str
    index_version: str
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
    model_version: str
    index_version: str


class ErrorBody(BaseModel):
    detail: str


# Answers any JSON-body route can give before its handler runs (FastAPI for a body that is not
# JSON, the body-size middleware); listed in the spec so clients and schemathesis know them.
BODY_ERRORS: dict[int | str, dict] = {
    400: {"model": ErrorBody, "description": "The body is not JSON."},
    413: {"model": ErrorBody, "description": "The body is larger than the limit."},
}
