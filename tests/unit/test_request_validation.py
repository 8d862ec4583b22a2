"""Request values that end up in Redis keys (session ids, item ids) or Kafka records are validated at
the API's edge, and the optional API key guards the write endpoint and /metrics, not the reads."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from serving.event_sink import KafkaUnavailable
from serving.impression_log import ImpressionLog
from serving.loop_watch import LoopWatch
from serving.recommender import Result
from serving.routing import LiveRouting
from streamrec.model_registry import RoutingConfig
from serving.routes import events, health, recommend
from serving.schemas import MAX_K, RecommendRequest
from streamrec.events import MAX_ITEM_ID, ClickEvent
from streamrec.settings import Settings

HOSTILE_SESSION_IDS = [
    "", "a\r\nb", "a\n", "\r\nSET x 1\r\n", "*", "k*", "a b", "a\x00b", "é", "ｓｅｓｓ", "💥",
    "../etc", "a/b", "{x}", "x" * 129, "x" * 10_000,
]
HOSTILE_ITEM_IDS = [-1, MAX_ITEM_ID + 1, 2**64, True, 1.5, "7", None, [1], {"a": 1}]


@pytest.mark.parametrize("session_id", HOSTILE_SESSION_IDS)
def test_recommend_request_refuses_hostile_session_ids(session_id: str) -> None:
    with pytest.raises(ValidationError):
        RecommendRequest.model_validate_json(json.dumps({"session_id": session_id}))


@pytest.mark.parametrize("session_id", HOSTILE_SESSION_IDS)
def test_click_event_refuses_hostile_session_ids(session_id: str) -> None:
    with pytest.raises(ValidationError):
        ClickEvent.model_validate_json(json.dumps({"session_id": session_id, "item_id": 1, "ts": 1.0}))


@pytest.mark.parametrize("item_id", HOSTILE_ITEM_IDS)
def test_hostile_item_ids_are_refused(item_id: object) -> None:
    with pytest.raises(ValidationError):
        RecommendRequest.model_validate_json(json.dumps({"session_id": "s", "session_items": [item_id]}))
    with pytest.raises(ValidationError):
        ClickEvent.model_validate_json(json.dumps({"session_id": "s", "item_id": item_id, "ts": 1.0}))


def test_ordinary_values_pass() -> None:
    request = RecommendRequest.model_validate_json(
        json.dumps({"session_id": "web-7f3a:2_b.c", "session_items": [0, 5, MAX_ITEM_ID]}))
    assert request.session_items == [0, 5, MAX_ITEM_ID]
    assert ClickEvent.model_validate_json(json.dumps({"session_id": "x" * 128, "item_id": 0, "ts": 1.0}))


class FakeSink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent: list[ClickEvent] = []

    async def send(self, event: ClickEvent) -> tuple[int, int]:
        self.sent.append(event)
        return 0, len(self.sent) - 1


def app_with(api_key: str | None) -> tuple[FastAPI, FakeSink]:
    app = FastAPI()
    app.state.settings = Settings(api_key=api_key)
    app.state.event_sink = sink = FakeSink(app.state.settings)
    app.include_router(events.router)
    app.include_router(health.router)
    return app, sink


async def call(app: FastAPI, method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.request(method, path, **kwargs)


EVENT = {"session_id": "s1", "item_id": 3, "ts": 1.0}


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""},
                                     {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}])
async def test_with_a_key_configured_events_and_metrics_refuse_missing_or_wrong_keys(headers) -> None:
    app, sink = app_with("secret")
    assert (await call(app, "POST", "/events", json=EVENT, headers=headers)).status_code == 401
    assert (await call(app, "GET", "/metrics", headers=headers)).status_code == 401
    assert not sink.sent


async def test_unauthenticated_hostile_event_gets_401_not_validation_details() -> None:
    app, _ = app_with("secret")
    response = await call(app, "POST", "/events", json={**EVENT, "session_id": "a\r\nb"})
    assert response.status_code == 401


@pytest.mark.parametrize("headers", [{"X-API-Key": "secret"}, {"Authorization": "Bearer secret"}])
async def test_the_right_key_opens_events_and_metrics(headers) -> None:
    app, sink = app_with("secret")
    assert (await call(app, "POST", "/events", json=EVENT, headers=headers)).status_code == 202
    assert (await call(app, "GET", "/metrics", headers=headers)).status_code == 200
    assert len(sink.sent) == 1


async def test_without_a_key_configured_everything_is_open() -> None:
    app, sink = app_with(None)
    assert (await call(app, "POST", "/events", json=EVENT)).status_code == 202
    assert (await call(app, "GET", "/metrics")).status_code == 200


async def test_hostile_events_get_422_and_reach_no_sink() -> None:
    app, sink = app_with("secret")
    for session_id in HOSTILE_SESSION_IDS:
        response = await call(app, "POST", "/events", json={**EVENT, "session_id": session_id},
                              headers={"X-API-Key": "secret"})
        assert response.status_code == 422, session_id
    assert not sink.sent


class FlakySink(FakeSink):
    """A sink whose Kafka is down until `up` is set: what POST /events answers in an outage."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.up = False

    async def send(self, event: ClickEvent) -> tuple[int, int]:
        if not self.up:
            raise KafkaUnavailable("Kafka did not take the event within 1.5 s")
        return await super().send(event)


async def test_events_answer_503_with_retry_after_while_kafka_is_down_then_202() -> None:
    app, _ = app_with(None)
    app.state.event_sink = sink = FlakySink(app.state.settings)
    down = await call(app, "POST", "/events", json=EVENT)
    assert down.status_code == 503
    assert down.headers["Retry-After"] == str(events.RETRY_AFTER_S) == "2"
    assert down.json() == {"detail": "Kafka did not take the event within 1.5 s"}
    assert sink.sent == []
    sink.up = True
    again = await call(app, "POST", "/events", json=EVENT)
    assert again.status_code == 202 and again.json()["offset"] == 0 and len(sink.sent) == 1


class RecordingRecommender:
    """Stands in for the model: a request that reaches it passed validation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.calls = 0

    async def recommend(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.calls += 1
        raise AssertionError("an invalid request reached the recommender")


def recommend_app(max_session_items: int = 5) -> tuple[FastAPI, RecordingRecommender]:
    app = FastAPI()
    settings = Settings(max_session_items=max_session_items)
    recommender = RecordingRecommender(settings)
    app.state.models = SimpleNamespace(settings=settings, state=SimpleNamespace(
        champion="v1", routing=RoutingConfig(), recommenders={"v1": recommender}))
    app.state.routing = LiveRouting(None, 1.0)
    app.state.impression_log = ImpressionLog(settings)  # not started: nothing is sent
    app.state.loop_watch = LoopWatch()  # not started: never overloaded
    app.include_router(recommend.router)
    return app, recommender


@pytest.mark.parametrize(("body", "field"), [
    ({"session_id": "s", "k": 0}, "k"),
    ({"session_id": "s", "k": MAX_K + 1}, "k"),
    ({"session_id": "s", "k": 500}, "k"),
    ({"session_id": "s", "colour": "red"}, "colour"),
    ({"session_id": "s", "exclude_seen": "yes"}, "exclude_seen"),
])
async def test_recommend_refuses_invalid_bodies_with_422_naming_the_field(body: dict, field: str) -> None:
    app, recommender = recommend_app()
    answer = await call(app, "POST", "/recommend", json=body)
    assert answer.status_code == 422, answer.text
    assert [error["loc"][-1] for error in answer.json()["detail"]] == [field]
    assert recommender.calls == 0


async def test_recommend_refuses_more_session_items_than_configured() -> None:
    app, recommender = recommend_app(max_session_items=5)
    answer = await call(app, "POST", "/recommend", json={"session_id": "s", "session_items": list(range(6))})
    assert answer.status_code == 422
    assert answer.json() == {"detail": "session_items has 6 items; at most 5 are accepted"}
    assert recommender.calls == 0


class AnsweringRecommender(RecordingRecommender):
    async def recommend(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.calls += 1
        self.overload = kwargs.get("overload")
        reasons = [f"overload: {self.overload}"] if self.overload else []
        return Result([(7, 1.0)], "fallback_popular" if reasons else "batch", [], {"total": 0.1}, reasons)


async def test_recommend_passes_the_loop_watchs_overload_signal_to_the_recommender() -> None:
    app, _ = recommend_app()
    app.state.models.state.recommenders["v1"] = recommender = AnsweringRecommender(Settings())
    recommender.model_version, recommender.index_version = "v", "i"
    app.state.loop_watch = watch = LoopWatch(shed_after_s=0.02)
    watch.lag_s = 0.035  # as the watch's timer would have smoothed it
    shed = await call(app, "POST", "/recommend", json={"session_id": "s"})
    assert shed.status_code == 200, shed.text
    assert shed.json()["degraded_reasons"] == ["overload: event loop 35 ms late (shedding over 20 ms)"]
    watch.lag_s = 0.001
    kept = await call(app, "POST", "/recommend", json={"session_id": "s"})
    assert recommender.overload is None and kept.json()["degraded"] is False
