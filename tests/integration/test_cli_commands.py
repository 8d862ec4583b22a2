"""The CLI commands a user types, run as commands (subprocesses), with their output checked."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamrec.artifacts import INDEX, current_version, load_current
from streamrec.interactions import iter_sessions
from streamrec.settings import Settings
from streamrec.synthetic import generate_sessions

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "cli"]


def run(settings: Settings, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    import os

    done = subprocess.run([*CLI, *args], env={**os.environ, **settings.to_env()}, capture_output=True, text=True,
                          timeout=timeout_s)
    assert done.returncode == 0, f"streamrec {' '.join(args)}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def srgnn_folder(folder: Path) -> Path:
    """A small SR-GNN-style dataset (train sessions + test pairs) from synthetic sessions."""
    sessions = [items for _, items, _ in iter_sessions(generate_sessions(n_sessions=1500, n_items=200, n_topics=10, seed=9))]
    train, test = sessions[:1350], sessions[1350:]
    folder.mkdir(parents=True)
    with gzip.open(folder / "train_sessions.txt.gz", "wt") as handle:
        handle.writelines(" ".join(map(str, s)) + "\n" for s in train)
    with gzip.open(folder / "test_pairs.tsv.gz", "wt") as handle:
        handle.write("prefix\tlabel\n")
        handle.writelines(" ".join(map(str, s[:i])) + f"\t{s[i]}\n" for s in test for i in range(1, len(s)))
    return folder


def test_status_json_reports_the_live_stack(live_settings: Settings) -> None:
    status = json.loads(run(live_settings, "status", "--json").stdout.strip().splitlines()[-1])
    assert status["kafka"]["reachable"] is True and status["kafka"]["address"].endswith(live_settings.kafka_bootstrap.split(":")[1])
    assert status["redis"]["reachable"] is True and live_settings.redis_url.split(":")[2].split("/")[0] in status["redis"]["address"]


def test_env_prints_the_feast_exports_of_these_settings(live_settings: Settings) -> None:
    lines = run(live_settings, "env").stdout.strip().splitlines()
    assert lines == [f"export {k}={v}" for k, v in live_settings.feast_env().items()]


def test_feast_runs_the_feast_cli_on_the_repo(live_settings: Settings) -> None:
    listed = run(live_settings, "feast", "feature-views", "list").stdout
    assert "session_features" in listed and "item_embeddings" in listed


def test_index_rebuilds_the_current_versions_index(live_settings: Settings) -> None:
    model = load_current(live_settings.models_dir)
    before = (model.path / INDEX).stat().st_mtime_ns if (model.path / INDEX).exists() else None
    done = run(live_settings, "index")
    assert "recall_at_k" in done.stdout + done.stderr  # the CLI's console writes to stderr
    from candidates.index import CandidateIndex

    assert len(CandidateIndex.load(model.path)) == len(model.item_ids)
    if before is not None:
        assert (model.path / INDEX).stat().st_mtime_ns > before


def test_train_without_apply_writes_a_version_and_leaves_feast_alone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    dataset = srgnn_folder(tmp_path / "tiny")
    done = run(settings, "train", "--dataset", str(dataset), "--no-apply", timeout_s=600)
    version = current_version(settings.models_dir)
    assert version and version in done.stdout + done.stderr
    model = load_current(settings.models_dir)
    assert len(model.item_ids) == len(np.unique(np.concatenate(
        [np.array(line.split(), dtype=np.int64) for line in gzip.open(dataset / "train_sessions.txt.gz", "rt")])))
    assert not list(settings.data_dir.rglob("registry.db")), "train --no-apply ran feast apply"


def test_evaluate_json_prints_consistent_figures(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    dataset = srgnn_folder(tmp_path / "tiny")
    report = json.loads(run(settings, "evaluate", "--dataset", str(dataset), "--json", "--limit", "300",
                            timeout_s=900).stdout.strip().splitlines()[-1])
    assert report["cases"] == 300
    for figures in [report, report["with_other_exclude_seen"], *report["baselines"].values()]:
        assert 0 <= figures["MRR@20"] <= figures["HR@20"] <= 100, figures
    assert report["HR@20"] > report["baselines"]["popularity"]["HR@20"]


def test_experiment_continual_json_keeps_its_contract_and_drains_the_learner(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", learn_min_clicks=200, learn_gate_cases=200)
    dataset = srgnn_folder(tmp_path / "tiny")
    report = json.loads(run(settings, "experiment", "continual", "--dataset", str(dataset), "--json", "--slices", "2",
                            "--checks-per-slice", "4", "--slice-cases", "300", "--test-cases", "300",
                            timeout_s=900).stdout.strip().splitlines()[-1])
    arms = ("frozen", "continual", "full_retrain")
    for figures in [report["test"][arm] for arm in arms] + [row[arm] for row in report["slices"] for arm in arms]:
        assert 0 <= figures["MRR@20"] <= figures["HR@20"] <= 100, figures
    assert len(report["slices"]) == 2 and report["test"]["continual"]["cases"] == 300
    assert report["cpu_s"]["continual"] > 0 and report["cpu_s"]["full_retrain"] > 0
    assert {"fired_on_shift", "fired_on_stationary"} <= set(report["drift"])
    assert {"hr_cost", "coverage_gain"} <= set(report["exploration"]) and "new_item_median_s" in report
    # the learner runs on after the stream's end for its new-items delay before the test is scored
    assert report["drain"]["checks"] == 2 == report["drain"]["learner_s"] / settings.learn_check_s
    assert Path(report["plot"]).stat().st_size > 0
