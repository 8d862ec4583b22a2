"""Offline evaluation: test cases, metrics, baselines, and the full run on a small SR-GNN-format folder."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from training import evaluate as ev
from training.datasets import Interactions, load_dataset
from training.synthetic import generate_sessions


def write_srgnn(folder: Path, sessions: list[list[int]], pairs: list[tuple[list[int], int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "train_sessions.txt.gz", "wt") as handle:
        handle.writelines(" ".join(map(str, s)) + "\n" for s in sessions)
    with gzip.open(folder / "test_pairs.tsv.gz", "wt") as handle:
        handle.write("prefix\tlabel\n")
        handle.writelines(" ".join(map(str, p)) + f"\t{label}\n" for p, label in pairs)
    return folder


def test_rank_and_metrics():
    result = ev.ModelResult("m", np.array([1, 2, 0, 20]), [np.array([1, 2]), np.array([3, 4])])
    summary = result.summary(popular_items={1}, n_items=10)
    assert summary["HR@20"] == 75.0
    assert summary["MRR@20"] == pytest.approx(100 * (1 + 0.5 + 0 + 1 / 20) / 4, abs=0.01)
    assert summary["coverage"] == 0.4 and summary["popular_share"] == 0.25
    curves = result.curves()
    assert curves["HR"][0] == 25.0 and curves["HR"][-1] == 75.0
    assert ev.rank_of(7, np.array([3, 7, 9])) == 2 and ev.rank_of(8, np.array([3, 7])) == 0


def test_srgnn_test_pairs_are_read_as_given(tmp_path):
    folder = write_srgnn(tmp_path / "d", [[1, 2, 3]], [([1, 2], 3), ([5], 1)])
    cases = ev.load_test_cases(folder, load_dataset(folder))
    assert cases.prefixes == [[1, 2], [5]] and cases.labels.tolist() == [3, 1]


def test_item_knn_recommends_co_occurring_items():
    data = Interactions(np.array([1, 1, 2, 2, 3, 3]), np.array([10, 11, 10, 11, 12, 13]), np.arange(6.0))
    assert ev.ItemKNN(data).recommend([10])[0] == 11
    assert len(ev.ItemKNN(data).recommend([99])) == 0


def test_evaluate_end_to_end_beats_popularity(tmp_path):
    from streamrec.settings import Settings

    synthetic = generate_sessions(n_sessions=3000, n_items=400, n_topics=20, seed=5)
    sessions = [items for _, items, _ in __import__("training.datasets", fromlist=["iter_sessions"]).iter_sessions(synthetic)]
    train, test = sessions[:2700], sessions[2700:]
    pairs = [(s[:i], s[i]) for s in test for i in range(1, len(s))]
    folder = write_srgnn(tmp_path / "synthetic_srgnn", train, pairs)
    report = ev.evaluate(Settings(data_dir=tmp_path / "data"), folder)
    assert report["cases"] == len(pairs)
    assert set(report["baselines"]) == {"popularity", "item_knn", "session_knn"}
    assert report["HR@20"] > report["baselines"]["popularity"]["HR@20"]
    assert all(Path(p).exists() for p in report["plots"])
