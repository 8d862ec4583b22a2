"""`streamrec bench stream`: its measuring helpers, and one short end-to-end run on the live stack.

No timing thresholds here (the machine is shared); the figures themselves come from a real run.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bench.stream import BENCH_ITEM_BASE, ITEM_POOL, MAX_SESSION_CLICKS, applied_rate, assemble, session_traffic
from streamrec.events import SESSION_ID_PATTERN
from streamrec.settings import Settings

REQUIRED_KEYS = {"events_per_s", "rate", "freshness_ms_p50_at_rate", "freshness_ms_p99_at_rate",
                 "freshness_ms_p50_at_saturation", "freshness_ms_p99_at_saturation", "reference_events_per_s",
                 "ratio_vs_reference", "poll_interval_ms", "lost", "load_average_1m"}


# --- helpers (no stack needed) -------------------------------------------------------------------

def test_traffic_numbers_each_sessions_clicks_in_send_order() -> None:
    traffic = session_traffic(5000, "t-", np.random.default_rng(0))
    seen: dict[str, int] = {}
    for session_id, nth in zip(traffic.sessions, traffic.nth):
        seen[session_id] = seen.get(session_id, 0) + 1
        assert nth == seen[session_id]
    assert len(traffic) == 5000 and max(traffic.nth) <= MAX_SESSION_CLICKS
    assert traffic.expected_counts() == seen


def test_traffic_mixes_new_and_continuing_sessions_on_bench_only_items() -> None:
    traffic = session_traffic(5000, "t-", np.random.default_rng(0))
    described = traffic.describe()
    assert 0.2 < described["new_session_share"] < 0.8
    assert all(BENCH_ITEM_BASE <= item < BENCH_ITEM_BASE + ITEM_POOL for item in traffic.items)
    assert all(re.match(SESSION_ID_PATTERN, session_id) for session_id in traffic.sessions[:100])


def test_applied_rate_counts_from_first_progress_to_all_done() -> None:
    # (time, progress of any stage, done through every stage): start-up until t=1, done at t=3
    samples = [(0.0, 0, 0), (1.0, 100, 0), (2.0, 900, 400), (3.0, 1000, 1000), (4.0, 1000, 1000)]
    rate, first, last = applied_rate(samples)
    assert (first, last) == (1, 3) and rate == pytest.approx(500.0)


def test_applied_rate_of_a_drain_between_two_samples_is_a_lower_bound() -> None:
    rate, _, _ = applied_rate([(0.0, 0, 0), (0.5, 0, 0), (0.6, 200, 200)])
    assert rate == pytest.approx(2000.0)
    assert math.isnan(applied_rate([(0.0, 0, 0), (1.0, 0, 0)])[0])


def _phase(p50: float, p99: float) -> dict:
    return {"freshness_ms_p50": p50, "freshness_ms_p95": p99, "freshness_ms_p99": p99, "freshness_ms_max": p99,
            "freshness_ms_p50_first_half": p50, "freshness_ms_p50_second_half": p50, "lost": 0,
            "poll_interval_ms": 6.0, "offered_rate": 1000.0, "achieved_rate": 1000.0, "visible_rate": 1000.0}


@pytest.mark.parametrize("rate", [1000.0, 200.0])
def test_result_names_freshness_at_1000_only_when_measured_at_1000(rate: float) -> None:
    result = assemble(rate, {"events_per_s": 6000.0, "lost": 0, "worker_cpu_percent": 90,
                             "worker_cpu_us_per_event": 150},
                      _phase(30, 120), _phase(60, 300), {"events_per_s": 12000.0}, {"events_per_s": 1e5}, [])
    assert ("freshness_ms_p99_at_1000" in result) == (rate == 1000)
    assert result["freshness_ms_p99_at_rate"] == 120 and result["freshness_ms_p99_at_saturation"] == 300
    assert result["ratio_vs_reference"] == 0.5
    assert result["targets"]["events_per_s"]["met"] is True


# --- end to end on the live stack ----------------------------------------------------------------

@pytest.fixture(scope="module")
def result(live_settings: Settings) -> dict:
    """A short run: 2,000-event backlog, 2 s at 200 events/s, 2 s near saturation, the reference."""
    completed = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "stream", "--json", "--events", "2000", "--rate", "200",
         "--duration", "2"],
        env={**os.environ, **live_settings.to_env()}, capture_output=True, text=True, timeout=540,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.integration
@pytest.mark.timeout(900)  # includes starting the live stack when this test runs first
def test_stream_bench_reports_the_issues_keys(result: dict) -> None:
    assert REQUIRED_KEYS <= set(result), REQUIRED_KEYS - set(result)
    assert result["rate"] == 200 and "freshness_ms_p50_at_1000" not in result


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_stream_bench_loses_no_event(result: dict) -> None:
    assert result["lost"] == 0
    assert result["saturation"]["applied"] == result["saturation"]["counted"] == 2000
    assert result["reference"]["events"] == 2000 and result["reference"]["rows_match_worker"] is True


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_stream_bench_measures_throughput_and_ordered_freshness(result: dict) -> None:
    assert result["events_per_s"] > 0 and result["reference_events_per_s"] > 0 and result["ratio_vs_reference"] > 0
    for phase in ("at_rate", "at_saturation"):
        figures = result[phase]
        assert 0 < figures["freshness_ms_p50"] <= figures["freshness_ms_p95"] <= figures["freshness_ms_p99"] \
            <= figures["freshness_ms_max"], (phase, figures)
    assert result["freshness_ms_p50_at_rate"] <= result["freshness_ms_p99_at_rate"]
    assert result["poll_interval_ms"] > 0
