"""POST /events: a validated click into the clicks topic, for web pages and apps."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import JSONResponse

from serving import metrics
from serving.dependencies import get_event_sink, require_api_key
from serving.event_sink import EventSink, KafkaUnavailable
from serving.schemas import BODY_ERRORS, ErrorBody, EventAccepted
from streamrec.events import ClickEvent

router = APIRouter(tags=["events"])
RETRY_AFTER_S = 2


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventAccepted,
    responses={
        **BODY_ERRORS,
        401: {"model": ErrorBody, "description": "API key required and missing or wrong."},
        422: {"model": ErrorBody, "description": "Invalid event."},
        503: {"model": ErrorBody, "description": "Kafka unavailable; retry after the Retry-After header."},
    },
    dependencies=[Depends(require_api_key)],
    summary="Record a click",
)
async def post_event(event: ClickEvent, sink: EventSink = Depends(get_event_sink)):
    """Validate a click and append it to the clicks topic; 202 once Kafka has acknowledged it."""
    try:
        partition, offset = await sink.send(event)
    except KafkaUnavailable as exc:
        metrics.EVENTS.labels("unavailable").inc()
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    metrics.EVENTS.labels("accepted").inc()
    return EventAccepted(topic=sink.settings.clicks_topic, partition=partition, offset=offset)
