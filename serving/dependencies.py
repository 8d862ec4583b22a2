"""FastAPI dependencies: the objects a route needs, opened once in the app's lifespan."""

from __future__ import annotations

import secrets

from fastapi import Header, HTTPException, Request, status

from serving.event_sink import EventSink
from serving.recommender import Recommender
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


async def get_event_sink(request: Request) -> EventSink:
    return request.app.state.event_sink


async def get_store(request: Request) -> OnlineStore:
    return request.app.state.store


def require_api_key(request: Request, x_api_key: str | None = Header(None, description="Required when STREAMREC_API_KEY is set.")) -> None:
    """Protects write endpoints when an API key is configured."""
    expected = request.app.state.settings.api_key
    if expected and not (x_api_key and secrets.compare_digest(x_api_key, expected)):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong X-API-Key header")
