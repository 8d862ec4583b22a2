"""`streamrec report online` on the live stack: answers from /recommend, clicks on shown items through
POST /events, the worker's attribution, then the command (a subprocess) reports exactly those
impressions and clicks and writes its plots."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
import redis

from evaluation.online_report import read_impressions, read_rewards
from streamrec.settings import Settings
from tests.conftest import wait_for
from tests.integration.test_cli_commands import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
CLICKED_RANKS = (1, 2, 4, None)  # one session per entry: the rank of the shown item it clicks, or no click


def recommend(api: str, session_id: str) -> dict:
    answer = httpx.post(f"{api}/recommend", json={"session_id": session_id, "k": 10}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_report_counts_the_answers_and_the_clicks_on_what_they_showed(live_settings: Settings, worker: int,
                                                                          api: str, tmp_path) -> None:
    prefix = f"report-{uuid.uuid4().hex[:6]}-"
    answers = []
    for n, rank in enumerate(CLICKED_RANKS):
        answer = recommend(api, f"{prefix}{n}")
        answers.append(answer)
        if rank is not None:
            event = {"session_id": f"{prefix}{n}", "item_id": answer["items"][rank - 1]["item_id"], "ts": time.time()}
            assert httpx.post(f"{api}/events", json=event, timeout=5).status_code == 202
    request_ids = {a["request_id"] for a in answers}
    client = redis.Redis.from_url(live_settings.redis_url)
    wait_for(lambda: len({r.request_id for r in read_rewards(client)} & request_ids) == 3, 60,
             "the worker to attribute the three clicks")
    client.close()
    wait_for(lambda: request_ids <= {i.request_id for i in read_impressions(live_settings, timeout_s=20)[0]}, 30,
             "the four impressions in the topic")

    out = tmp_path / "plots"
    done = run(live_settings, "report", "online", "--json", "--session-prefix", prefix, "--out", str(out))
    report = json.loads(done.stdout.strip().splitlines()[-1])
    version = answers[0]["model_version"]
    assert (report["experiment"], report["impressions"], report["clicked"]) == ("default", 4, 3)
    assert report["policies"] == ["single"] and list(report["arms"]) == [version]
    arm = report["arms"][version]
    assert (arm["impressions"], arm["clicked"], arm["share"]) == (4, 3, 1.0)
    assert arm["ctr"] == pytest.approx(0.75) and arm["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    assert arm["ctr_low"] < 0.75 < arm["ctr_high"]
    assert arm["ips"] == pytest.approx(0.75) and arm["snips"] == pytest.approx(0.75)  # propensity 1: the CTR
    assert report["read"]["complete"] and report["read"]["invalid"] == 0
    assert sum(b["impressions"] for b in report["share_over_time"]) == 4
    assert report["cumulative_reward"]["clicked"][version][-1] == 3
    assert set(report["plots"]) == {"traffic_share", "ctr", "cumulative_reward"}
    for name in ("traffic_share", "ctr", "cumulative_reward"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"

    # without options: the newest impression's experiment, a table, plots in the data dir
    table = run(live_settings, "report", "online")
    assert version in table.stdout and "SNIPS" in table.stdout
    assert (live_settings.data_dir / "reports" / "online-default" / "ctr.png").exists()
