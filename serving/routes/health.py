"""GET /health and GET /metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving import metrics as api_metrics
from serving.dependencies import get_event_sink, get_models, get_store, require_api_key
from serving.event_sink import EventSink
from serving.model_pool import ModelPool
from serving.schemas import DependencyHealth, Health
from streamrec.online_store import OnlineStore

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, summary="Dependency status",
            responses={503: {"model": Health, "description": "Degraded: Redis or Kafka is unreachable; "
                             "/recommend still answers from in-process fallbacks."}})
async def health(
    response: Response,
    models: ModelPool = Depends(get_models),
    store: OnlineStore = Depends(get_store),
    sink: EventSink = Depends(get_event_sink),
) -> Health:
    """Redis, Kafka, index and model status; 200 when all are up, 503 when degraded."""
    loaded = models.state  # one snapshot: the champion and the list below agree
    recommender = loaded.recommenders[loaded.champion]
    redis_ok, (kafka_ok, kafka_detail) = await asyncio.gather(store.ping(), sink.healthy())
    model = recommender.model
    body = Health(
        status="ok" if redis_ok and kafka_ok else "degraded",
        redis=DependencyHealth(ok=redis_ok, detail="" if redis_ok else "online store (Redis) unreachable"),
        kafka=DependencyHealth(ok=kafka_ok, detail=kafka_detail),
        index=DependencyHealth(ok=len(recommender.index) > 0, detail=f"{len(recommender.index)} items, "
                               f"{recommender.index.info.get('type', 'unknown')}"),
        model=DependencyHealth(ok=True, detail=f"{len(model.item_ids)} items, dim {model.dim}, "
                               f"scorer {recommender.scorer.kind}"),
        model_version=recommender.model_version,
        index_version=recommender.index_version,
        loaded_versions=list(loaded.recommenders),
        routing_policy=loaded.routing.policy,
        catalogue_items=len(model.item_ids),
        index_items=len(recommender.index),
        scorer=recommender.scorer.kind,
    )
    if body.status != "ok":
        response.status_code = 503
    return body


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            dependencies=[Depends(require_api_key)],
            responses={401: {"description": "API key required (when STREAMREC_API_KEY is set) and missing or wrong."}})
async def metrics() -> Response:
    """Prometheus text format, summed over the API's worker processes; needs the API key when one is configured."""
    return Response(api_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
