"""The recommender's exploration slot: only the full pipeline's last place changes, to a candidate the
ranker left out, and the answer carries every shown item's propensity."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from fastapi import FastAPI

from streamrec.impressions import Impression

from tests.unit.test_recommender import FakeStore, recommender, tiny_model

BUDGET_MS = 10_000.0  # behaviour, not latency: a busy CI machine must not push the answer to a fallback

SESSION = [1100, 1101]


async def test_strength_zero_or_no_request_id_is_the_rankers_list(tmp_path):
    model = tiny_model(tmp_path)
    plain = await recommender(model, FakeStore(model), BUDGET_MS).recommend("s", 10, SESSION)
    off = await recommender(model, FakeStore(model), BUDGET_MS, explore_strength=0.0).recommend(
        "s", 10, SESSION, request_id="r1")
    shadow = await recommender(model, FakeStore(model), BUDGET_MS, explore_strength=1.0).recommend("s", 10, SESSION)
    for result in (off, shadow):
        assert result.items == plain.items and result.propensities == [] and result.explored_position is None
    assert "exploration" not in off.timings_ms


async def test_the_slot_takes_the_last_place_with_a_left_out_candidate(tmp_path):
    model = tiny_model(tmp_path)
    ranker_only = await recommender(model, FakeStore(model), BUDGET_MS).recommend("s", 10, SESSION, exclude_seen=True)
    ranked = [item for item, _ in ranker_only.items]
    rec = recommender(model, FakeStore(model), BUDGET_MS, explore_strength=0.5)
    last: Counter[int] = Counter()
    for n in range(200):
        result = await rec.recommend("s", 10, SESSION, exclude_seen=True, request_id=f"req-{n}")
        items = [item for item, _ in result.items]
        assert items[:9] == ranked[:9] and len(set(items)) == 10 and not set(SESSION) & set(items)
        assert len(result.propensities) == 10 and result.propensities[:9] == [1.0] * 9
        if result.explored_position is None:
            assert items[9] == ranked[9] and result.propensities[9] == pytest.approx(0.5)
        else:
            assert result.explored_position == 9 and items[9] not in ranked
            assert 0 < result.propensities[9] < 0.5
        assert "exploration" in result.timings_ms
        last[items[9]] += 1
    assert 60 < last[ranked[9]] < 140  # about half the answers keep the ranker's 10th item
    assert len(last) > 5  # and the others spread over several left-out candidates


async def test_fallback_answers_never_explore(tmp_path):
    model = tiny_model(tmp_path)
    rec = recommender(model, FakeStore(model), BUDGET_MS, explore_strength=1.0)
    result = await rec.recommend("s", 5, [], request_id="r")
    assert result.stage == "fallback_popular" and result.propensities == [] and result.explored_position is None


async def test_rarely_clicked_candidates_are_explored_more(tmp_path):
    # tiny_model's training popularity falls with the item's row: 1000 is the most clicked
    model = tiny_model(tmp_path)
    rec = recommender(model, FakeStore(model), BUDGET_MS, explore_strength=1.0)
    drawn = [(await rec.recommend("s", 10, SESSION, request_id=f"q{n}")) for n in range(300)]
    popularity = {int(i): int(p) for i, p in zip(model.item_ids, model.item_popularity)}
    explored = [result.items[9][0] for result in drawn]
    by_item = Counter(explored)
    pairs = [(popularity[item], result.propensities[9]) for item, result in zip(explored, drawn)]
    # the logged propensity falls as the item's clicks grow (weight 1/sqrt(1 + clicks))
    pairs.sort()
    assert pairs[0][1] >= pairs[-1][1] and len(by_item) > 5


async def test_the_answer_marks_the_explored_item_and_the_log_carries_every_propensity(tmp_path):
    """POST /recommend on the real route: the explored item says so, and the impression record
    (buffered, not sent) holds each shown item's propensity under the answer's request id."""
    from serving.impression_log import ImpressionLog
    from serving.loop_watch import LoopWatch
    from serving.routes import recommend as route
    from serving.routing import LiveRouting
    from serving.schemas import Recommendation
    from streamrec.model_registry import RoutingConfig
    from tests.unit.test_request_validation import call

    model = tiny_model(tmp_path)
    rec = recommender(model, FakeStore(model), BUDGET_MS, explore_strength=1.0)
    app = FastAPI()
    app.state.models = SimpleNamespace(settings=rec.settings, state=SimpleNamespace(
        champion="v1", routing=RoutingConfig(), recommenders={"v1": rec}))
    app.state.routing = LiveRouting(None, 1.0)
    app.state.impression_log = log = ImpressionLog(rec.settings)  # not started: records stay buffered
    app.state.loop_watch = LoopWatch()
    app.include_router(route.router)

    answer = await call(app, "POST", "/recommend", json={"session_id": "s", "k": 10, "session_items": SESSION})
    assert answer.status_code == 200, answer.text
    body = Recommendation.model_validate(answer.json())
    assert [item.explored for item in body.items] == [False] * 9 + [True]
    (record,) = list(log._buffer)
    assert record.request_id == body.request_id and list(record.items) == [item.item_id for item in body.items]
    assert record.item_propensities[:9] == (1.0,) * 9 and 0 < record.item_propensities[9] < 1
    assert Impression.from_bytes(record.to_bytes()) == record
