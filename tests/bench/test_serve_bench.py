"""`streamrec bench serve` runs end to end on the live stack: closed-loop levels, reference, open loop.

No timing thresholds here (the machine is shared); the figures themselves come from a real run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.serve import cpu_bound, parse_wrk_output, request_bodies, sample_sessions, where_we_stand
from serving.schemas import RecommendRequest
from streamrec.artifacts import CoVisitation, ModelArtifacts
from infra import process
from streamrec.settings import Settings

LEVEL_KEYS = {"concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors", "non_2xx", "degraded"}
RATE_KEYS = {"offered", "achieved", "p50_ms", "p99_ms", "errors"}


def run_bench(settings: Settings, *args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "serve", "--json", *args],
        env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=540,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def result(live_settings: Settings) -> dict:
    """The benchmark starting its own `streamrec serve` on the live stack's model."""
    return run_bench(live_settings, "--duration", "2", "--concurrency", "1,4", "--rate", "40", "--warmup", "1",
                     "--bodies", "300", "--sample", "30")


@pytest.mark.integration
@pytest.mark.timeout(600)  # includes starting the live stack when this test runs first
@pytest.mark.parametrize("levels_key", ["levels", "reference_levels"])
def test_every_level_reports_throughput_latency_and_errors(result: dict, levels_key: str) -> None:
    levels = result[levels_key]
    assert [level["concurrency"] for level in levels] == [1, 4]
    for level in levels:
        assert LEVEL_KEYS <= set(level)
        assert level["errors"] == 0 and level["non_2xx"] == 0
        assert level["rps"] > 0
        assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"] <= level["max_ms"]


@pytest.mark.integration
@pytest.mark.timeout(600)  # includes starting the live stack when this test runs first
def test_ratios_compare_recommend_with_the_reference_at_each_level(result: dict) -> None:
    assert [ratio["concurrency"] for ratio in result["ratios"]] == [1, 4]
    assert all(ratio["p50_ratio"] > 0 and ratio["p99_ratio"] > 0 and ratio["rps_ratio"] > 0
               for ratio in result["ratios"])


@pytest.mark.integration
@pytest.mark.timeout(600)  # includes starting the live stack when this test runs first
def test_open_loop_offers_the_rate_for_recommend_and_reference(result: dict) -> None:
    for run in (result["rate"], result["rate"]["reference"]):
        assert RATE_KEYS <= set(run)
        assert run["offered"] == 40 and run["achieved"] > 0 and run["errors"] == 0
        assert run["p50_ms"] <= run["p99_ms"]


@pytest.mark.integration
@pytest.mark.timeout(600)  # includes starting the live stack when this test runs first
def test_non_empty_sessions_are_ranked_and_empty_ones_get_popular_items(result: dict) -> None:
    check = result["response_check"]
    assert check["requests"] == 30 and check["errors"] == 0
    assert check["stages"].get("batch", 0) > 0  # never-seen session ids: request items only, full pipeline
    assert set(check["reference_stages"]) == {"fallback_popular"}
    assert result["reference_levels"][0]["fallback"] > 0  # every reference answer is the popular fallback
    # the fixture trains a ranker: what served is the ranker, as /health reports it (no text parsing)
    assert result["catalogue_items"] == 800 and result["scorer"] == "lightgbm-lambdarank"
    assert result["model_version"] and result["sessions"]["bodies"] == 300


@pytest.mark.integration
@pytest.mark.timeout(600)  # includes starting the live stack when this test runs first
def test_the_server_the_benchmark_started_is_stopped(result: dict, live_settings: Settings) -> None:
    started = [name for name in process.pid_names(live_settings) if name.startswith("bench-api-")]
    assert started == []
    assert result["server"] == "started by the benchmark"


@pytest.mark.integration
@pytest.mark.timeout(600)  # includes starting the live stack when this test runs first
def test_url_benchmarks_an_api_that_is_already_running(api: str, live_settings: Settings) -> None:
    measured = run_bench(live_settings, "--url", api, "--duration", "1", "--concurrency", "2", "--rate", "0",
                         "--warmup", "0", "--bodies", "50", "--sample", "5")
    assert [level["concurrency"] for level in measured["levels"]] == [2]
    assert measured["levels"][0]["errors"] == 0 and measured["rate"] is None
    assert measured["server"] == api


# --- without the stack ---------------------------------------------------------------------------

def _small_model(folder: Path, items: int = 200) -> ModelArtifacts:
    rng = np.random.default_rng(0)
    item_ids = np.arange(items, dtype=np.int64) * 7 + 5
    vectors = rng.normal(size=(items, 8)).astype(np.float32)
    model = ModelArtifacts(
        version="v-serve", path=folder, item_ids=item_ids,
        item_embeddings=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        item_popularity=np.arange(items, dtype=np.int64)[::-1].copy(), popular=item_ids,
        covisit=CoVisitation(indptr=np.arange(items + 1, dtype=np.int64), neighbours=np.roll(item_ids, -1),
                             scores=np.ones(items, dtype=np.float32)),
        meta={"dataset": "synthetic"})
    return model


def test_request_bodies_are_valid_requests_over_catalogue_items(tmp_path: Path) -> None:
    model = _small_model(tmp_path)
    sessions = sample_sessions(model, 300, seed=1)
    recommend, reference = request_bodies(sessions, k=20, tag="t")
    catalogue = set(model.item_ids.tolist())
    parsed = [RecommendRequest.model_validate_json(body) for body in recommend]
    assert len(parsed) == 300 and all(request.k == 20 and request.exclude_seen for request in parsed)
    assert all(request.session_items and set(request.session_items) <= catalogue for request in parsed)
    assert len({tuple(request.session_items) for request in parsed}) > 100  # varied, not one body repeated
    assert len({request.session_id for request in parsed}) == 300
    assert all(RecommendRequest.model_validate_json(body).session_items == [] for body in reference)


def test_sessions_follow_covisitation_most_of_the_time(tmp_path: Path) -> None:
    model = _small_model(tmp_path)
    sessions = sample_sessions(model, 500, seed=2)
    steps = [(a, b) for items in sessions.items for a, b in zip(items, items[1:])]
    follows = sum(b == a + 7 or (a == model.item_ids[-1] and b == model.item_ids[0]) for a, b in steps)
    assert sessions.source.startswith("catalogue walks") and follows / len(steps) > 0.6


def test_sessions_come_from_the_test_prefixes_of_the_training_dataset(tmp_path: Path) -> None:
    import gzip

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    with gzip.open(dataset / "test_pairs.tsv.gz", "wt") as out:
        out.write("prefix\tlabel\n" + "".join(f"{5 + 7 * i} {12 + 7 * i} 999999\t{19 + 7 * i}\n" for i in range(150)))
    model = _small_model(tmp_path / "model")
    model.meta["dataset"] = str(dataset)
    sessions = sample_sessions(model, 50)
    assert sessions.source == "test prefixes of dataset"
    assert all(len(items) == 2 and items[1] == items[0] + 7 for items in sessions.items)  # unknown 999999 dropped


def test_wrk_result_line_becomes_a_level() -> None:
    stdout = ("Running 2s test @ http://127.0.0.1:1\n"
              '{"streamrec_wrk":1,"requests":200,"duration_us":2000000,"bytes":1,"connect":0,"read":1,"write":0,'
              '"status":2,"timeout":1,"responses":199,"non_2xx":2,"degraded":3,"fallback":0,"p50_us":1500.0,'
              '"p95_us":2500.0,"p99_us":4000.0,"max_us":9000.0,"mean_us":1700.0,"degraded_reasons":{"retrieval":3}}\n')
    level = parse_wrk_output(stdout)
    assert level["rps"] == 100.0 and level["p50_ms"] == 1.5 and level["p95_ms"] == 2.5 and level["max_ms"] == 9.0
    assert level["errors"] == 4 and level["non_2xx"] == 2 and level["timeouts"] == 1  # read + timeout + non-2xx
    assert level["degraded_reasons"] == {"retrieval": 3}
    assert level["ranked_rps"] == 98.5  # 199 answers, 2 of them non-2xx, none a fallback, over 2 s


def test_fallback_answers_do_not_count_towards_the_ranked_throughput_target() -> None:
    level = {"concurrency": 32, "rps": 900.0, "ranked_rps": 450.0, "p99_ms": 40.0}
    targets = where_we_stand([level, {"concurrency": 1, "p50_ms": 3.0}], errors=0)
    assert targets["rps_at_32"] == {"target": 500.0, "measured": 450.0, "met": False}


def test_cpu_per_answer_sets_a_floor_under_closed_loop_latency() -> None:
    bound = cpu_bound(10.0, 12.0, {"concurrency": 32, "requests": 1000}, cores=2)
    assert bound == {"server_cpu_ms_per_request": 2.0, "mean_ms_floor": 32.0}  # 32 waiting × 2 ms / 2 cores
    assert cpu_bound(None, 12.0, {"concurrency": 32, "requests": 1000})["mean_ms_floor"] is None


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_inference_logs_cpu_cost_is_measured_on_against_off(result: dict) -> None:
    log = result["impression_log"]
    assert log["rounds"] == 3 and len(log["cpu_ms_per_request_on"]) == len(log["cpu_ms_per_request_off"]) == 3
    assert all(v > 0 for v in log["cpu_ms_per_request_on"] + log["cpu_ms_per_request_off"])
    assert log["cost_ms_per_request"] == pytest.approx(
        float(np.median(log["cpu_ms_per_request_on"]) - np.median(log["cpu_ms_per_request_off"])), abs=1e-4)
    assert log["met"] == (log["cost_ms_per_request"] <= log["target_ms"] == 0.1)
