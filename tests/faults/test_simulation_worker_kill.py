"""Rewards under a worker crash: visitors browse through the real API (answers logged, clicks through
POST /events and Kafka) while the worker is SIGKILLed and restarted; afterwards the worker's
attributed rewards equal the simulator's own count of rewarded clicks: nothing lost, nothing
counted twice (the attribution's marks make a redelivered click or impression change nothing)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from evaluation.simulate import replay, wait_for_attribution
from infra import process, stack
from infra.kafka import free_port
from serving.ops import parse, total
from streaming.attribution import session_keys
from streamrec.artifacts import load_current
from streamrec.impressions import Impression
from streamrec.model_registry import ModelRegistry, RoutingConfig
from streamrec.settings import Settings
from tests.conftest import CLI, start_api
from tests.faults.test_redis_outage import own_settings
from tests.faults.test_worker_restart import kill_hard, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(400)]

API, WORKER = "api-sim-kill", "worker-sim-kill"
VISITORS, STEPS, CONCURRENCY = 400, 5, 8
DOWN_S = 3.0


@pytest.fixture()
def settings(live_settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    """Our own data dir (routing), topics, worker and API; the live stack's Kafka and Redis."""
    tag = uuid.uuid4().hex[:6]
    own = own_settings(live_settings, tmp_path_factory.mktemp("sim-kill"), redis_url=live_settings.redis_url,
                       clicks_topic=f"clicks-sk-{tag}", dead_letter_topic=f"clicks-dlq-sk-{tag}",
                       impressions_topic=f"impressions-sk-{tag}", worker_id=f"sk-{tag}",
                       worker_web_port=free_port())
    stack.ensure_topics(own)
    try:
        yield own
    finally:
        process.stop(API, own)
        process.stop(WORKER, own)


def visitors(settings: Settings, seed: int = 5) -> list[list[int]]:
    """Sessions over the most popular items, so a good share of next items is shown (rewards)."""
    popular = load_current(settings.models_dir).popular[:60].tolist()
    rng = random.Random(seed)
    return [rng.sample(popular, STEPS + 1) for _ in range(VISITORS)]


def uncounted(settings: Settings, records: list) -> dict[int, list[tuple[int, int]]]:
    """Offset ranges, per partition, of the impressions without the attribution's counted mark."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    missing: dict[int, list[int]] = {}
    for record in records:
        impression = Impression.from_bytes(record.value)
        field = f"c:{impression.request_id}:{impression.model_version}"
        if not client.hexists(session_keys(impression.session_id)[2], field):
            missing.setdefault(record.partition, []).append(record.offset)
    ranges: dict[int, list[tuple[int, int]]] = {}
    for partition, offsets in sorted(missing.items()):
        for offset in sorted(offsets):
            spans = ranges.setdefault(partition, [])
            if spans and spans[-1][1] == offset - 1:
                spans[-1] = (spans[-1][0], offset)
            else:
                spans.append((offset, offset))
    return ranges


def unrewarded(settings: Settings, impressions: list) -> list[dict]:
    """The rewarded clicks (a click on an item its session's latest earlier impression showed) whose
    reward the attribution has no mark of, with what it knows of them."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    served: dict[str, list] = {}
    for record in impressions:
        impression = Impression.from_bytes(record.value)
        if not impression.shadow:
            served.setdefault(impression.session_id, []).append((impression, record))
    missing = []
    for click in read_topic(settings, settings.clicks_topic):
        event = json.loads(click.value)
        ts = click.timestamp / 1000
        earlier = [(i, r) for i, r in served.get(event["session_id"], ()) if i.ts <= ts]
        if not earlier:
            continue
        impression, record = max(earlier, key=lambda pair: pair[0].ts)
        if event["item_id"] not in impression.items:
            continue
        done = session_keys(impression.session_id)[2]
        if not client.hexists(done, f"r:{impression.request_id}:{impression.model_version}"):
            missing.append({"click": f"{click.partition}:{click.offset}", "impression": f"{record.partition}:{record.offset}",
                            "decided": client.hexists(done, f"j:{click.partition}:{click.offset}"),
                            "counted": client.hexists(done, f"c:{impression.request_id}:{impression.model_version}"),
                            "click_after_s": round(ts - impression.ts, 3),
                            "later_impressions": sum(i.ts > ts for i, _ in served[impression.session_id])})
    return missing


def surplus(settings: Settings, impressions: list, experiment: str) -> list[dict]:
    """Rewards the attribution counted for an impression that was not the latest one its session
    was served before the rewarding click, with the impressions in between."""
    import redis

    from streamrec.arm_stats import REWARD_LOG

    by_request = {}
    for record in impressions:
        impression = Impression.from_bytes(record.value)
        if not impression.shadow:
            by_request[impression.request_id] = (impression, record)
    served: dict[str, list] = {}
    for impression, record in by_request.values():
        served.setdefault(impression.session_id, []).append((impression, record))
    wrong = []
    for _, fields in redis.Redis.from_url(settings.redis_url).xrange(REWARD_LOG):
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        if entry["experiment"] != experiment or entry["request_id"] not in by_request:
            continue
        impression, record = by_request[entry["request_id"]]
        click_ts = float(entry["click_ts"])
        latest = max((i for i, _ in served[impression.session_id] if i.ts <= click_ts), key=lambda i: i.ts)
        if latest.request_id != impression.request_id:
            wrong.append({"rewarded": f"{record.partition}:{record.offset}", "impression_ts": impression.ts,
                          "click_ts": click_ts, "latest_before_click": latest.request_id,
                          "latest_at": f"{by_request[latest.request_id][1].partition}:{by_request[latest.request_id][1].offset}"})
    return wrong


def test_rewards_equal_the_simulators_count_after_a_worker_sigkill(settings: Settings) -> None:
    experiment = ModelRegistry(settings.models_dir).set_routing(RoutingConfig("single")).experiment
    champion = ModelRegistry(settings.models_dir).champion()
    process.start_detached(WORKER, [*CLI, "stream"], settings, env=settings.to_env())
    api = start_api(API, settings)
    sessions = visitors(settings)
    killed, quarter = threading.Event(), threading.Event()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] >= VISITORS // 4:
            quarter.set()

    def crash() -> None:
        quarter.wait(60)  # a quarter of the visitors have browsed: the rest browse through the crash
        kill_hard(process.is_running(WORKER, settings))
        killed.set()
        time.sleep(DOWN_S)
        process.start_detached(WORKER, [*CLI, "stream"], settings, env=settings.to_env())

    chaos = threading.Thread(target=crash, daemon=True)
    chaos.start()
    started = time.monotonic()
    visits = asyncio.run(replay(api, sessions, f"sk-{uuid.uuid4().hex[:6]}", k=20, concurrency=CONCURRENCY,
                                max_session_items=settings.max_session_items, timeout_s=240, progress=progress))
    browsed_s = time.monotonic() - started
    killed_at_browse = killed.is_set()
    chaos.join(30)
    simulated = sum(rewarded for v in visits for _, rewarded in v.steps)
    steps = sum(len(v.steps) for v in visits)
    clicked, impressions = asyncio.run(wait_for_attribution(settings, experiment, [champion], simulated, 120,
                                                            impressions=steps))
    assert process.is_running(WORKER, settings), process.log_tail(WORKER, settings)
    time.sleep(3)  # late redeliveries must not add anything
    clicked_later, impressions_later = asyncio.run(wait_for_attribution(settings, experiment, [champion], 0, 1))
    api_log = parse(httpx.get(f"{api}/metrics", timeout=5).text)
    logged = total(api_log, "streamrec_impressions_logged_total") or 0
    dropped = {labels["reason"]: v for labels, v in api_log.get("streamrec_impressions_dropped_total", ())}
    records = read_topic(settings, settings.impressions_topic)
    in_topic = len(records)
    per_partition = {p: sum(r.partition == p for r in records) for p in sorted({r.partition for r in records})}
    worker_log = parse(httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=5).text)
    lag = {labels["partition"]: v for labels, v in worker_log.get("streamrec_worker_consumer_lag", ())
           if labels["topic"] == settings.impressions_topic}
    read = {labels["outcome"]: v for labels, v in worker_log.get("streamrec_worker_impressions_total", ())}
    rewound = {labels["topic"]: v for labels, v in worker_log.get("streamrec_worker_offsets_rewound_total", ())}
    retracted = total(worker_log, "streamrec_worker_rewards_retracted_total") or 0
    print(f"\nFIGURES case=11 simulation-worker-kill injected='worker SIGKILL after a quarter of the visitors, restarted "
          f"{DOWN_S:g}s later, mid-browsing ({browsed_s:.1f}s in all, killed while browsing: {killed_at_browse})' "
          f"visitors={len(visits)} steps={steps} rewards_simulated={simulated} "
          f"rewards_attributed={clicked_later[champion]} impressions_attributed={impressions_later[champion]} "
          f"(answers {steps}; the API logged {logged:.0f}, dropped {dropped}; the topic holds {in_topic}, "
          f"per partition {per_partition}; the worker's lag per partition {lag}; the restarted worker read {read}, fetched again what Faust dropped: {rewound}, "
          f"and took back {retracted:.0f} rewards an impression read late revised)")
    if clicked_later[champion] != simulated:
        print(f"rewards the worker never counted: {unrewarded(settings, records)}")
        print(f"rewards counted for an earlier impression: {surplus(settings, records, experiment)}")
        print(process.log_tail(WORKER, settings, lines=80))
    if impressions_later[champion] != steps:
        print(f"impressions the worker never counted: {uncounted(settings, records)}")
        print(process.log_tail(WORKER, settings, lines=80))
    assert killed_at_browse, "the worker was not killed while visitors browsed"
    assert simulated > 50, "too few rewards for the check to mean anything"
    assert in_topic == logged == steps, (in_topic, logged, dropped, steps)
    assert clicked[champion] == simulated and clicked_later == clicked, (simulated, clicked, clicked_later)
    assert impressions_later[champion] == steps, (impressions_later, steps)

