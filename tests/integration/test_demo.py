"""`streamrec demo --json`, run as a user runs it, against the real broker and Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infra import process
from infra.kafka import free_port
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_demo_loses_nothing_and_reports_its_figures(live_settings, tmp_path):
    # At the demo's default rate (1,000 events/s). Same broker and Redis server as the live stack (the demo reuses running services and then
    # leaves them alone), but its own data dir, Redis database, topics and ports.
    redis_port = live_settings.redis_url.rsplit(":", 1)[1].split("/")[0]
    settings = make_settings(tmp_path, kafka_bootstrap=live_settings.kafka_bootstrap,
                             redis_url=f"redis://127.0.0.1:{redis_port}/1", api_port=free_port())
    env = {**settings.to_env(), "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--events", "3000", "--json"],
        env=env, capture_output=True, text=True, timeout=540,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])

    assert report["events_produced"] >= 3000
    assert report["events_applied"] == report["events_produced"] - report["dead_lettered"]
    assert report["dead_lettered"] == report["malformed_sent"]
    print({key: report[key] for key in ("freshness_ms_p50", "freshness_ms_p99", "worker_freshness_ms_p99",
                                        "recommend_ms_p99", "replay_seconds")})
    # Freshness at 1,000 events/s is a speed figure of the machine: the demo puts Kafka, the worker, the API, the
    # producer and a /recommend load on 2 cores. The same code read p50 0.28 s one day and 0.7-2.1 s another, on
    # this machine and on fresh-clone CIs (the old worker code too), so no bound here: `streamrec bench` judges
    # freshness alone on the machine. That the stream serves while it runs is asserted below: answers drawn
    # from streaming features during the replay ("stream" stage), and the first live answer.
    assert 0 < report["freshness_ms_p50"] <= report["freshness_ms_p99"]
    assert report["freshness_samples"] == report["events_applied"]
    assert report["recommend_requests"] > 0 and report["recommend_errors"] == 0
    assert report["recommend_stages"].get("stream", 0) > 0
    for key in ("freshness_ms_p50", "recommend_ms_p50", "recommend_ms_p99", "recommend_server_ms_p50",
                "worker_freshness_ms_p99"):
        assert isinstance(report[key], float)
    assert report["lost"] == 0
    # the first live answer came for the probe click the worker had just applied, before the end
    assert 0 < report["first_recommendation_s"] < report["total_seconds"]
    assert report["first_recommendation_stage"] == "stream"
    steps = report["step_seconds"]
    assert set(steps) == {"train", "stack", "feast", "start", "first_recommendation", "replay"}
    # steps are sequential (the stack overlaps training); each is rounded to 0.1 s
    assert sum(v for k, v in steps.items() if k != "stack") <= report["total_seconds"] + 0.5
    # the model's training ran `feast apply`, so the demo only materialized (one Feast start saved)
    assert "feast materialize (batch" in completed.stderr and "feast apply + materialize" not in completed.stderr
    # it stopped what it started, and only that
    assert process.is_running("worker", settings) is None and process.is_running("api", settings) is None
    from infra.kafka import broker_answers

    assert broker_answers(live_settings.kafka_bootstrap)
