"""Security on the real stack: with STREAMREC_API_KEY set, POST /events and GET /metrics need the key
while the read endpoints stay open; hostile session and item ids get a 422 from the API, and neither
they nor hostile records written straight into Kafka become a Redis key (checked by SCAN on our own
Redis, which only the worker writes); topic names come from settings only; docker-compose publishes
neither Redis nor Kafka beyond the compose network."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from streamrec import feature_schema as s
from streaming.attribution import session_keys
from streamrec.arm_stats import arm_key
from streamrec.model_registry import ModelRegistry
from streaming.producer import make_producer
from infra import process, redis_server, stack
from infra.kafka import free_port
from streamrec.online_store import OnlineStore
from streamrec.events import MAX_ITEM_ID
from streamrec.settings import Settings
from tests.conftest import CLI, wait_for
from tests.faults.test_redis_outage import own_settings, start_api
from tests.faults.test_worker_restart import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

API = "api-security"
WORKER = "worker-security"
KEY = "s3cret-" + uuid.uuid4().hex
ROOT = Path(__file__).resolve().parents[2]

HOSTILE_SESSION_IDS = [
    "", "a\r\nb", "a\n", "\r\nFLUSHALL\r\n", "*", "sess*", "a b", "a\x00b", "é", "ｓｅｓｓ", "💥", "../x",
    "{tag}", "x" * 129, "x" * 20_000,
]
HOSTILE_ITEM_IDS = [-1, MAX_ITEM_ID + 1, 2**64, True, 1.5, "7", None, [1]]


@pytest.fixture(scope="module")
def secured(live_settings: Settings, tmp_path_factory) -> Iterator[tuple[Settings, str]]:
    """Our own Redis (empty: only our worker writes it), our own topics on the live broker, a worker
    and an API with an API key."""
    tag = uuid.uuid4().hex[:6]
    settings = own_settings(live_settings, tmp_path_factory.mktemp("security"), api_key=KEY,
                            clicks_topic=f"clicks-sec-{tag}", dead_letter_topic=f"clicks-dlq-sec-{tag}",
                            impressions_topic=f"impressions-sec-{tag}",
                            worker_id=f"sec-{tag}", worker_web_port=free_port())
    try:
        redis_server.start(settings)
        stack.ensure_topics(settings)
        process.start_detached(WORKER, [*CLI, "stream"], settings, env=settings.to_env())
        yield settings, start_api(API, settings, healthy_status=(200, 503))
    finally:
        process.stop(API, settings)
        process.stop(WORKER, settings)
        process.stop(redis_server.NAME, settings, expect=redis_server.EXPECT)


def event(session_id: object = "sec-ok", item_id: object = 11) -> dict:
    return {"session_id": session_id, "item_id": item_id, "ts": time.time()}


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]},
                                     {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_write_and_admin_endpoints_refuse_missing_or_wrong_keys(secured, headers):
    _, base = secured
    assert httpx.post(f"{base}/events", json=event(), headers=headers).status_code == 401
    assert httpx.get(f"{base}/metrics", headers=headers).status_code == 401


def test_the_key_opens_them_and_reads_stay_open(secured):
    settings, base = secured
    accepted = httpx.post(f"{base}/events", json=event(), headers={"X-API-Key": KEY})
    assert accepted.status_code == 202 and accepted.json()["topic"] == settings.clicks_topic
    assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.post(f"{base}/recommend", json={"session_id": "sec-read", "k": 5}).status_code == 200
    assert httpx.get(f"{base}/health").status_code in (200, 503)  # status, not a 401
    assert httpx.get(f"{base}/openapi.json").status_code == 200


def test_request_values_cannot_choose_the_topic(secured):
    settings, base = secured
    headers = {"X-API-Key": KEY}
    assert httpx.post(f"{base}/events", json={**event(), "topic": "__consumer_offsets"},
                      headers=headers).status_code == 422
    reply = httpx.post(f"{base}/events", params={"topic": "evil"}, json=event(), headers=headers)
    assert reply.status_code == 202 and reply.json()["topic"] == settings.clicks_topic


def redis_keys(settings: Settings) -> set[bytes]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return set(client.scan_iter(count=1000))
    finally:
        client.close()


def entity_keys(settings: Settings, sessions: list[str], items: list[int]) -> set[bytes]:
    async def keys() -> set[bytes]:
        store = OnlineStore.from_url(settings.redis_url)
        try:
            return ({store.key(s.SESSION_FEATURES_VIEW, sid) for sid in sessions}
                    | {store.key(s.ITEM_TRENDING_VIEW, item) for item in items})
        finally:
            await store.close()

    return asyncio.run(keys())


def test_hostile_values_get_422_and_never_become_redis_keys(secured):
    settings, base = secured
    headers = {"X-API-Key": KEY}
    # the valid click whose keys are expected (other tests of this module send it too: same keys)
    assert httpx.post(f"{base}/events", json=event(), headers=headers).status_code == 202
    hostile_requests = 0
    for session_id in HOSTILE_SESSION_IDS:
        for path, body in (("/events", event(session_id)),
                           ("/recommend", {"session_id": session_id, "session_items": [1]})):
            reply = httpx.post(f"{base}{path}", json=body, headers=headers)
            hostile_requests += 1
            assert reply.status_code in (413, 422), (path, session_id[:40], reply.status_code, reply.text[:200])
    for item_id in HOSTILE_ITEM_IDS:
        for path, body in (("/events", event("sec-item", item_id)),
                           ("/recommend", {"session_id": "sec-item", "session_items": [item_id]})):
            reply = httpx.post(f"{base}{path}", json=body, headers=headers)
            hostile_requests += 1
            assert reply.status_code == 422, (path, item_id, reply.status_code, reply.text[:200])

    # The same values written straight into the clicks topic (not through the API): the worker must
    # dead-letter them, not key Redis with them.
    producer = make_producer(settings)
    raw = [json.dumps(event(sid)).encode() for sid in HOSTILE_SESSION_IDS[:-1]]
    raw += [json.dumps(event("sec-raw", item)).encode() for item in HOSTILE_ITEM_IDS]
    raw += [b'{"session_id": "a\\r\\nb", "item_id": 1, "ts": 1, "topic": "x"}', b"\xff\xfe*\r\n"]
    for value in raw:
        producer.send(settings.clicks_topic, key=b"*", value=value)
    # then valid sentinels, through the API and straight in: once they are applied, so is what came before
    sentinel_api, sentinel_raw = f"sec-sentinel-{uuid.uuid4().hex[:6]}", f"sec-raw-ok-{uuid.uuid4().hex[:6]}"
    producer.send(settings.clicks_topic, key=sentinel_raw.encode(),
                  value=json.dumps(event(sentinel_raw, 13)).encode())
    producer.flush(10)
    producer.close()
    assert httpx.post(f"{base}/events", json=event(sentinel_api, 12), headers=headers).status_code == 202

    valid_sessions = ["sec-ok", sentinel_api, sentinel_raw]
    expected = entity_keys(settings, valid_sessions, [11, 12, 13])
    # the worker's reward attribution keeps each valid session's impressions, clicks and done-marks
    # ("sec-read" asked for recommendations) and the set of sessions with undecided clicks until
    # they are settled, and counts per arm: allowed, never required (they expire or come later),
    # and only for valid sessions and served versions
    attribution = {key.encode() for sid in [*valid_sessions, "sec-read"] for key in session_keys(sid)}
    registry = ModelRegistry(settings.models_dir)
    attribution |= {arm_key(registry.routing().experiment, info.version).encode() for info in registry.versions()}
    try:
        wait_for(lambda: entity_keys(settings, [sentinel_api, sentinel_raw], [12, 13]) <= redis_keys(settings),
                 90, "the worker to apply the sentinel clicks")
    except AssertionError:
        raise AssertionError(process.log_tail(WORKER, settings))
    time.sleep(1)  # item windows may be written a flush after the session rows
    keys = redis_keys(settings) - attribution
    dead = [json.loads(r.value) for r in read_topic(settings, settings.dead_letter_topic)]
    print(f"\nFIGURES case=7 security injected='{len(HOSTILE_SESSION_IDS)} hostile session ids, "
          f"{len(HOSTILE_ITEM_IDS)} hostile item ids via API; {len(raw)} hostile records into Kafka' "
          f"requests={hostile_requests} (all 4xx) redis_keys={len(keys)} (expected {len(expected)}) "
          f"unexpected_keys={len(keys - expected)} dead_lettered={len(dead)}")
    assert keys == expected, (f"unexpected Redis keys: {sorted(keys - expected)[:5]}; "
                              f"missing: {sorted(expected - keys)[:5]}")
    assert len(dead) == len(raw), f"{len(dead)} dead letters for {len(raw)} hostile records"


def test_compose_publishes_neither_redis_nor_kafka():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("redis", "kafka"):
        service = services[name]
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):  # none by default; a loopback-only binding at most
            published = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert published.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond the host's loopback"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port!r} on every interface"
        assert service.get("network_mode") != "host", name
