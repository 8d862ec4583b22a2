"""`streamrec serve --workers 2` on the live stack: both processes answer, and /metrics counts all of them."""

from __future__ import annotations

import re

import httpx
import psutil
import pytest

from infra import process
from infra.kafka import free_port
from streamrec.settings import Settings
from tests.conftest import start_api

REQUESTS = 60


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_two_workers_serve_and_metrics_sum_over_both(live_settings: Settings) -> None:
    settings = Settings(**{**live_settings.model_dump(), "api_port": free_port()})
    name = f"api-workers-{settings.api_port}"
    try:
        base = start_api(name, settings, "--workers", "2")
        pid = process.is_running(name, settings)
        assert pid is not None and len(psutil.Process(pid).children(recursive=True)) >= 2

        for i in range(REQUESTS):  # a new connection each time, so the kernel spreads them over the workers
            answer = httpx.post(f"{base}/recommend", json={"session_id": f"workers-{i}", "k": 5}, timeout=5)
            assert answer.status_code == 200, answer.text

        # each scrape is answered by one worker, yet counts the requests of both
        for _ in range(4):
            text = httpx.get(f"{base}/metrics", timeout=5).text
            counts = re.findall(r'^streamrec_recommend_seconds_count\{stage="[^"]+"\} (\S+)$', text, re.MULTILINE)
            assert sum(float(c) for c in counts) == REQUESTS, text[:2000]
    finally:
        process.stop(name, settings)
