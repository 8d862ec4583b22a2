"""Continual learning on the live stack: clicks on an item the champion never saw go through
`POST /events` → Kafka → `streamrec archive` → `streamrec learn`, which builds, gates and promotes a
version holding it; the running API hot-swaps to it, and the new item becomes a candidate for
sessions that clicked the item it co-occurs with. The delay from the item's first click to its first
appearance in an answer is measured (FIGURES)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from infra import process
from infra.kafka import free_port
from streamrec.artifacts import load_current
from streamrec.model_registry import ModelRegistry
from streamrec.settings import Settings
from tests.conftest import CLI, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SESSIONS = 120
CHECK_S, NEW_ITEMS_S = 3.0, 10.0  # faster than the defaults (30 s, 60 s): the figure scales with them


@pytest.fixture()
def learn_stack(live_settings: Settings) -> Iterator[Settings]:
    """The archiver and the learner beside the session's API; afterwards the champion goes back."""
    registry = ModelRegistry(live_settings.models_dir)
    original = registry.champion()
    settings = live_settings.model_copy(update={
        "learn_check_s": CHECK_S, "learn_new_items_s": NEW_ITEMS_S, "learn_min_clicks": 100,
        "learn_volume_clicks": 0, "learn_volume_share": 0, "learn_interval_s": 0, "learn_metrics_port": free_port(),
        "archive_flush_s": 0.5})
    process.start_detached("archiver", [*CLI, "archive"], settings, env=settings.to_env())
    process.start_detached("learner", [*CLI, "learn"], settings, env=settings.to_env())
    try:
        yield settings
    finally:
        logs = {name: process.log_tail(name, settings) for name in ("archiver", "learner")}
        for name in ("learner", "archiver"):
            process.stop(name, settings)
        if registry.champion() != original:
            registry.promote(original)
        print("LOGS", json.dumps(logs)[-4000:])


def recommend(api: str, items: list[int]) -> dict:
    response = httpx.post(f"{api}/recommend", json={"session_id": f"learn-{uuid.uuid4().hex[:8]}", "k": 100,
                                                   "session_items": items}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_item_first_clicked_in_the_stream_becomes_a_candidate_within_seconds(
        learn_stack: Settings, api: str) -> None:
    settings = learn_stack
    champion = load_current(settings.models_dir)
    anchor = int(champion.popular[5])  # a known item the new one will be clicked with
    new_item = int(champion.item_ids.max()) + 1 + int(np.random.default_rng().integers(1, 10**6))
    assert new_item not in recommend(api, [anchor])["items"]
    first_click = time.time()
    for n in range(SESSIONS):  # anchor → new item → another known item, in every session
        session = f"learn-{uuid.uuid4().hex[:8]}"
        for offset, item in enumerate((anchor, new_item, int(champion.popular[10 + n % 50]))):
            response = httpx.post(f"{api}/events", json={"session_id": session, "item_id": item,
                                                         "ts": time.time() + offset * 1e-3}, timeout=5)
            assert response.status_code == 202, response.text

    def shown() -> dict | None:
        for name in ("learner", "archiver"):
            if process.is_running(name, settings) is None:
                raise AssertionError(f"{name} died:\n{process.log_tail(name, settings)}")
        answer = recommend(api, [anchor])
        return answer if any(i["item_id"] == new_item for i in answer["items"]) else None

    answer = wait_for(shown, 240, "the new item among the answers for its co-clicked item", interval_s=0.5)
    delay = time.time() - first_click
    version = answer["model_version"]
    listed = json.loads(subprocess.run([*CLI, "models", "list", "--json"], env={**os.environ, **settings.to_env()},
                                       capture_output=True, text=True, timeout=60, check=True).stdout)
    info = next(v for v in listed["versions"] if v["version"] == version)
    status = json.loads((settings.models_dir / "LEARN_STATUS.json").read_text())
    print(f"FIGURES new item first click → shown as a candidate: {delay:.1f} s (learn_check_s={CHECK_S}, "
          f"learn_new_items_s={NEW_ITEMS_S}, archive flush 0.5 s, model poll {settings.model_poll_s} s); "
          f"version {version} ({info['made_by']}, triggers {info['triggers']}, gate {info['gate']['candidate_score']} "
          f"vs {info['gate']['champion_score']}); last check {status['new_clicks']} new clicks")
    assert info["made_by"].startswith("learn") and info["gate"]["passed"]
    # clicks on an unseen item shift the distribution too: drift may fire first, new_items otherwise
    assert set(info["triggers"]) & {"new_items", "drift"}
    metrics = httpx.get(f"http://127.0.0.1:{settings.learn_metrics_port}/metrics", timeout=5).text
    assert "streamrec_learn_item_shift" in metrics and "streamrec_learn_unknown_item_share" in metrics
    assert delay < NEW_ITEMS_S + 4 * CHECK_S + 120
