"""POST /recommend."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import JSONResponse

from serving import metrics
from serving.dependencies import get_overload, get_recommender
from serving.recommender import Recommender
from serving.schemas import BODY_ERRORS, ErrorBody, Recommendation, RecommendRequest

router = APIRouter(tags=["recommend"])


@router.post(
    "/recommend",
    response_model=Recommendation,
    responses={**BODY_ERRORS,
               422: {"model": ErrorBody, "description": "Invalid request: the message says what is wrong."}},
    summary="Next items for a session",
)
async def recommend(body: RecommendRequest, recommender: Recommender = Depends(get_recommender),
                    overload: str | None = Depends(get_overload)) -> JSONResponse:
    """Top-k items for the session, from its streaming features merged with `session_items`."""
    limit = recommender.settings.max_session_items
    if len(body.session_items) > limit:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            f"session_items has {len(body.session_items)} items; at most {limit} are accepted")
    result = await recommender.recommend(body.session_id, body.k, body.session_items, body.exclude_seen,
                                         overload=overload)
    metrics.REQUEST_SECONDS.labels(result.stage).observe(result.timings_ms["total"] / 1000)
    for reason in result.degraded_reasons:
        metrics.DEGRADED.labels(reason.split(":")[0]).inc()
    # Built as a dict and returned as a JSONResponse: FastAPI would otherwise validate and serialise
    # the pydantic model again (~10% of a request); `response_model` still documents it, and the
    # tests validate responses against it.
    return JSONResponse({
        "session_id": body.session_id,
        "items": [{"item_id": int(i), "score": round(float(v), 6)} for i, v in result.items],
        "stage": result.stage,
        "degraded": bool(result.degraded_reasons),
        "degraded_reasons": result.degraded_reasons,
        "session_items_used": result.session_items,
        "model_version": recommender.model_version,
        "index_version": recommender.index_version,
        "timings_ms": result.timings_ms,
    })
