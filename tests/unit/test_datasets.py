"""Dataset loaders on the shipped datasets (read-only) and the synthetic generator's structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.datasets import SRGNN_BASE_TS, SRGNN_CLICK_GAP_S, SRGNN_SESSION_GAP_S, load_dataset
from streamrec.interactions import Interactions, iter_sessions
from streamrec.synthetic import generate_sessions

import os

# shared/ sits beside the repository (../shared/data), as on developers' machines and in CI
DATA = Path(os.environ.get("STREAMREC_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.exists(), reason="shared datasets not present")


def _sorted_by_session_time(data: Interactions) -> bool:
    same = data.session_ids[1:] == data.session_ids[:-1]
    return bool((data.session_ids[1:] >= data.session_ids[:-1]).all()
                and (data.timestamps[1:][same] >= data.timestamps[:-1][same]).all())


def test_interactions_sorts_by_session_then_time() -> None:
    data = Interactions(np.array([2, 1, 2, 1]), np.array([10, 11, 12, 13]), np.array([5.0, 9.0, 1.0, 3.0]))
    assert data.session_ids.tolist() == [1, 1, 2, 2]
    assert data.item_ids.tolist() == [13, 11, 12, 10]
    assert data.n_sessions == 2 and data.session_codes().tolist() == [0, 0, 1, 1]


def test_iter_sessions_orders_sessions_by_first_click() -> None:
    data = Interactions(np.array([1, 1, 2]), np.array([7, 8, 9]), np.array([100.0, 101.0, 50.0]))
    assert list(iter_sessions(data)) == [("2", [9], [50.0]), ("1", [7, 8], [100.0, 101.0])]


@needs_data
def test_srgnn_diginetica_counts_and_synthetic_clock() -> None:
    data = load_dataset(DATA / "diginetica_srgnn")
    assert data.n_sessions == 186_670
    assert data.n_clicks == 906_140
    assert data.n_items == 43_097
    assert _sorted_by_session_time(data)
    first = data.session_starts()
    assert data.timestamps[first[1]] == SRGNN_BASE_TS + SRGNN_SESSION_GAP_S  # session 1 starts 600 s later
    assert data.timestamps[1] - data.timestamps[0] == SRGNN_CLICK_GAP_S
    assert data.item_ids[:2].tolist() == [1, 2]  # first line of the file is "1 2"


@needs_data
def test_yoochoose_splits_and_direct_file() -> None:
    folder = DATA / "yoochoose_100k"
    train = load_dataset(folder)
    assert train.n_sessions == 17_794
    assert load_dataset(folder, split="test").n_sessions == 3_416
    tr, valid = load_dataset(folder, split="train_tr"), load_dataset(folder, split="valid")
    assert 0 < valid.n_clicks < tr.n_clicks < train.n_clicks  # session-rec filters valid: not a partition
    assert set(tr.session_ids.tolist()) <= set(train.session_ids.tolist())
    assert not set(tr.session_ids.tolist()) & set(valid.session_ids.tolist())
    direct = load_dataset(next(folder.glob("*_train_full*")))
    assert direct.n_clicks == train.n_clicks
    assert 1_396_310_400 <= train.timestamps.min() and train.timestamps.max() < 1_397_001_600  # April 2014
    assert _sorted_by_session_time(train)
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset(folder, split="bogus")


@needs_data
def test_raw_diginetica_sample_with_categories() -> None:
    data = load_dataset(DATA / "diginetica_sample")
    assert data.n_clicks == 12_391 and data.n_sessions == 2_986
    assert set(np.unique(data.item_ids).tolist()) >= set(data.categories) and len(data.categories) > 0
    assert 1_451_606_400 <= data.timestamps.min() and data.timestamps.max() < 1_467_331_200  # 2016-01..06


@needs_data
def test_retailrocket_sample() -> None:
    data = load_dataset(DATA / "retailrocket_sample")
    assert data.n_clicks == 10_080 and data.n_sessions == 2_950
    assert 1_430_438_400 <= data.timestamps.min() and data.timestamps.max() < 1_443_657_600  # 2015-05..09


def test_unknown_folder_names_expected_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="train_sessions.txt.gz"):
        load_dataset(tmp_path)


def test_retailrocket_milliseconds_are_detected(tmp_path: Path) -> None:
    file = tmp_path / "rr.tsv"
    file.write_text("timestamp\tuser_id\titem_id\tsession_id\n1442004589000\t0\t5\t0\n1442004759000\t0\t6\t0\n")
    data = load_dataset(tmp_path)
    assert data.timestamps.tolist() == [1442004589.0, 1442004759.0]


def test_synthetic_has_popularity_skew_and_topic_coherence() -> None:
    data = generate_sessions(n_sessions=4000, n_items=2000, n_topics=20, seed=3)
    counts = np.sort(np.bincount(data.item_ids))[::-1]
    assert counts[:20].sum() > 0.15 * counts.sum()  # top 1% of items: far more than 1% of clicks
    topics = np.array([data.categories[int(i)] for i in data.item_ids])
    same_session = data.session_ids[1:] == data.session_ids[:-1]
    same_topic = (topics[1:] == topics[:-1])[same_session].mean()
    assert same_topic > 0.7  # random pairs would agree ~1/20 of the time
    assert _sorted_by_session_time(data)
    assert data.timestamps.max() <= __import__("time").time()
    assert generate_sessions(n_sessions=50, n_items=100, seed=3).item_ids.tolist() == \
        generate_sessions(n_sessions=50, n_items=100, seed=3).item_ids.tolist()
