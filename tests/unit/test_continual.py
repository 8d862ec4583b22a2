"""Stateful training: co-visitation merge, the session-kNN memory, warm starts, the gate and the learner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from candidates.bundle import ModelBundle
from candidates.session_knn import SessionKNN
from streamrec.artifacts import CoVisitation
from streamrec.interactions import Interactions
from streamrec.model_registry import ModelRegistry
from streamrec.settings import Settings
from streamrec.synthetic import generate_sessions
from training.continual import WarmStart, concat, fold_in, warm_start
from training.covisitation import build_covisitation, merge_covisitation
from training.gate import gate, version_quality
from training.learn import Learner, holdout_share, split_holdout
from training.ranker import Examples

pytestmark = pytest.mark.slow  # most train a champion and versions from it

FAST = WarmStart(ranker_train_cases=1500, ranker_valid_cases=800, ranker_rounds=30)


def _rows(cov: CoVisitation, item_ids: np.ndarray) -> dict[int, dict[int, float]]:
    return {int(i): dict(zip(*map(np.ndarray.tolist, cov.row(r)))) for r, i in enumerate(item_ids)}


def test_merge_decays_old_lists_adds_new_pairs_and_new_items() -> None:
    old_ids = np.array([1, 2, 3])
    old = CoVisitation(np.array([0, 1, 2, 2]), np.array([2, 1]), np.array([4.0, 4.0], np.float32))
    new_ids = np.array([1, 2, 3, 9])
    window = Interactions(np.array([0, 0, 1, 1]), np.array([1, 2, 3, 9]), np.arange(4.0))
    merged = merge_covisitation(old, old_ids, build_covisitation(window, new_ids, window=1), new_ids, decay=0.5)
    rows = _rows(merged, new_ids)
    assert rows[1] == pytest.approx({2: 0.5 * 4 + 1})
    assert rows[3] == pytest.approx({9: 1.0}) and rows[9] == pytest.approx({3: 1.0})


def test_merge_keeps_the_top_k_best_first() -> None:
    ids = np.array([1, 2, 3, 4])
    old = CoVisitation(np.array([0, 2, 2, 2, 2]), np.array([2, 3]), np.array([3.0, 1.0], np.float32))
    empty = CoVisitation(np.zeros(5, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    merged = merge_covisitation(old, ids, empty, ids, decay=1.0, top_k=1)
    assert _rows(merged, ids)[1] == {2: 3.0}


def test_session_knn_memory_gives_back_its_sessions_in_click_order() -> None:
    data = Interactions(np.array([5, 5, 5, 7, 7]), np.array([10, 20, 10, 30, 40]), np.array([1.0, 2, 3, 9, 10]))
    memory = SessionKNN().fit(data).memory()
    sessions = {tuple(memory.item_ids[memory.session_ids == s].tolist()) for s in np.unique(memory.session_ids)}
    assert sessions == {(10, 20, 10), (30, 40)}
    assert memory.n_sessions == 2


@pytest.mark.parametrize("algorithm", ["bpr", "als"])
def test_item_factors_start_from_the_vectors_given(algorithm: str) -> None:
    """The warm start's embeddings continue the champion's: implicit keeps item factors set before fit."""
    from training.embeddings import fit_item_factors, normalise, session_item_matrix

    data = generate_sessions(n_sessions=800, n_items=120, n_topics=6, seed=2)
    matrix, _ = session_item_matrix(data)
    init = normalise(np.random.default_rng(0).normal(size=(matrix.shape[1], 16)).astype(np.float32))

    def cosine_to_init(vectors: np.ndarray) -> float:
        return float(np.median(np.einsum("ij,ij->i", vectors, init)))

    warm = fit_item_factors(matrix, algorithm, 16, iterations=1, init=init)
    cold = fit_item_factors(matrix, algorithm, 16, iterations=1)
    assert cosine_to_init(warm) > 0.5 and abs(cosine_to_init(cold)) < 0.2


def test_warm_bpr_moves_further_from_its_start_with_a_larger_step() -> None:
    from training.embeddings import fit_item_factors, session_item_matrix

    data = generate_sessions(n_sessions=800, n_items=120, n_topics=6, seed=2)
    matrix, _ = session_item_matrix(data)
    init = fit_item_factors(matrix, "bpr", 16)  # a converged champion's vectors

    def cosine_to_init(learning_rate: float) -> float:
        vectors = fit_item_factors(matrix, "bpr", 16, iterations=20, init=init, learning_rate=learning_rate)
        return float(np.median(np.einsum("ij,ij->i", vectors, init)))

    assert cosine_to_init(0.2) < cosine_to_init(0.05) - 0.005


def test_a_bpr_champion_continues_as_bpr(champion, tmp_path: Path) -> None:
    import copy

    _, bundle, later = champion
    as_bpr = copy.copy(bundle)
    as_bpr.artifacts = copy.copy(bundle.artifacts)
    as_bpr.artifacts.meta = {**bundle.artifacts.meta, "algorithm": "bpr"}
    warm = warm_start(as_bpr, later, version="w", path=tmp_path / "w", config=WarmStart(ranker_rounds=0),
                      log=lambda _: None)
    report = warm.artifacts.meta["continual"]["embeddings"]
    assert report["algorithm"] == "bpr" and warm.artifacts.meta["algorithm"] == "bpr"
    assert report["median_cosine_to_champion"] > 0.5  # refined from the champion's vectors, not redrawn


def test_a_drift_triggered_version_refits_the_embeddings_and_keeps_the_rest_warm(champion, tmp_path: Path) -> None:
    from training.drift import DriftReport, DriftStatistic

    settings, bundle, later = champion
    warm = warm_start(bundle, later, version="r0", path=tmp_path / "r0", config=WarmStart(ranker_rounds=0),
                      log=lambda _: None).artifacts.meta["continual"]["embeddings"]
    refit = warm_start(bundle, later, version="r1", path=tmp_path / "r1",
                       config=WarmStart(ranker_rounds=0, refit_embeddings=True),
                       log=lambda _: None).artifacts.meta["continual"]["embeddings"]
    assert refit["refit"] and not warm["refit"]
    assert warm["median_cosine_to_champion"] > 0.5 > abs(refit["median_cosine_to_champion"])  # a new space

    import shutil

    settings = settings.model_copy(update={"data_dir": tmp_path / "learn", "learn_volume_share": 0,
                                           "learn_interval_s": 0, "learn_new_items_s": 0, "learn_min_clicks": 500})
    shutil.copytree(bundle.path, settings.models_dir / bundle.version)
    ModelRegistry(settings.models_dir).promote(bundle.version)
    fired = DriftReport((DriftStatistic("item_shift", 1.0, 0.5, True, "item shift 1.0 > 0.5"),))
    for refit_on_drift in (True, False):
        learner = Learner(settings.model_copy(update={"learn_refit_on_drift": refit_on_drift}),
                          lambda since: later, drift=lambda window, champion: fired, config=FAST, log=lambda _: None)
        check = learner.check()
        assert check.triggers == ["drift"]
        made = ModelBundle.load(settings.models_dir / check.version).artifacts.meta["continual"]["embeddings"]
        assert made["refit"] == refit_on_drift


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, ModelBundle, Interactions]:
    from training.pipeline import train

    data = generate_sessions(n_sessions=3000, n_items=400, n_topics=10, seed=5)
    first = data.subset_sessions(np.arange(data.n_sessions) < 2000)
    later = data.subset_sessions(np.arange(data.n_sessions) >= 2000)
    settings = Settings(data_dir=tmp_path_factory.mktemp("continual"))
    train(settings, None, data=first, progress=False, ranker_train_cases=1500, ranker_valid_cases=800,
          streaming_features=False)
    return settings, ModelBundle.load_current(settings.models_dir), later


def _with_new_items(window: Interactions, new: dict[int, int]) -> Interactions:
    """`window` where every click on a key of `new` is a click on its value (an item never seen)."""
    items = window.item_ids.copy()
    for old, replacement in new.items():
        items[items == old] = replacement
    return Interactions(window.session_ids, items, window.timestamps)


def test_warm_start_adds_new_items_keeps_known_ones_and_continues_the_ranker(champion, tmp_path: Path) -> None:
    settings, bundle, later = champion
    known = bundle.artifacts.item_ids
    popular_in_window = np.unique(later.item_ids, return_counts=True)
    source = int(popular_in_window[0][np.argmax(popular_in_window[1])])
    window = _with_new_items(later, {source: 10_000_001})
    new = warm_start(bundle, window, version="v2", path=tmp_path / "v2", config=FAST, log=lambda _: None)
    ids = new.artifacts.item_ids
    assert set(known.tolist()) | {10_000_001} == set(ids.tolist())
    row = new.artifacts.row_of(10_000_001)
    assert np.linalg.norm(new.artifacts.item_embeddings[row]) == pytest.approx(1.0, abs=1e-4)
    # the new item is a co-visitation neighbour of what it was clicked with, and in the index
    neighbours = {int(i) for r in range(len(ids)) for i in new.artifacts.covisit.row(r)[0]}
    assert 10_000_001 in neighbours
    assert 10_000_001 in new.index.search(new.artifacts.item_embeddings[row], 5)[0].tolist()
    # the session-kNN remembers the champion's sessions and the window's
    assert new.session_knn.n_sessions == bundle.session_knn.n_sessions + window.n_sessions
    # the ranker is the champion's, continued
    report = new.artifacts.meta["ranker"]
    assert report["continued_from"] == bundle.version
    assert new.ranker.booster.current_iteration() >= bundle.ranker.booster.current_iteration()
    assert new.artifacts.meta["continual"]["embeddings"]["new_items"] == 1
    new.save()
    again = ModelBundle.load(tmp_path / "v2")
    assert again.artifacts.row_of(10_000_001) is not None and ModelRegistry(tmp_path).is_complete("v2")


def test_folding_in_a_hold_out_counts_its_clicks_and_keeps_what_the_gate_scored(champion, tmp_path: Path) -> None:
    from training.popularity import item_popularity

    settings, bundle, later = champion
    items, counts = np.unique(later.item_ids, return_counts=True)
    source = int(items[np.argmax(counts)])
    holdout = _with_new_items(later.subset_sessions(np.arange(later.n_sessions) < 300), {source: 10_000_002})
    folded = fold_in(bundle, holdout, version="f1", path=tmp_path / "f1", config=FAST, log=lambda _: None)
    ids, old = folded.artifacts.item_ids, bundle.artifacts
    # counted in: popularity, co-visitation and the session-kNN memory hold the hold-out's clicks
    rows = folded.artifacts.rows_of(old.item_ids)
    expected = item_popularity(holdout, ids)
    expected[rows] += old.item_popularity
    np.testing.assert_allclose(folded.artifacts.item_popularity, expected)
    assert folded.session_knn.n_sessions == bundle.session_knn.n_sessions + holdout.n_sessions
    neighbours = {int(i) for r in range(len(ids)) for i in folded.artifacts.covisit.row(r)[0]}
    assert 10_000_002 in neighbours
    # the new item: a unit vector from the known items its sessions clicked, added to the index
    vector = folded.artifacts.item_embeddings[folded.artifacts.row_of(10_000_002)]
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert 10_000_002 in folded.index.search(vector, 5)[0].tolist()
    assert len(folded.index) == len(bundle.index) + 1 and folded.artifacts.meta["index"]["added_items"] == 1
    # what the gate scored stays: the known items' vectors, the ranker, the gated version's own index
    np.testing.assert_array_equal(folded.artifacts.item_embeddings[rows], old.item_embeddings)
    assert folded.ranker is bundle.ranker and len(bundle.index) == len(old.item_ids)
    meta = folded.artifacts.meta
    assert meta["parent"] == bundle.version and meta["continual"]["kind"] == "fold_in"
    folded.save()
    assert ModelRegistry(tmp_path).is_complete("f1") and ModelBundle.load(tmp_path / "f1").artifacts.row_of(10_000_002)


def test_a_warm_start_is_as_good_as_its_champion_on_fresh_data(champion, tmp_path: Path) -> None:
    settings, bundle, later = champion
    train_part = later.subset_sessions(np.arange(later.n_sessions) < 700)
    fresh = later.subset_sessions(np.arange(later.n_sessions) >= 700)
    new = warm_start(bundle, train_part, version="v3", path=tmp_path / "v3", config=FAST, log=lambda _: None)
    ours, theirs = version_quality(new, fresh, max_cases=1500), version_quality(bundle, fresh, max_cases=1500)
    assert ours["cases"] == theirs["cases"] > 500
    assert ours["HR@20"] >= theirs["HR@20"] - 1.0


def test_the_gate_rejects_a_version_that_is_worse_by_more_than_the_margin(champion, tmp_path: Path) -> None:
    settings, bundle, later = champion
    broken = warm_start(bundle, later, version="v4", path=tmp_path / "v4", config=FAST, log=lambda _: None)
    rng = np.random.default_rng(0)  # scramble the vectors and neighbour lists: a useless model
    broken.artifacts.item_embeddings = broken.artifacts.item_embeddings[rng.permutation(len(broken.artifacts.item_ids))]
    broken.artifacts.covisit.neighbours = rng.permutation(broken.artifacts.covisit.neighbours)
    from candidates.index import CandidateIndex, build_index
    from candidates.session_knn import SessionKNN

    broken.index = CandidateIndex(*build_index(broken.artifacts.item_embeddings, broken.artifacts.item_ids))
    broken.session_knn = SessionKNN().fit(concat(later.subset_sessions(rng.random(later.n_sessions) < 0.02)))
    decision = gate(broken, bundle, later, margin=0.5, max_cases=1000)
    assert not decision.passed and decision.candidate_score < decision.champion_score - 0.5
    assert gate(bundle, bundle, later, margin=0.0, max_cases=1000).passed  # equal is not worse


def test_the_hold_out_is_as_large_as_the_gate_needs_and_no_larger_than_its_share() -> None:
    from streamrec.interactions import next_item_rows

    data = generate_sessions(n_sessions=2000, n_items=50, n_topics=5, seed=1)
    share = holdout_share(data, 0.2, 300)
    assert share < 0.2
    _, holdout, _ = split_holdout(data, share)
    assert 300 * 1.1 <= len(next_item_rows(holdout)[0]) <= 300 * 1.1 + 5
    assert holdout_share(data, 0.2, 100_000) == 0.2 and holdout_share(data, 0.2, None) == 0.2


def test_split_holdout_cuts_by_time_and_loses_no_click() -> None:
    data = generate_sessions(n_sessions=200, n_items=50, n_topics=5, seed=1)
    train, holdout, cut = split_holdout(data, 0.2)
    assert len(train) + len(holdout) == len(data)
    assert train.timestamps.max() <= cut < holdout.timestamps.min()
    assert len(holdout) == pytest.approx(0.2 * len(data), rel=0.05)


def test_the_learner_triggers_gates_promotes_and_moves_its_cursor(champion, tmp_path: Path) -> None:
    import shutil

    settings, bundle, later = champion
    settings = settings.model_copy(update={"data_dir": tmp_path, "learn_volume_clicks": 3000, "learn_volume_share": 0,
                                           "learn_interval_s": 0, "learn_new_items_s": 0, "learn_min_clicks": 500})
    shutil.copytree(bundle.path, settings.models_dir / bundle.version)
    ModelRegistry(settings.models_dir).promote(bundle.version)
    streamed = {"upto": 0}

    def read(since: float | None) -> Interactions:
        rows = np.arange(len(later)) < streamed["upto"]
        if since is not None:
            rows &= later.timestamps > since
        return later.subset_rows(rows)

    learner = Learner(settings, read, config=FAST, log=lambda _: None)
    streamed["upto"] = 1000
    assert learner.check().triggers == []  # below the volume trigger: nothing to do
    streamed["upto"] = len(later)
    check = learner.check()
    assert check.triggers == ["volume"] and check.version is not None
    registry = ModelRegistry(settings.models_dir)
    assert check.promoted and check.gate["cases"] > 0
    _, holdout, cut = split_holdout(later, holdout_share(later, settings.learn_holdout_share, settings.learn_gate_cases))
    # what serves is the gated version with the hold-out folded in; the next version builds on the gated one
    served = ModelBundle.load_current(settings.models_dir)
    assert served.version == check.folded == registry.champion() != check.version
    assert served.artifacts.meta["parent"] == check.version and served.artifacts.meta["gate"]["gated_version"] == check.version
    gated = ModelBundle.load(settings.models_dir / check.version)
    assert served.session_knn.n_sessions > gated.session_knn.n_sessions  # (a session may span the cut)
    assert learner.base_of(served).version == check.version
    assert learner.state.trained_through == pytest.approx(cut)
    # the hold-out is what the next check reads: tested once, trained on next time
    assert len(read(learner.state.trained_through)) == len(holdout)
    learner2 = Learner(settings, read, config=FAST, log=lambda _: None)  # a restart keeps the cursor
    assert learner2.state.trained_through == pytest.approx(cut)
    # the gate's hold-out examples of the version that is champion now wait for the next version's ranker
    pool = learner.fresh_examples
    assert pool is not None and 0 < len(pool.groups) <= learner.ranker_pool_cases
    assert pool.cases == check.gate["cases"] or len(pool.groups) == learner.ranker_pool_cases
    assert learner2.fresh_examples is None  # in memory only: a restarted learner cuts its own


def test_a_light_version_folds_the_window_into_its_base_and_leaves_the_cursor(champion, tmp_path: Path) -> None:
    import shutil

    settings, bundle, later = champion
    settings = settings.model_copy(update={"data_dir": tmp_path, "learn_volume_share": 0, "learn_on_drift": False,
                                           "learn_interval_s": 0, "learn_new_items_s": 60, "learn_min_clicks": 500})
    shutil.copytree(bundle.path, settings.models_dir / bundle.version)
    ModelRegistry(settings.models_dir).promote(bundle.version)
    items, counts = np.unique(later.item_ids, return_counts=True)
    window = _with_new_items(later, {int(items[np.argmax(counts)]): 10_000_003})
    clock = {"now": 1000.0}
    learner = Learner(settings, lambda since: window, config=FAST, clock=lambda: clock["now"], log=lambda _: None)
    assert learner.check().triggers == []  # the new item's clock starts
    clock["now"] += 60
    check = learner.check()
    assert check.triggers == ["new_items"] and check.kind == "light" and check.promoted
    light = ModelBundle.load(settings.models_dir / check.version)
    meta = light.artifacts.meta
    assert meta["continual"]["kind"] == "light" and meta["continual"]["base"] == bundle.version
    # folded, not trained: the base's vectors and ranker, the window's clicks counted, the new item indexed
    rows = light.artifacts.rows_of(bundle.artifacts.item_ids)
    np.testing.assert_array_equal(light.artifacts.item_embeddings[rows], bundle.artifacts.item_embeddings)
    assert light.ranker.booster.model_to_string() == bundle.ranker.booster.model_to_string()
    assert light.artifacts.meta["n_clicks"] > bundle.artifacts.meta["n_clicks"]
    vector = light.artifacts.item_embeddings[light.artifacts.row_of(10_000_003)]
    assert 10_000_003 in light.index.search(vector, 5)[0].tolist()
    # an overlay: the cursor stays, and the next warm version is built on the base
    assert learner.state.trained_through is None
    assert learner.base_of(ModelBundle.load_current(settings.models_dir)).version == bundle.version


def _gate_examples(times: list[float]) -> Examples:
    """One labelled case per time, two candidate rows each, and as many cases again with no label found."""
    rows = 2 * len(times)
    return Examples(np.zeros((rows, 1), np.float32), np.tile([1, 0], len(times)).astype(np.int32),
                    np.full(len(times), 2), 2 * len(times), np.arange(rows), np.repeat(np.asarray(times), 2))


def test_the_ranker_pool_keeps_the_newest_cases_of_recent_gates_and_none_the_next_gate_sees(tmp_path: Path) -> None:
    from training.ranker import case_times

    learner = Learner(Settings(data_dir=tmp_path), lambda since: Interactions(np.zeros(0, str), np.zeros(0, np.int64),
                                                                            np.zeros(0)),
                      config=WarmStart(ranker_train_cases=3, ranker_valid_cases=2), log=lambda _: None)
    assert learner.ranker_examples(cut=10.0) is None
    learner.pool(_gate_examples([1.0, 2.0, 3.0]))
    learner.pool(_gate_examples([6.0, 4.0, 5.0]))
    pool = learner.fresh_examples
    assert sorted(case_times(pool).tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]  # the newest 5 of both gates
    assert pool.cases == 10 and len(pool.labels) == 10
    # a hold-out from 4.5 on (after a rejected version it can overlap the last one): none of its cases
    assert sorted(case_times(learner.ranker_examples(cut=4.5)).tolist()) == [2.0, 3.0, 4.0]
    assert len(learner.ranker_examples(cut=0.5).groups) == 0


def test_split_cases_puts_the_newest_cases_last_and_shares_out_the_misses() -> None:
    from training.ranker import Examples, split_cases

    groups = np.array([2, 3, 1, 2])
    case_times = np.array([40.0, 10.0, 30.0, 20.0])  # build order is not time order
    rows = int(groups.sum())
    examples = Examples(np.arange(rows, dtype=np.float32)[:, None], np.zeros(rows, np.int32), groups, 8,
                        np.arange(rows), np.repeat(case_times, groups))
    older, newest = split_cases(examples, 0.5)
    assert newest.groups.tolist() == [2, 1] and sorted(set(newest.times.tolist())) == [30.0, 40.0]
    assert older.groups.tolist() == [3, 2] and newest.features[:, 0].tolist() == [0, 1, 5]
    assert older.cases + newest.cases == 8 and newest.cases == 4


def test_the_ranker_continues_on_the_gates_examples_without_cutting_its_own(champion, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import training.ranker
    from training.gate import holdout_examples

    settings, bundle, later = champion
    window = later.subset_sessions(np.arange(later.n_sessions) < 700)
    fresh = holdout_examples(bundle, later.subset_sessions(np.arange(later.n_sessions) >= 700), max_cases=1500)

    def no_cutting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("examples were cut from the window although the gate's were given")

    monkeypatch.setattr(training.ranker, "build_examples", no_cutting)
    new = warm_start(bundle, window, version="v5", path=tmp_path / "v5", config=FAST, examples=fresh,
                     log=lambda _: None)
    report = new.artifacts.meta["ranker"]
    assert report["examples"] == "the recent gates' hold-outs" and report["continued_from"] == bundle.version
    assert 0 < report["train_rows"] < len(fresh.labels) and "valid" in report


def test_the_volume_trigger_scales_with_the_champion_unless_an_absolute_bound_is_lower(tmp_path: Path) -> None:
    from streamrec.settings import Settings

    def threshold(**knobs: float) -> float:
        settings = Settings(data_dir=tmp_path, **{"learn_volume_share": 0, "learn_volume_clicks": 0, **knobs})
        return Learner(settings, lambda since: None, log=lambda _: None).volume_threshold(200_000)

    assert threshold(learn_volume_share=0.1) == pytest.approx(20_000)  # 10% of the champion's clicks
    assert threshold(learn_volume_share=0.1, learn_volume_clicks=5_000) == 5_000  # the lower one fires
    assert threshold(learn_volume_share=0.1, learn_volume_clicks=50_000) == pytest.approx(20_000)
    assert threshold() == float("inf")  # both off: never
    assert Settings(data_dir=tmp_path).learn_volume_clicks == 0  # default: relative only


def test_history_features_are_the_trending_counts_at_each_rows_own_time() -> None:
    from training.historical_features import TrendingHistory, history_features

    clicks = generate_sessions(n_sessions=400, n_items=60, n_topics=4, seed=3)
    history = TrendingHistory.from_clicks(clicks)
    rng = np.random.default_rng(0)
    items = rng.choice(np.unique(clicks.item_ids), 300)
    times = rng.choice(clicks.timestamps, 300)
    got = history_features(history)(items, times)
    for i in range(0, 300, 7):
        five, hour = history.counts(items[i:i + 1], float(int(times[i] * 1000)))
        assert got["clicks_5m"][i] == five[0] and got["clicks_1h"][i] == hour[0]
    assert got["clicks_1h"].sum() > 0


def test_streaming_features_only_for_rankers_that_read_them_on_real_time(champion) -> None:
    from training.continual import streaming_features

    _, bundle, later = champion
    assert streaming_features(bundle, later) is None  # this champion was trained without them


def test_old_counts_are_forgotten_per_click_not_per_version() -> None:
    from training.continual import forgetting

    assert forgetting(WarmStart(), 10**6) == 1.0  # default: the counts a full retrain would have
    halving = WarmStart(half_life_clicks=1000)
    assert forgetting(halving, 1000) == pytest.approx(0.5)
    # two versions of 500 clicks forget as much as one of 1,000
    assert forgetting(halving, 500) ** 2 == pytest.approx(forgetting(halving, 1000))


def test_a_warm_versions_index_is_the_champions_refilled_unless_refitted_or_below_the_recall() -> None:
    from candidates.index import CandidateIndex, build_index
    from training.continual import refreshed_index

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32)).astype(np.float32)  # clustered, as item vectors are
    x = centres[rng.integers(0, 50, 25_000)] + 0.5 * rng.standard_normal((25_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(25_000, dtype=np.int64)
    champion = CandidateIndex(*build_index(x, ids, target_recall=0.9, k=50))
    moved = x + 0.02 * rng.standard_normal(x.shape).astype(np.float32)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    config = WarmStart(target_recall=0.9, index_k=50)
    kept = refreshed_index(champion, moved, ids, config)
    assert kept.info["rebuilt"] is False and kept.info["recall_at_k"] >= 0.9
    assert refreshed_index(champion, moved, ids, WarmStart(target_recall=0.9, index_k=50,
                                                           refit_embeddings=True)).info["rebuilt"] is True
    assert refreshed_index(champion, moved, ids, WarmStart(target_recall=1.01, index_k=50)).info["rebuilt"] is True
