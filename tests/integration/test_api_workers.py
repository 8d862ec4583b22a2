"""`streamrec serve --workers 2` on the live stack: both processes answer, and /metrics counts all of them."""

from __future__ import annotations

import re

import httpx
import psutil
import pytest

from streamrec.infra import process
from streamrec.infra.kafka import free_port
from streamrec.settings import Settings
from tests.conftest import CLI, wait_for

REQUESTS = 60


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_two_workers_serve_and_metrics_sum_over_both(live_settings: Settings) -> None:
    port = free_port()
    name = f"api-workers-{port}"
    pid = process.start_detached(name, [*CLI, "serve", "--port", str(port), "--workers", "2"], live_settings,
                                 env=live_settings.to_env())
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(healthy, 120, "both API workers to start")
        except AssertionError:
            raise AssertionError(process.log_tail(name, live_settings)) from None
        assert len(psutil.Process(pid).children(recursive=True)) >= 2

        for i in range(REQUESTS):  # a new connection each time, so the kernel spreads them over the workers
            answer = httpx.post(f"{base}/recommend", json={"session_id": f"workers-{i}", "k": 5}, timeout=5)
            assert answer.status_code == 200, answer.text

        # each scrape is answered by one worker, yet counts the requests of both
        for _ in range(4):
            text = httpx.get(f"{base}/metrics", timeout=5).text
            counts = re.findall(r'^streamrec_recommend_seconds_count\{stage="[^"]+"\} (\S+)$', text, re.MULTILINE)
            assert sum(float(c) for c in counts) == REQUESTS, text[:2000]
    finally:
        process.stop(name, live_settings)
