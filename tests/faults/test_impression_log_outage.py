"""Kafka outage and the inference log, on our own broker: /recommend goes on answering within its
budget while the broker is SIGKILLed and restarted; the impressions the API could not log are
dropped and counted (a small buffer makes sure some are), and every answer is accounted for:
either its record is in the impressions topic or it is counted as dropped. After the restart
impressions reach the topic again."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from infra import kafka, process, stack
from infra.kafka import free_port
from serving.ops import parse, total
from streamrec.impressions import Impression
from streamrec.settings import Settings
from tests.conftest import start_api
from tests.faults.test_kafka_outage import kill_broker
from tests.faults.test_redis_outage import own_settings
from tests.faults.test_worker_restart import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

API = "api-impressions-outage"
BUFFER = 100  # impressions an API process holds for Kafka: the outage outlasts it
RATE = 50.0  # /recommend per second
BASELINE_S, DOWN_S, AFTER_S = 3.0, 6.0, 6.0


@pytest.fixture()
def settings(live_settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:6]
    own = own_settings(live_settings, tmp_path_factory.mktemp("impressions-outage"),
                       redis_url=live_settings.redis_url, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                       kafka_controller_port=free_port(), clicks_topic=f"clicks-io-{tag}",
                       dead_letter_topic=f"clicks-dlq-io-{tag}", impressions_topic=f"impressions-io-{tag}",
                       worker_id=f"io-{tag}", impression_buffer=BUFFER)
    try:
        kafka.start(own)
        stack.ensure_topics(own)
        yield own
    finally:
        process.stop(API, own)
        process.stop(kafka.NAME, own, timeout_s=30, expect=kafka.MAIN_CLASS)


def send_for(http: httpx.Client, base: str, seconds: float, phase: str, tag: str, out: list) -> None:
    """`RATE` requests a second on schedule (latency from the scheduled time)."""
    start = time.monotonic()
    n = 0
    while (scheduled := start + n / RATE) < start + seconds:
        time.sleep(max(0.0, scheduled - time.monotonic()))
        try:
            reply = http.post(f"{base}/recommend", json={"session_id": f"io-{tag}-{n % 40}", "k": 10})
            status, request_id = reply.status_code, reply.json().get("request_id")
        except httpx.HTTPError:
            status, request_id = 0, None
        out.append((phase, status, time.monotonic() - scheduled, request_id))
        n += 1


def dropped(base: str) -> dict[str, float]:
    samples = parse(httpx.get(f"{base}/metrics", timeout=5).text)
    return {reason: total(samples, "streamrec_impressions_dropped_total", reason=reason) or 0.0
            for reason in ("buffer_full", "kafka", "shutdown")}


def test_recommend_is_unaffected_and_every_impression_is_logged_or_counted(settings: Settings) -> None:
    base = start_api(API, settings)
    tag = uuid.uuid4().hex[:6]
    answers: list[tuple[str, int, float, str | None]] = []
    with httpx.Client(timeout=5) as http:
        send_for(http, base, BASELINE_S, "baseline", tag, answers)
        killed_at = time.monotonic()
        kill_broker(settings)
        send_for(http, base, DOWN_S, "down", tag, answers)
        kafka.start(settings)
        restarted_s = time.monotonic() - killed_at
        send_for(http, base, AFTER_S, "after", tag, answers)
    # what is still buffered or in flight reaches Kafka within the producer's retry time
    time.sleep(8)
    lost = dropped(base)
    records = [Impression.from_bytes(r.value) for r in read_topic(settings, settings.impressions_topic)]
    logged = {r.request_id for r in records}
    served = [rid for _, status, _, rid in answers if status == 200]
    not_logged = [rid for rid in served if rid not in logged]
    late = {p: float(np.percentile([s for q, _, s, _ in answers if q == p], 99)) * 1000
            for p in ("baseline", "down", "after")}
    last_second = [rid for p, status, s, rid in answers[-int(RATE):] if status == 200]
    print(f"\nFIGURES case=10 impression-log-outage injected='broker SIGKILL, restarted after {restarted_s:.1f}s' "
          f"requests={len(answers)} errors={len(answers) - len(served)} logged={len(logged)} "
          f"dropped={ {k: int(v) for k, v in lost.items()} } not_logged={len(not_logged)} "
          f"duplicates={len(records) - len(logged)} p99_ms={ {k: round(v, 1) for k, v in late.items()} } "
          f"(budget {settings.latency_budget_ms:g} ms)")
    assert len(served) == len(answers), [a for a in answers if a[1] != 200][:5]
    assert late["down"] <= settings.latency_budget_ms, late
    assert lost["buffer_full"] + lost["kafka"] > 0, "nothing was dropped: the outage did not reach the log"
    assert len(not_logged) <= lost["buffer_full"] + lost["kafka"], (len(not_logged), lost)
    assert logged <= set(served) and len(records) == len(logged)
    assert all(rid in logged for rid in last_second), "impressions do not reach Kafka again after the restart"
