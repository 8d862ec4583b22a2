"""POST /recommend."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import JSONResponse

from serving import metrics
from serving.dependencies import get_impression_log, get_models, get_overload, get_routing
from serving.impression_log import ImpressionLog
from serving.model_pool import ModelPool
from serving.recommender import Recommender, Result
from serving.routing import Decision, LiveRouting
from serving.schemas import BODY_ERRORS, ErrorBody, Recommendation, RecommendRequest
from streamrec.impressions import Impression, new_request_id

router = APIRouter(tags=["recommend"])


@router.post(
    "/recommend",
    response_model=Recommendation,
    responses={**BODY_ERRORS,
               422: {"model": ErrorBody, "description": "Invalid request: the message says what is wrong."}},
    summary="Next items for a session",
)
async def recommend(body: RecommendRequest, models: ModelPool = Depends(get_models),
                    routing: LiveRouting = Depends(get_routing),
                    impressions: ImpressionLog = Depends(get_impression_log),
                    overload: str | None = Depends(get_overload)) -> JSONResponse:
    """Top-k items for the session, from its streaming features merged with `session_items`, by
    the model version the routing policy picks. Every answer is logged (the `impressions` topic)
    under its `request_id`, with the probability the policy picked that version with."""
    state = models.state  # one consistent set of versions for the whole request
    limit = models.settings.max_session_items
    if len(body.session_items) > limit:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            f"session_items has {len(body.session_items)} items; at most {limit} are accepted")
    decision = routing.router(state.champion, state.routing, state).choose(body.session_id)
    recommender = state.recommenders[decision.version]
    request_id = new_request_id()
    result = await recommender.recommend(body.session_id, body.k, body.session_items, body.exclude_seen,
                                         overload=overload, request_id=request_id)
    now = time.time()
    if impressions.enabled:
        impressions.log(impression(request_id, body.session_id, now, decision, decision.version, result))
    if decision.shadow is not None:
        shadow_score(state.recommenders[decision.shadow], impressions, body, request_id, now, decision,
                     models.settings.max_shadow_tasks)
    metrics.REQUEST_SECONDS.labels(result.stage).observe(result.timings_ms["total"] / 1000)
    for reason in result.degraded_reasons:
        metrics.DEGRADED.labels(reason.split(":")[0]).inc()
    # Built as a dict and returned as a JSONResponse: FastAPI would otherwise validate and serialise
    # the pydantic model again (~10% of a request); `response_model` still documents it, and the
    # tests validate responses against it.
    return JSONResponse({
        "request_id": request_id,
        "session_id": body.session_id,
        "items": [{"item_id": int(i), "score": round(float(v), 6), "explored": position == result.explored_position}
                  for position, (i, v) in enumerate(result.items)],
        "stage": result.stage,
        "degraded": bool(result.degraded_reasons),
        "degraded_reasons": result.degraded_reasons,
        "session_items_used": result.session_items,
        "model_version": recommender.model_version,
        "index_version": recommender.index_version,
        "policy": decision.policy,
        "propensity": decision.propensity,
        "timings_ms": result.timings_ms,
    })


def impression(request_id: str, session_id: str, ts: float, decision: Decision, version: str, result: Result,
               shadow: bool = False) -> Impression:
    """The log record of one list: the shown one (the decision's version, with its propensity) or,
    `shadow`, the challenger's (always scored: propensity 1)."""
    return Impression(request_id, session_id, ts, version, decision.policy, 1.0 if shadow else decision.propensity,
                      result.stage, bool(result.degraded_reasons), tuple(int(i) for i, _ in result.items),
                      tuple(float(v) for _, v in result.items), shadow, decision.experiment,
                      tuple(result.propensities))


_shadow_tasks: set[asyncio.Task] = set()


def shadow_score(challenger: Recommender, impressions: ImpressionLog, body: RecommendRequest, request_id: str,
                 ts: float, decision: Decision, limit: int) -> None:
    """The challenger answers the same request after the champion's answer is on its way; its list
    is logged as a shadow impression (same request id), never shown."""
    if len(_shadow_tasks) >= limit:
        metrics.SHADOW_SKIPPED.inc()
        return

    async def score() -> None:
        try:
            result = await challenger.recommend(body.session_id, body.k, body.session_items, body.exclude_seen)
        except Exception:  # noqa: BLE001 - the challenger's failure must not reach anyone
            metrics.SHADOW_SKIPPED.inc()
            return
        impressions.log(impression(request_id, body.session_id, ts, decision, challenger.model_version, result,
                                   shadow=True))

    task = asyncio.create_task(score())
    _shadow_tasks.add(task)
    task.add_done_callback(_shadow_tasks.discard)
