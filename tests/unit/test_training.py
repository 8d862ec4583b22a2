"""Co-visitation on a handmade dataset, embeddings vs popularity, and the full pipeline's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from streamrec import feature_schema as s
from streamrec.artifacts import ModelArtifacts, current_version
from streamrec.settings import Settings
from training.covisitation import build_covisitation
from streamrec.interactions import Interactions
from streamrec.interactions import next_item_cases, split_by_time
from training.embeddings import hit_rate, popularity_hit_rate, session_item_matrix, train_embeddings
from streamrec.synthetic import generate_sessions


def _tiny() -> Interactions:
    # session 0: 10 20 30 40 ; session 1: 10 20 ; session 2: 50 (no pairs)
    return Interactions(np.array([0, 0, 0, 0, 1, 1, 2]), np.array([10, 20, 30, 40, 10, 20, 50]),
                        np.arange(7, dtype=np.float64))


def test_covisitation_weights_and_alignment() -> None:
    item_ids = np.array([50, 40, 30, 20, 10, 99])  # unsorted, with an item nobody clicked
    cov = build_covisitation(_tiny(), item_ids, window=3, top_k=50)
    rows = {int(i): dict(zip(*map(np.ndarray.tolist, cov.row(r)))) for r, i in enumerate(item_ids)}
    assert rows[10] == pytest.approx({20: 2.0, 30: 0.5, 40: 1 / 3})  # 20 next to 10 in two sessions
    assert rows[20] == pytest.approx({10: 2.0, 30: 1.0, 40: 0.5})
    assert rows[40] == pytest.approx({30: 1.0, 20: 0.5, 10: 1 / 3})
    assert rows[50] == {} and rows[99] == {}
    assert list(cov.row(4)[0]) == [20, 30, 40]  # best first
    assert len(cov.indptr) == len(item_ids) + 1


def test_covisitation_counts_a_pair_once_per_session_and_truncates() -> None:
    data = Interactions(np.zeros(4, dtype=np.int64), np.array([1, 2, 1, 2]), np.arange(4.0))
    cov = build_covisitation(data, np.array([1, 2]), window=3, top_k=50)
    assert cov.row(0)[1].tolist() == [1.0]  # closest occurrence only, not 1 + 1 + 1/3
    star = Interactions(np.repeat(np.arange(5), 2), np.array([0, 1, 0, 2, 0, 3, 0, 4, 0, 5]), np.arange(10.0))
    cov = build_covisitation(star, np.arange(6), window=1, top_k=2)
    assert len(cov.row(0)[0]) == 2 and cov.indptr[-1] == 2 + 5


def test_split_by_time_holds_out_latest_sessions() -> None:
    data = generate_sessions(n_sessions=500, n_items=200, seed=1)
    train, valid = split_by_time(data)
    assert valid.n_sessions == 50 and train.n_sessions == 450
    first = lambda d: d.timestamps[d.session_starts()]  # noqa: E731
    assert first(valid).min() >= first(train).max()


@pytest.fixture(scope="module")
def synthetic() -> Interactions:
    return generate_sessions(n_sessions=6000, n_items=1500, n_topics=30, seed=7)


def test_embeddings_are_normalised_aligned_and_beat_popularity(synthetic: Interactions) -> None:
    result = train_embeddings(synthetic, candidates=(("als", 32), ("bpr", 32)), max_cases=2000, progress=False)
    assert result.embeddings.shape == (len(result.item_ids), result.factors)
    assert np.allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-4)
    assert result.item_ids.tolist() == np.unique(synthetic.item_ids).tolist()
    report = result.report
    assert {c["algorithm"] for c in report["candidates"]} == {"als", "bpr"}
    assert report["best_hr"] == max(c["hr"] for c in report["candidates"])
    assert report["best_hr"] > report["popularity_hr"] + 0.03
    # the final (all-data) model also ranks true next items well on the held-out sessions
    _, valid = split_by_time(synthetic)
    prefixes, targets = next_item_cases(valid, max_cases=2000)
    assert hit_rate(result.embeddings, result.item_ids, prefixes, targets) > popularity_hit_rate(
        synthetic, prefixes, targets)


def test_session_item_matrix_is_binary(synthetic: Interactions) -> None:
    matrix, item_ids = session_item_matrix(synthetic)
    assert matrix.shape == (synthetic.n_sessions, len(item_ids))
    assert set(np.unique(matrix.data).tolist()) == {1.0}


@pytest.mark.slow
def test_pipeline_writes_a_complete_version(tmp_path: Path) -> None:
    from training.pipeline import train

    settings = Settings(data_dir=tmp_path)
    artifacts = train(settings, None, progress=False, n_sessions=3000, n_items=800, n_topics=20,
                      candidates=(("bpr", 16),), max_cases=1000)
    assert current_version(settings.models_dir) == artifacts.version
    loaded = ModelArtifacts.load(settings.models_dir / artifacts.version)
    assert loaded.item_ids.tolist() == artifacts.item_ids.tolist()
    assert loaded.meta["algorithm"] == "bpr" and loaded.meta["n_clicks"] > 0
    assert loaded.popular[0] == loaded.item_ids[np.argmax(loaded.item_popularity)]
    assert (loaded.path / "index.faiss").exists()

    emb = pq.read_table(settings.batch_dir / s.ITEM_EMBEDDINGS_FILE)
    assert emb.column_names == [s.ITEM_KEY, s.EMBEDDING, s.EVENT_TIMESTAMP]
    assert str(emb.schema.field(s.EMBEDDING).type) == "list<element: float>"
    assert emb.schema.field(s.EVENT_TIMESTAMP).type.tz == "UTC"
    assert np.allclose(np.array(emb.column(s.EMBEDDING)[0].as_py()), loaded.item_embeddings[0])
    stats = pq.read_table(settings.batch_dir / s.ITEM_STATS_FILE).to_pandas()
    assert stats[s.POPULARITY_RANK].min() == 1
    top = stats.loc[stats[s.POPULARITY_RANK] == 1, s.ITEM_KEY].item()
    assert top == loaded.popular[0]
    assert (stats[s.CATEGORY] >= 0).all()  # synthetic items all have a topic
    sessions = pq.read_table(settings.batch_dir / s.SESSION_STREAM_FILE)
    assert sessions.num_rows == 0
    assert sessions.column_names == [s.SESSION_KEY, *s.SESSION_FEATURES, s.EVENT_TIMESTAMP]
    # synthetic sessions have real timestamps: the stream's item windows were backfilled for the
    # ranker's point-in-time streaming features
    trending = pq.read_table(settings.batch_dir / s.ITEM_STREAM_FILE)
    assert trending.num_rows > 0
    assert trending.column_names == [s.ITEM_KEY, *s.ITEM_TRENDING_FEATURES, s.EVENT_TIMESTAMP]
    assert loaded.meta["ranker"]["streaming_features"] is True
    assert "clicks_1h" in loaded.meta["ranker"]["features"]
    # the twin without streaming features is for `streamrec evaluate` only (ranker_ablation=True)
    assert "batch_only_features" not in loaded.meta["ranker"]
    assert not (loaded.path / "ranker_batch_only.txt").exists()
    assert loaded.item_recent_popularity.sum() > 0


def test_a_version_trained_without_promotion_waits_beside_the_champion(tmp_path: Path) -> None:
    from streamrec.model_registry import ModelRegistry
    from training.pipeline import train

    settings = Settings(data_dir=tmp_path)
    knobs = dict(progress=False, n_sessions=1500, n_items=300, n_topics=10, candidates=(("bpr", 8),), max_cases=500,
                 ranker=False)
    champion = train(settings, None, **knobs)
    batch_file = settings.batch_dir / s.ITEM_EMBEDDINGS_FILE
    batch_bytes = batch_file.read_bytes()
    waiting = train(settings, None, promote=False, seed=1, **knobs)
    registry = ModelRegistry(settings.models_dir)
    assert registry.champion() == champion.version != waiting.version
    assert batch_file.read_bytes() == batch_bytes  # the online store's source stays the champion's
    assert [e["version"] for e in registry.history()] == [champion.version]
    info = registry.info(waiting.version)
    assert info.status == "candidate" and info.training_s is not None and info.training_s > 0
    assert info.data_first is not None and info.data_first <= info.data_last and info.synthetic_clock is False
