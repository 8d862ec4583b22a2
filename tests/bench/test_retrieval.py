"""`streamrec bench retrieval`: the JSON contract, exact reference, recall arithmetic, deterministic catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.retrieval import (
    Catalogue,
    SessionSpec,
    Truth,
    exact_truth,
    recall_at_k,
    run_retrieval_bench,
    session_queries,
    synthetic_catalogue,
)
from streamrec.artifacts import CURRENT, CoVisitation, ModelArtifacts
from streamrec.settings import Settings

REQUIRED_KEYS = {"items", "index", "build_s", "p50_ms", "p99_ms", "recall_at_100", "memory_mb", "speedup_vs_flat"}


def _save_small_model(data_dir: Path, items: int = 400, dim: int = 16) -> ModelArtifacts:
    """A trained-looking model: clustered embeddings, a chain co-visitation graph, skewed popularity."""
    catalogue = synthetic_catalogue(items, dim, seed=7, items_per_cluster=20, items_per_topic=100)
    item_ids = np.arange(items, dtype=np.int64) * 3 + 11  # ids are not rows
    neighbours = np.roll(item_ids, -1)  # item i was co-visited with item i + 1
    model = ModelArtifacts(
        version="v-test", path=data_dir / "models" / "v-test", item_ids=item_ids,
        item_embeddings=catalogue.vectors, item_popularity=np.arange(items, dtype=np.int64)[::-1].copy(),
        popular=item_ids, covisit=CoVisitation(indptr=np.arange(items + 1, dtype=np.int64), neighbours=neighbours,
                                               scores=np.ones(items, dtype=np.float32)))
    model.save()
    (data_dir / "models" / CURRENT).write_text("v-test\n")
    return model


@pytest.fixture(scope="module")
def cli_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data_dir = tmp_path_factory.mktemp("retrieval")
    _save_small_model(data_dir)
    completed = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "retrieval", "--items", "20000", "--queries", "200",
         "--tuning-queries", "200", "--json"],
        env={**os.environ, "STREAMREC_DATA_DIR": str(data_dir)}, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_last_line_is_json_with_every_index_on_both_catalogues(cli_result: dict) -> None:
    entries = cli_result["catalogues"]
    assert all(REQUIRED_KEYS <= set(entry) for entry in entries)
    by_catalogue: dict[str, list[str]] = {}
    for entry in entries:
        by_catalogue.setdefault(entry["catalogue"], []).append(entry["index"])
    assert by_catalogue == {"trained:v-test": ["flat", "hnsw", "ivf", "ivf_sq8"],
                            "synthetic": ["flat", "hnsw", "ivf", "ivf_sq8"]}
    assert {entry["items"] for entry in entries} == {400, 20000}


def test_flat_is_the_exact_reference(cli_result: dict) -> None:
    for entry in cli_result["catalogues"]:
        if entry["index"] == "flat":
            assert entry["recall_at_100"] == 1.0 and entry["speedup_vs_flat"] == 1.0


def test_recalls_are_shares_and_tuned_indexes_find_most_neighbours(cli_result: dict) -> None:
    for entry in cli_result["catalogues"]:
        assert 0.0 <= entry["recall_at_100"] <= 1.0
        if entry["index"] != "flat":
            # README: tuned to recall@100 >= 0.95 (on the tuning queries, by the product's procedure);
            # the held-out queries may differ by sampling only
            assert entry["params"]["recall_at_k"] >= 0.95, entry
            assert entry["recall_at_100"] >= 0.93, entry
        assert entry["memory_bytes"] > 0 and entry["p50_ms"] <= entry["p99_ms"]


def test_one_row_per_catalogue_is_the_products_choice(cli_result: dict) -> None:
    chosen = {entry["catalogue"]: entry["index"] for entry in cli_result["catalogues"] if entry["product_choice"]}
    assert chosen == {"trained:v-test": "flat", "synthetic": "hnsw"}  # 20k items: HNSW (IVF from 200k)


def test_synthetic_catalogue_is_deterministic_for_a_seed() -> None:
    first, again = synthetic_catalogue(5000, 32), synthetic_catalogue(5000, 32)
    other = synthetic_catalogue(5000, 32, seed=1)
    assert np.array_equal(first.vectors, again.vectors) and np.array_equal(first.group_of, again.group_of)
    assert np.array_equal(first.popularity, again.popularity)
    assert not np.array_equal(first.vectors, other.vectors)
    assert np.allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    assert first.popularity.sum() == pytest.approx(1.0)


def test_synthetic_items_are_clustered_not_isotropic() -> None:
    catalogue = synthetic_catalogue(5000, 64)
    truth = exact_truth(catalogue.vectors, catalogue.vectors[:200], 11)
    same_cluster = catalogue.group_of[truth.rows[:, 1:]] == catalogue.group_of[:200, None]
    assert same_cluster.mean() > 0.8  # nearest neighbours share the cluster
    assert truth.scores[:, 10].mean() > 0.7  # isotropic 64-d vectors: about 0.35


def test_session_queries_are_unit_vectors_and_deterministic() -> None:
    catalogue = synthetic_catalogue(3000, 16)
    queries = session_queries(catalogue, 100, SessionSpec(), seed=3)
    assert queries.shape == (100, 16) and np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(queries, session_queries(catalogue, 100, SessionSpec(), seed=3))
    assert not np.array_equal(queries, session_queries(catalogue, 100, SessionSpec(), seed=4))


def test_recall_counts_misses_and_forgives_ties() -> None:
    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3]]  # rows 0 and 1 are the same vector
    query = np.array([[1.0, 0.5, 0.0, 0.0]], dtype=np.float32)
    truth = Truth(rows=np.array([[0, 2]]), scores=np.array([[1.0, 0.5]], dtype=np.float32))
    assert recall_at_k(vectors, query, [np.array([0, 2])], truth) == 1.0
    assert recall_at_k(vectors, query, [np.array([1, 2])], truth) == 1.0  # row 1 ties row 0
    assert recall_at_k(vectors, query, [np.array([0, 3])], truth) == 0.5
    assert recall_at_k(vectors, query, [np.array([0, 0])], truth) == 0.5  # duplicates count once
    assert recall_at_k(vectors, query, [np.array([3, -1])], truth) == 0.0  # padding is no hit


def test_missing_model_is_skipped_with_a_note(tmp_path: Path) -> None:
    result = run_retrieval_bench(Settings(data_dir=tmp_path), items=3000, queries=30, tuning_queries=30,
                                 index_types=("flat", "ivf"))
    assert any("no trained model" in note for note in result["notes"])
    assert [(e["catalogue"], e["index"]) for e in result["catalogues"]] == [("synthetic", "flat"), ("synthetic", "ivf")]
    assert result["catalogues"][0]["dim"] == 64


def test_trained_sessions_walk_the_covisitation_graph(tmp_path: Path) -> None:
    from bench.retrieval import trained_catalogue

    model = _save_small_model(tmp_path)
    catalogue: Catalogue = trained_catalogue(model.path)
    rng = np.random.default_rng(0)
    assert [catalogue.related(row, rng) for row in (0, 5, 399)] == [1, 6, 0]  # ids mapped back to rows
