"""The page's endpoints on the real app (create_app, its validation handler and body-size middleware,
state set by hand instead of the lifespan): GET /items, GET /ops/summary, GET /ui and its static files;
bad query parameters are a 422 with a message, and the ops figures need the key when one is set."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from serving import ops
from serving.app import create_app
from streamrec.artifacts import ModelArtifacts
from streamrec.settings import Settings
from tests.unit.test_recommender import N_ITEMS, tiny_model

KEY = "k-123"


class FakeStore:
    def __init__(self, up: bool) -> None:
        self.up = up

    async def ping(self) -> bool:
        return self.up


class FakeSink:
    def __init__(self, up: bool) -> None:
        self.up = up

    async def healthy(self) -> tuple[bool, str]:
        return self.up, "" if self.up else "broker down"


def model_with_categories(tmp_path) -> ModelArtifacts:
    model = tiny_model(tmp_path)
    model.item_popularity = np.array([(i * 37) % 101 for i in range(N_ITEMS)], dtype=np.int64)
    model.item_categories = np.array([i % 7 if i % 5 else -1 for i in range(N_ITEMS)], dtype=np.int64)
    return model


def app_for(model: ModelArtifacts, api_key: str | None = None) -> FastAPI:
    settings = Settings(api_key=api_key, worker_metrics_url="http://127.0.0.1:9/metrics")
    app = create_app(settings)
    app.state.settings = settings
    app.state.models = SimpleNamespace(champion=SimpleNamespace(model=model))
    return app


async def get(app: FastAPI, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path, **kwargs)


async def test_items_are_the_catalogue_most_popular_first_with_categories(tmp_path):
    model = model_with_categories(tmp_path)
    page = (await get(app_for(model), "/items?limit=5&offset=2")).json()
    order = np.argsort(-model.item_popularity, kind="stable")
    assert [i["item_id"] for i in page["items"]] == model.item_ids[order[2:7]].tolist()
    assert [i["rank"] for i in page["items"]] == [3, 4, 5, 6, 7]
    assert [i["popularity"] for i in page["items"]] == model.item_popularity[order[2:7]].tolist()
    for item in page["items"]:
        row = model.row_of(item["item_id"])
        assert item["category"] == (None if model.item_categories[row] < 0 else int(model.item_categories[row]))
    assert page["total"] == N_ITEMS and page["has_categories"] and page["model_version"] == "v1"
    assert (await get(app_for(model), f"/items?offset={N_ITEMS}")).json()["items"] == []


async def test_items_by_id_keep_the_order_and_leave_out_unknown_ones(tmp_path):
    model = tiny_model(tmp_path)  # no categories
    page = (await get(app_for(model), "/items?ids=1005&ids=5&ids=1001")).json()
    assert [i["item_id"] for i in page["items"]] == [1005, 1001]
    assert page["has_categories"] is False and page["items"][0]["category"] is None


@pytest.mark.parametrize("query, where", [
    ("limit=-1", "limit"), ("limit=0", "limit"), ("limit=1000000000", "limit"), ("offset=abc", "offset"),
    ("offset=-3", "offset"), ("limit=2.5", "limit"), ("ids=x", "ids"), ("ids=-1", "ids"),
    ("ids=" + "&ids=".join(["1"] * 101), "ids"),
])
async def test_bad_item_queries_are_a_422_naming_the_parameter(tmp_path, query, where):
    answer = await get(app_for(tiny_model(tmp_path)), f"/items?{query}")
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail.startswith((f"query.{where}:", f"query.{where}.0:")), detail  # ids.0: the first bad one


@pytest.mark.parametrize("query", ["window_s=0", "window_s=601", "window_s=abc"])
async def test_bad_ops_queries_are_a_422_with_a_message(tmp_path, query):
    answer = await get(app_for(tiny_model(tmp_path)), f"/ops/summary?{query}")
    assert answer.status_code == 422 and answer.json()["detail"].startswith("query.window_s:")


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}])
async def test_ops_summary_needs_the_key_when_one_is_set(tmp_path, headers):
    answer = await get(app_for(tiny_model(tmp_path), api_key=KEY), "/ops/summary", headers=headers)
    assert answer.status_code == 401 and "API key" in answer.json()["detail"]


async def test_ops_summary_with_the_key_and_an_unreachable_worker_is_a_200(tmp_path):
    app = app_for(tiny_model(tmp_path), api_key=KEY)
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        answer = await get(app, "/ops/summary", headers=headers)
        assert answer.status_code == 200, answer.text
        worker = answer.json()["worker"]
        assert worker["reachable"] is False and worker["applied_total"] is None and worker["error"]
    # the catalogue and the page stay open, like /recommend
    assert (await get(app, "/items")).status_code == 200
    assert (await get(app, "/ui")).status_code == 200


async def test_dependency_checks_set_the_gauge(tmp_path):
    assert await ops.check_dependencies(FakeStore(True), FakeSink(False)) == {"redis": True, "kafka": False}
    body = (await get(app_for(tiny_model(tmp_path)), "/ops/summary")).json()
    assert body["dependencies"] == {"redis": True, "kafka": False}
    await ops.check_dependencies(FakeStore(False), FakeSink(True))
    assert (await get(app_for(tiny_model(tmp_path)), "/ops/summary")).json()["dependencies"] == {
        "redis": False, "kafka": True}


async def test_the_page_and_its_files_are_served_through_the_middleware(tmp_path):
    app = app_for(tiny_model(tmp_path))
    root = await get(app, "/")
    assert root.status_code == 307 and root.headers["location"] == "/ui"
    page = await get(app, "/ui")
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/ui/static/app.js", "/ui/static/style.css"):
        assert asset in page.text
        answer = await get(app, asset)
        assert answer.status_code == 200 and len(answer.content) > 1000
    assert (await get(app, "/ui/static/app.js")).headers["content-type"].split(";")[0] in (
        "text/javascript", "application/javascript")
    assert (await get(app, "/ui/static/../routes/ui.py")).status_code == 404
    assert "innerHTML" not in (await get(app, "/ui/static/app.js")).text.replace("never innerHTML", "")


def test_openapi_documents_the_new_endpoints(tmp_path):
    spec = app_for(tiny_model(tmp_path)).openapi()
    assert {"/items", "/ops/summary", "/ui"} <= set(spec["paths"])
    assert "/" not in spec["paths"]
    summary = spec["components"]["schemas"]["OpsSummary"]
    assert {"window_s", "api", "worker", "dependencies", "series"} <= set(summary["properties"])
