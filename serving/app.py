"""The FastAPI application: lifespan opens clients and loads the model versions; routers do the rest."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving import metrics
from serving.body_limit import BodySizeLimit
from serving.model_pool import ModelPool
from serving.event_sink import EventSink
from serving.impression_log import ImpressionLog
from serving.routing import LiveRouting
from serving.loop_watch import LoopWatch
from serving.ops import watch_dependencies
from serving.routes import events, health, items, ops, recommend, ui
from streamrec import __version__
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings, get_settings

MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = OnlineStore.from_url(settings.redis_url, timeout_s=max(settings.latency_budget_ms / 1000, 0.05))
        app.state.settings = settings
        app.state.store = store
        app.state.models = ModelPool(settings, store)  # the champion (and arms), swapped in the background
        await app.state.models.start()
        app.state.event_sink = EventSink(settings)
        app.state.impression_log = ImpressionLog(settings)
        app.state.impression_log.start()
        app.state.routing = LiveRouting(store.client, settings.bandit_refresh_s)  # who answers each request
        # What is loaded now lives as long as the process: move it out of the collector's reach.
        # A full collection over the ~150k objects of the imports and the model took ~70 ms, a
        # stall every few thousand requests that showed as p99 spikes in the soak test.
        gc.collect()
        gc.freeze()
        metrics.time_gc_pauses()
        app.state.loop_watch = LoopWatch(shed_after_s=settings.shed_loop_lag_ms / 1000)
        app.state.loop_watch.start()
        background = [asyncio.create_task(watch_dependencies(store, app.state.event_sink)),  # streamrec_dependency_up
                      asyncio.create_task(app.state.routing.run())]
        try:
            yield
        finally:
            await app.state.loop_watch.stop()
            for task in background:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await app.state.models.close()
            await app.state.impression_log.close()
            await app.state.event_sink.close()
            await store.close()

    app = FastAPI(
        title="streamrec",
        version=__version__,
        description="Real-time, session-aware recommendations from streaming and batch features.",
        lifespan=lifespan,
    )

    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with one readable sentence per problem (plus the structured errors)."""
        messages = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
            messages.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(messages), "errors": _jsonable(exc.errors())}, status_code=422)

    app.include_router(recommend.router)
    app.include_router(events.router)
    app.include_router(health.router)
    app.include_router(items.router)
    app.include_router(ops.router)
    app.include_router(ui.router)
    app.mount(ui.STATIC_PATH, ui.static_files(), name="ui-static")
    return app


def _jsonable(errors: list[dict]) -> list[dict]:
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors]
