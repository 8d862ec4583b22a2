"""The `monitoring` profile's Prometheus config and dashboard against the real processes, without Docker:
a local Prometheus (Debian's /usr/bin/prometheus) runs the repo's prometheus.yml with the compose
targets mapped onto the test stack's loopback ports, scrapes an API that requires an API key (sent as
a Bearer token from the credentials file) and the worker, and every dashboard query returns data."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from streamrec.artifacts import load_current
from infra import process
from infra.kafka import free_port
from streamrec.settings import Settings
from tests.conftest import start_api, wait_for
from tests.unit.test_monitoring import DASHBOARD, PROMETHEUS_YML, as_promql, dashboard_exprs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROMETHEUS = shutil.which("prometheus")
KEY = "prometheus-test-key"
# Queries that are empty until something rare happens (no degraded answer in a healthy test stack).
MAY_BE_EMPTY = {"sum by (reason) (rate(streamrec_recommend_degraded_total"}


@pytest.fixture(scope="module")
def keyed_api(live_settings: Settings) -> Iterator[Settings]:
    settings = Settings(**{**live_settings.model_dump(), "api_port": free_port(), "api_key": KEY})
    name = f"api-prom-{settings.api_port}"
    try:
        start_api(name, settings)
        yield settings
    finally:
        process.stop(name, settings)


@pytest.fixture(scope="module")
def prometheus(keyed_api: Settings, worker: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The repo's prometheus.yml with only the compose addresses and the key file's path replaced."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (Debian: prometheus)")
    base = tmp_path_factory.mktemp("prometheus")
    key_file = base / "api_key"
    key_file.write_text(KEY)
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    loopback = {"api:8000": f"127.0.0.1:{keyed_api.api_port}", "worker:6066": f"127.0.0.1:{keyed_api.worker_web_port}"}
    # the archiver and the learner are not part of this stack (their scrape jobs: tests/unit/test_monitoring.py)
    config["scrape_configs"] = [job for job in config["scrape_configs"]
                                if job["job_name"] not in ("streamrec-archiver", "streamrec-learner")]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [loopback[t] for t in static["targets"]]
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key_file)
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (base / "prometheus.log").open("w")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={base / 'prometheus.yml'}",
                             f"--storage.tsdb.path={base / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, (base / "prometheus.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "Prometheus to be ready", interval_s=0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_the_keyed_api_and_the_worker(prometheus: str) -> None:
    """Both targets up: the API's /metrics answered 200, so the Bearer token from the file was accepted."""
    def targets() -> dict[str, tuple[str, str]] | None:
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t.get("lastError", "")) for t in active}
        return health if all(h == "up" for h, _ in health.values()) and len(health) == 2 else None

    try:
        wait_for(targets, 60, "both scrape targets to be up", interval_s=1)
    except AssertionError:
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        raise AssertionError(json.dumps([(t["labels"], t["health"], t["lastError"]) for t in active])) from None


def test_every_dashboard_query_returns_data(prometheus: str, keyed_api: Settings) -> None:
    """Clicks and /recommend calls go on while the queries are polled (bounded), until each has data."""
    base = f"http://127.0.0.1:{keyed_api.api_port}"
    items = [int(i) for i in load_current(keyed_api.models_dir).item_ids[:20]]
    exprs = [e for e in dashboard_exprs(json.loads(DASHBOARD.read_text()))
             if not any(e.startswith(p) for p in MAY_BE_EMPTY)]
    missing: list[str] = list(exprs)
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=10) as client:
        while missing and time.monotonic() < deadline:
            session = f"prom-{uuid.uuid4().hex[:8]}"
            for item in items[:5]:
                sent = client.post("/events", json={"session_id": session, "item_id": item, "ts": time.time()})
                assert sent.status_code == 202, sent.text
            answer = client.post("/recommend", json={"session_id": session, "k": 5})
            assert answer.status_code == 200, answer.text
            missing = [e for e in missing if not query(prometheus, as_promql(e))]
            time.sleep(1)
    assert not missing, f"dashboard queries without data: {missing}"
    applied = query(prometheus, as_promql(exprs[0]))
    assert float(applied[0]["value"][1]) > 0, applied  # worker events/s
    up = {r["metric"]["dependency"]: r["value"][1] for r in query(prometheus, "max by (dependency) (streamrec_dependency_up)")}
    assert up == {"redis": "1", "kafka": "1"}
