"""FAISS index recall and persistence, and the co-visitation / popularity fallbacks."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from candidates.fallbacks import Fallbacks
from candidates.index import CandidateIndex, build_index, load_index, recall_against, recall_queries, save_index
from streamrec.artifacts import CoVisitation, ModelArtifacts


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def hnsw() -> tuple[np.ndarray, np.ndarray, faiss.Index, dict]:
    x = _unit(30_000, 64)
    ids = np.arange(30_000, dtype=np.int64) * 7 + 3  # ids are not row numbers
    index, info = build_index(x, ids, target_recall=0.95, k=100)
    return x, ids, index, info


def test_hnsw_recall_is_measured_and_holds_on_fresh_queries(hnsw) -> None:
    x, ids, index, info = hnsw
    assert info["type"] == "hnsw" and info["recall_at_k"] >= 0.95 and info["ef_search"] >= 100
    queries = recall_queries(x, 300, seed=99)  # not the queries used for tuning
    exact = faiss.IndexFlatIP(64)
    exact.add(x)
    _, truth_rows = exact.search(queries, 100)
    _, found = index.search(queries, 100)
    recall = np.mean([len(np.intersect1d(f, ids[t])) / 100 for f, t in zip(found, truth_rows)])
    assert recall >= 0.94


def test_an_index_is_kept_for_slightly_moved_vectors_and_refused_for_a_new_space(hnsw) -> None:
    x, ids, index, info = hnsw
    old = CandidateIndex(index, info)
    rng = np.random.default_rng(1)
    moved = x + 0.08 * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(64)  # cosine ~0.997
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    new_ids = np.arange(500, dtype=np.int64) * 7 + 1  # ids the index does not hold
    vectors, all_ids = np.vstack([moved, _unit(500, 64, seed=2)]), np.concatenate([ids, new_ids])
    kept, recall = old.updated(vectors, all_ids, target_recall=0.9, k=100)
    assert kept is not None and len(kept) == 30_500 and len(old) == 30_000  # a copy: the old one serves on
    assert recall >= 0.9 and kept.info["recall_at_k"] == recall == round(recall_against(kept.index, vectors, all_ids, 100), 4)
    assert recall > recall_against(index, moved, ids, 100) + 0.02  # it searches the moved vectors, not the old ones
    assert set(kept.search(vectors[-1], 10)[0].tolist()) & {int(new_ids[-1])}  # a new item finds itself
    # a new space (embeddings refitted from scratch): the old graph finds almost nothing
    refused, recall = old.updated(_unit(30_000, 64, seed=3), ids, target_recall=0.9, k=100)
    assert refused is None and recall < 0.5


def test_save_load_round_trip_keeps_ef_and_results(hnsw, tmp_path: Path) -> None:
    x, ids, index, info = hnsw
    save_index(index, info, tmp_path)
    loaded, loaded_info = load_index(tmp_path)
    assert loaded_info == info
    assert faiss.downcast_index(loaded.index).hnsw.efSearch == info["ef_search"]
    q = x[:20]
    assert np.array_equal(index.search(q, 10)[1], loaded.search(q, 10)[1])


def test_large_catalogue_is_ivf_with_measured_nprobe_that_survives_save_load(tmp_path: Path) -> None:
    x = _unit(30_000, 64, seed=4)
    ids = np.arange(30_000, dtype=np.int64) * 5 + 1
    index, info = build_index(x, ids, target_recall=0.95, k=100, ivf_min_items=25_000)
    assert info["type"] == "ivf" and info["recall_at_k"] >= 0.95 and 1 <= info["nprobe"] <= info["nlist"]
    save_index(index, info, tmp_path)
    loaded, loaded_info = load_index(tmp_path)
    assert loaded_info == info and faiss.extract_index_ivf(loaded).nprobe == info["nprobe"]
    queries = recall_queries(x, 300, seed=99)  # not the queries used for tuning
    exact = faiss.IndexFlatIP(64)
    exact.add(x)
    _, truth_rows = exact.search(queries, 100)
    _, found = loaded.search(queries, 100)
    recall = np.mean([len(np.intersect1d(f, ids[t])) / 100 for f, t in zip(found, truth_rows)])
    assert recall >= 0.94


def test_small_catalogue_is_exact_and_search_drops_padding() -> None:
    x = _unit(50, 16, seed=1)
    ids = np.arange(50, dtype=np.int64) + 1000
    index, info = build_index(x, ids, k=100)
    assert info["type"] == "flat" and info["recall_at_k"] == 1.0
    candidates = CandidateIndex(index, info)
    found, scores = candidates.search(x[3], 80)  # more than the catalogue: padding must go
    assert len(found) == 50 and (found >= 1000).all() and found.dtype == np.int64
    assert found[0] == 1003 and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores.dtype == np.float32 and (np.diff(scores) <= 1e-6).all()
    assert len(candidates.search(np.zeros(16, dtype=np.float32), 5)[0]) == 0
    with pytest.raises(ValueError):
        candidates.search(np.ones(8, dtype=np.float32), 5)


def test_candidate_index_load(tmp_path: Path) -> None:
    x = _unit(100, 8, seed=2)
    index, info = build_index(x, np.arange(100, dtype=np.int64), k=10)
    save_index(index, info, tmp_path)
    found, _ = CandidateIndex.load(tmp_path).search(x[42], 5)
    assert found[0] == 42


def _artifacts(tmp_path: Path) -> ModelArtifacts:
    # items 1..5; covisit rows: 1 → {2: 3, 3: 1}; 2 → {1: 3, 4: 2}; 3 → {5: 4}; 4, 5 → nothing
    item_ids = np.array([1, 2, 3, 4, 5], dtype=np.int64)
    covisit = CoVisitation(indptr=np.array([0, 2, 4, 5, 5, 5]), neighbours=np.array([2, 3, 1, 4, 5]),
                           scores=np.array([3.0, 1.0, 3.0, 2.0, 4.0], dtype=np.float32))
    popularity = np.array([10, 50, 30, 20, 40], dtype=np.int64)
    return ModelArtifacts(version="v", path=tmp_path, item_ids=item_ids,
                          item_embeddings=_unit(5, 4), item_popularity=popularity,
                          popular=item_ids[np.argsort(-popularity)], covisit=covisit)


def test_fallbacks_covisited_blends_recent_items_and_excludes_seen(tmp_path: Path) -> None:
    fb = Fallbacks(_artifacts(tmp_path))
    # last item 2 (weight 1): 1 → 1.0, 4 → 2/3 ; previous item 3 (weight 0.5): 5 → 0.5
    result = fb.covisited([3, 2], k=10, exclude={2, 3})
    assert [i for i, _ in result] == [1, 4, 5]
    assert result[1][1] == pytest.approx(2 / 3) and result[2][1] == pytest.approx(0.5)
    assert fb.covisited([3, 2], k=10, exclude={1, 2, 3}) == [(4, pytest.approx(2 / 3)), (5, 0.5)]
    assert fb.covisited([3, 2], k=1) == [(1, 1.0)]


def test_fallbacks_unknown_items_contribute_nothing(tmp_path: Path) -> None:
    fb = Fallbacks(_artifacts(tmp_path))
    assert fb.covisited([999], k=5) == []
    assert [i for i, _ in fb.covisited([1, 999], k=5)] == [2, 3]  # 1 is second-to-last, still used
    assert fb.covisited([], k=5) == []


def test_fallbacks_popular_skips_excluded(tmp_path: Path) -> None:
    fb = Fallbacks(_artifacts(tmp_path))
    assert fb.popular(3) == [(2, 50.0), (5, 40.0), (3, 30.0)]
    assert [i for i, _ in fb.popular(3, exclude=[2, 3])] == [5, 4, 1]
    assert fb.popular(10, exclude=[1, 2, 3, 4, 5]) == []
