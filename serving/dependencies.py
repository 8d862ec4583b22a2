"""FastAPI dependencies: the objects a route needs, opened once in the app's lifespan."""

from __future__ import annotations

import secrets

from fastapi import Header, HTTPException, Request, status

from serving.event_sink import EventSink
from serving.impression_log import ImpressionLog
from serving.routing import LiveRouting
from serving.model_pool import ModelPool
from serving.recommender import Recommender
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_models(request: Request) -> ModelPool:
    return request.app.state.models


async def get_recommender(request: Request) -> Recommender:
    """The champion's recommender, read once per request: a swap never changes it mid-request."""
    return request.app.state.models.champion


async def get_overload(request: Request) -> str | None:
    """Why this process should shed work now (its loop watch's overload signal), or None."""
    return request.app.state.loop_watch.overload_reason()


async def get_event_sink(request: Request) -> EventSink:
    return request.app.state.event_sink


async def get_routing(request: Request) -> LiveRouting:
    return request.app.state.routing


async def get_impression_log(request: Request) -> ImpressionLog:
    return request.app.state.impression_log


async def get_store(request: Request) -> OnlineStore:
    return request.app.state.store


def require_api_key(
    request: Request,
    x_api_key: str | None = Header(None, description="Required when STREAMREC_API_KEY is set."),
    authorization: str | None = Header(None, description="Alternative to X-API-Key: `Bearer <key>` "
                                       "(what Prometheus sends with `authorization: {credentials: ...}`)."),
) -> None:
    """Protects the write endpoint (POST /events) and the operator's endpoint (GET /metrics) when an
    API key is configured; read endpoints (/recommend, /health, the docs) stay open."""
    expected = request.app.state.settings.api_key
    if not expected:
        return
    presented = x_api_key
    if presented is None and authorization and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip()
    if not (presented and secrets.compare_digest(presented.encode(), expected.encode())):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong API key: send it in the "
                            "X-API-Key header (or Authorization: Bearer <key>)",
                            headers={"WWW-Authenticate": "Bearer"})
