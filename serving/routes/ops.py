"""GET /ops/summary: live operations figures for the operations page (and curl)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from serving.dependencies import require_api_key
from serving.ops import OnlineOps, OpsMonitor, OpsSummary, online_ops
from serving.schemas import ErrorBody

router = APIRouter(tags=["operations"])


def get_monitor(request: Request) -> OpsMonitor:
    """This process's monitor (its ring of snapshots), created on first use."""
    monitor = getattr(request.app.state, "ops_monitor", None)
    if monitor is None:
        monitor = request.app.state.ops_monitor = OpsMonitor(request.app.state.settings)
    return monitor


@router.get(
    "/ops/summary",
    response_model=OpsSummary,
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorBody, "description": "API key required (when STREAMREC_API_KEY is set) and "
                     "missing or wrong."},
               422: {"model": ErrorBody, "description": "Invalid query parameter."}},
    summary="Live operations figures",
)
async def ops_summary(
    request: Request,
    window_s: float = Query(10.0, ge=1, le=600, description="Seconds the rates and percentiles should cover."),
    monitor: OpsMonitor = Depends(get_monitor),
) -> OpsSummary:
    """Events/s, worker lag and freshness, /recommend latency, degraded share, dead letters and
    Redis/Kafka status, from the API's and the worker's Prometheus metrics. The worker's part is
    `reachable: false` (figures null) when its /metrics does not answer within 0.5 s; needs the API
    key when one is configured, like /metrics. `online`: the routing policy and each model
    version's traffic share, impressions and CTR with its Wilson 95% interval."""
    return await monitor.summary(window_s, online=live_online(request))


def live_online(request: Request) -> OnlineOps | None:
    """The online figures of the current router; None while the app has no routing or models."""
    routing = getattr(request.app.state, "routing", None)
    pool_state = getattr(getattr(request.app.state, "models", None), "state", None)
    if routing is None or pool_state is None:
        return None
    return online_ops(routing.router(pool_state.champion, pool_state.routing, pool_state))
