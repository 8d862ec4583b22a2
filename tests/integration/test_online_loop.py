"""The online loop on the real stack: every answer logged to the impressions topic, and a click
on a shown item attributed to that answer by the worker (Kafka → worker → Redis counters)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis

from streaming.attribution import session_keys
from streamrec.arm_stats import arm_key
from streamrec.impressions import Impression
from streamrec.settings import Settings
from tests.conftest import wait_for
from tests.faults.test_worker_restart import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def recommend(api: str, session_id: str) -> dict:
    answer = httpx.post(f"{api}/recommend", json={"session_id": session_id, "k": 10}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def logged(settings: Settings, request_id: str) -> list[Impression]:
    return [i for i in (Impression.from_bytes(r.value) for r in read_topic(settings, settings.impressions_topic))
            if i.request_id == request_id]


def test_every_answer_is_logged_with_what_it_showed(live_settings: Settings, api: str) -> None:
    session_id = f"log-{uuid.uuid4().hex[:8]}"
    answer = recommend(api, session_id)
    records = wait_for(lambda: logged(live_settings, answer["request_id"]), 30, "the impression in the topic")
    assert len(records) == 1
    record = records[0]
    assert (record.session_id, record.model_version, record.policy, record.propensity, record.stage, record.shadow) == (
        session_id, answer["model_version"], "single", 1.0, answer["stage"], False)
    assert list(record.items) == [i["item_id"] for i in answer["items"]]
    assert abs(record.ts - time.time()) < 60


def test_a_click_on_a_shown_item_is_attributed_to_the_answer_that_showed_it(
        live_settings: Settings, worker: int, api: str) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    session_id = f"reward-{uuid.uuid4().hex[:8]}"
    answer = recommend(api, session_id)
    version, rank = answer["model_version"], 3
    clicked_before = float(client.hget(arm_key("default", version), "clicked") or 0)
    event = {"session_id": session_id, "item_id": answer["items"][rank - 1]["item_id"], "ts": time.time()}
    assert httpx.post(f"{api}/events", json=event, timeout=5).status_code == 202

    done = session_keys(session_id)[2]
    mark = wait_for(lambda: client.hget(done, f"r:{answer['request_id']}:{version}"), 60, "the reward in Redis")
    assert int(mark) == rank
    assert float(client.hget(arm_key("default", version), "clicked")) >= clicked_before + 1
    # a click on an item the answer did not show is no reward
    shown = {i["item_id"] for i in answer["items"]}
    other = next(i for i in range(10**6) if i not in shown)
    second = recommend(api, session_id)
    httpx.post(f"{api}/events", json={"session_id": session_id, "item_id": other, "ts": time.time()}, timeout=5)
    wait_for(lambda: client.llen(session_keys(session_id)[1]) >= 2, 60, "the second click in the join")
    assert client.hget(done, f"r:{second['request_id']}:{version}") is None
    client.close()
