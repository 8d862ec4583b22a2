"""Stage 3 end to end on the real broker and Redis: clicks → Kafka → worker → online store → /recommend."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pandas as pd
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamrec import feature_schema as s
from serving.schemas import Recommendation
from infra import process
from streamrec.settings import Settings
from tests.conftest import read_session, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def send_raw(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for key, value in messages:
        producer.send(settings.clicks_topic, key=key.encode(), value=value)
    producer.flush(10)
    producer.close()


def click(session_id: str, item: int) -> tuple[str, bytes]:
    return session_id, json.dumps({"session_id": session_id, "item_id": item, "ts": time.time()}).encode()


def items_by_category(settings: Settings) -> dict[int, list[int]]:
    stats = pd.read_parquet(settings.batch_dir / s.ITEM_STATS_FILE).sort_values(s.POPULARITY_RANK)
    return {int(c): group[s.ITEM_KEY].astype(int).tolist() for c, group in stats.groupby(s.CATEGORY)}


def recommend(api: str, session_id: str, **body) -> dict:
    response = httpx.post(f"{api}/recommend", json={"session_id": session_id, "k": 20, **body}, timeout=5)
    assert response.status_code == 200, response.text
    Recommendation.model_validate(response.json())  # the route builds its JSON by hand: hold it to the schema
    return response.json()


def test_clicks_through_kafka_reach_the_session_features_and_the_next_recommendation(live_settings, worker, api):
    session_id = f"e2e-{uuid.uuid4().hex[:8]}"
    before = recommend(api, session_id)
    assert before["stage"] == "fallback_popular" and before["session_items_used"] == []

    categories = items_by_category(live_settings)
    category, members = max(categories.items(), key=lambda kv: len(kv[1]))
    clicked = members[5:8]
    send_raw(live_settings, [click(session_id, item) for item in clicked])

    # The worker may take the three clicks in more than one batch: wait for the count, then check order.
    def all_applied() -> dict | None:
        features = read_session(live_settings, session_id)
        return features if features and features[s.CLICK_COUNT] >= len(clicked) else None

    features = wait_for(all_applied, 30, "all three clicks in the session's streaming features")
    assert features[s.RECENT_ITEMS] == clicked
    assert features[s.CLICK_COUNT] == 3

    after = recommend(api, session_id, exclude_seen=True)
    assert after["stage"] == "stream"
    assert after["session_items_used"] == clicked
    recommended = [r["item_id"] for r in after["items"]]
    assert not set(recommended) & set(clicked)  # exclude_seen
    assert recommended != [r["item_id"] for r in before["items"]]
    in_category = sum(item in set(members) for item in recommended) / len(recommended)
    assert in_category >= 0.5, f"only {in_category:.0%} of recommendations share the clicked items' topic"
    assert after["model_version"] and after["index_version"].startswith(after["model_version"])
    assert set(after["timings_ms"]) >= {"session_features", "embeddings", "retrieval", "scoring", "total"}


def test_post_events_goes_through_kafka_into_the_features(live_settings, worker, api):
    session_id = f"web-{uuid.uuid4().hex[:8]}"
    items = items_by_category(live_settings)
    some = next(iter(items.values()))[:2]
    for item in some:
        response = httpx.post(f"{api}/events", json={"session_id": session_id, "item_id": item, "ts": time.time()})
        assert response.status_code == 202, response.text
        assert response.json()["topic"] == live_settings.clicks_topic
    wait_for(lambda: (read_session(live_settings, session_id) or {}).get(s.CLICK_COUNT) == 2, 30,
             "both /events clicks to be applied")
    assert recommend(api, session_id)["session_items_used"] == some


@pytest.mark.parametrize("bad", [{"session_id": "x"}, {"item_id": 1}, {"session_id": "x", "item_id": "1", "ts": 1},
                                 {"session_id": "x", "item_id": 1, "ts": 1, "other": 2}])
def test_post_events_refuses_malformed_events_with_a_message(api, bad):
    response = httpx.post(f"{api}/events", json=bad)
    assert response.status_code == 422
    assert response.json()["detail"]


@pytest.mark.parametrize(("bad", "field"), [({"k": 500}, "k"), ({"k": 0}, "k"), ({"colour": "red"}, "colour")])
def test_post_recommend_refuses_out_of_range_k_and_unknown_fields(api, bad, field):
    response = httpx.post(f"{api}/recommend", json={"session_id": "e2e-bad", **bad}, timeout=5)
    assert response.status_code == 422, response.text
    body = response.json()  # the app's handler: one sentence per problem, plus the structured errors
    assert [error["loc"][-1] for error in body["errors"]] == [field]
    assert body["detail"].startswith(f"{field}: ")


def test_post_recommend_refuses_more_session_items_than_configured(live_settings, api):
    too_many = list(range(live_settings.max_session_items + 1))
    response = httpx.post(f"{api}/recommend", json={"session_id": "e2e-bad", "session_items": too_many}, timeout=5)
    assert response.status_code == 422
    assert "session_items" in response.json()["detail"]


def dead_letters(settings: Settings) -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, consumer_timeout_ms=2000,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    partition = TopicPartition(settings.dead_letter_topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    records = [json.loads(message.value) for message in consumer]
    consumer.close()
    return records


def worker_counter(settings: Settings, outcome: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f'streamrec_worker_events_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_malformed_events_go_to_the_dead_letter_topic_and_the_worker_keeps_going(live_settings, worker):
    session_id = f"dlq-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    bad = [
        b"{this is not json " + marker.encode(),
        json.dumps({"session_id": session_id, "ts": time.time(), "note": marker}).encode(),  # missing item_id
        json.dumps({"session_id": session_id, "item_id": marker, "ts": time.time()}).encode(),  # wrong type
        json.dumps({"session_id": session_id, "item_id": 1, "ts": marker}).encode(),  # wrong type
        b"\xff\xfe" + marker.encode(),  # not UTF-8
    ]
    wait_for(lambda: _metrics_up(live_settings), 60, "the worker's metrics page")
    counted_before = worker_counter(live_settings, "dead_lettered")
    send_raw(live_settings, [(session_id, message) for message in bad] + [click(session_id, 42)])

    features = wait_for(lambda: read_session(live_settings, session_id), 30, "the good event after the bad ones")
    assert features[s.CLICK_COUNT] == 1 and features[s.RECENT_ITEMS] == [42]

    def all_dead_lettered() -> list[dict] | None:
        found = [d for d in dead_letters(live_settings) if marker in json.dumps(d) or marker in _decoded(d)]
        return found if len(found) == len(bad) else None

    ours = wait_for(all_dead_lettered, 30, "all bad events in the dead-letter topic")
    assert len(ours) == len(bad)
    assert all(d["reason"] and d["topic"] == live_settings.clicks_topic for d in ours)
    assert worker_counter(live_settings, "dead_lettered") - counted_before == len(bad)
    assert process.is_running("worker", live_settings) is not None


def _decoded(record: dict) -> str:
    import base64

    if "value_b64" in record:
        return base64.b64decode(record["value_b64"]).decode("utf-8", "replace")
    return record.get("value", "")


def _metrics_up(settings: Settings) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def worker_samples(settings: Settings) -> dict[str, list[tuple[dict, float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=5).text
    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_worker_reports_freshness_per_click_and_a_lag_that_drains_to_zero(live_settings, worker):
    wait_for(lambda: _metrics_up(live_settings), 60, "the worker's metrics page")
    session_id = f"fresh-{uuid.uuid4().hex[:8]}"
    before = sum(v for _, v in worker_samples(live_settings).get("streamrec_worker_freshness_seconds_count", []))
    clicks = [click(session_id, item) for item in (3, 4, 5, 6, 7)]
    send_raw(live_settings, clicks)
    wait_for(lambda: (read_session(live_settings, session_id) or {}).get(s.CLICK_COUNT) == len(clicks), 30,
             "the five clicks to be applied")
    samples = worker_samples(live_settings)
    after = sum(v for _, v in samples["streamrec_worker_freshness_seconds_count"])
    assert after - before == len(clicks)  # one observation per click written, none for other records
    # Their record timestamps were stamped by the producer just now: each took well under 10 s.
    assert sum(v for labels, v in samples["streamrec_worker_freshness_seconds_bucket"]
               if labels["le"] == "10.0") == after

    def drained() -> list[tuple[dict, float]] | None:
        lags = [(labels, v) for labels, v in worker_samples(live_settings).get("streamrec_worker_consumer_lag", [])
                if labels["topic"] == live_settings.clicks_topic]
        return lags if lags and all(v == 0 for _, v in lags) else None

    lags = wait_for(drained, 10, "the clicks topic's lag gauge to read 0 on every processed partition")
    assert {labels["partition"] for labels, _ in lags} <= {str(p) for p in range(live_settings.clicks_partitions)}


def test_health_reports_the_served_model_in_structured_fields(live_settings, api):
    from streamrec.artifacts import load_current

    health = httpx.get(f"{api}/health", timeout=5).json()
    model = load_current(live_settings.models_dir)
    assert health["catalogue_items"] == health["index_items"] == len(model.item_ids)
    assert health["scorer"] == "lightgbm-lambdarank"  # the live fixture trains a ranker
    assert health["model_version"] == model.version
