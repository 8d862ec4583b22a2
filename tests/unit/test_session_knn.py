"""Session kNN: neighbour logic on handmade sessions, API edge cases, and tune() vs popularity."""

from __future__ import annotations

import numpy as np
import pytest

from candidates.session_knn import DEFAULT_PARAMS, SessionKNN
from training.knn_tuning import evaluate, grid_points, popularity_scores, tune
from streamrec.interactions import Interactions
from streamrec.interactions import next_item_cases, split_by_time
from streamrec.synthetic import generate_sessions


def _sessions(seqs: list[list[int]]) -> Interactions:
    """One session per list, in order; session s starts at 1000*s, clicks 1 s apart."""
    sessions = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    ts = np.concatenate([1000.0 * i + np.arange(len(s)) for i, s in enumerate(seqs)])
    return Interactions(sessions, items, ts)


def _handmade() -> Interactions:
    return _sessions([
        [1, 2, 3, 7],      # after 1 → 2 → 3 comes 7 ...
        [2, 3, 7, 8],      # ... again
        [9, 3, 7],         # ... and again
        [3, 5],            # 5 follows 3 once
        [4, 6],            # unrelated session
        [6, 4, 6, 4],      # unrelated, repeats
    ])


def test_item_following_the_last_item_in_similar_sessions_ranks_first() -> None:
    model = SessionKNN(**DEFAULT_PARAMS).fit(_handmade())
    items, scores = model.recommend([2, 3], n=10, exclude={2, 3})  # query items may rank first otherwise
    assert items.dtype == np.int64 and scores.dtype == np.float32
    assert items[0] == 7
    assert np.all(np.diff(scores) <= 0)  # best first
    assert set(items.tolist()) <= {1, 5, 7, 8, 9}  # only items of sessions sharing an item
    assert 4 not in items and 6 not in items
    # 5 also follows 3, but in a session matching less of the query: below 7
    assert list(items).index(5) > 0


def test_neighbour_position_weighting_prefers_items_after_the_anchor() -> None:
    # both neighbours match only item 1; in each, 10 comes right after 1 and 20 right before it
    data = _sessions([[20, 1, 10], [20, 1, 10]])
    model = SessionKNN(before_weight=0.25, lambda_npw=2.0).fit(data)
    items, scores = model.recommend([1], n=3)
    assert items[0] in (1, 10)  # the anchor (repeat) or the item right after it
    rank = {int(i): r for r, i in enumerate(items)}
    assert rank[10] < rank[20]
    assert scores[rank[10]] == pytest.approx(4 * scores[rank[20]])  # same distance, before ×0.25
    # farther after the anchor → lower score (exp decay on the distance)
    model = SessionKNN(lambda_npw=1.0).fit(_sessions([[1, 10, 11, 12]]))
    items, scores = model.recommend([1], n=4, exclude={1})
    assert items.tolist() == [10, 11, 12]
    assert scores[1] == pytest.approx(scores[0] * np.exp(-1.0))


def test_query_recency_anchors_on_the_latest_shared_item() -> None:
    # query [1, 5]: the latest item is 5, so 50 (after 5) beats 10 (after 1)
    data = _sessions([[1, 10], [5, 50]])
    items, _ = SessionKNN(lambda_spw=1.0).fit(data).recommend([1, 5], n=4, exclude={1, 5})
    assert items.tolist() == [50, 10]
    items, _ = SessionKNN(lambda_spw=1.0).fit(data).recommend([5, 1], n=4, exclude={1, 5})
    assert items.tolist() == [10, 50]
    # a query longer than any training session (and with unknown items) still anchors correctly
    long_query = [5] + list(range(1000, 1020)) + [1]
    items, _ = SessionKNN(lambda_spw=None).fit(data).recommend(long_query, n=4, exclude={1, 5})
    assert items.tolist() == [10, 50]


def test_sample_size_keeps_only_the_most_recent_neighbours() -> None:
    data = _sessions([[1, 100], [1, 200], [1, 300]])  # session 2 is the most recent
    items, _ = SessionKNN(sample_size=1).fit(data).recommend([1], n=5, exclude={1})
    assert items.tolist() == [300]
    items, _ = SessionKNN(sample_size=2, k=1).fit(data).recommend([1], n=5, exclude={1})
    assert len(items) == 1 and items[0] in (200, 300)
    codes, sims = SessionKNN(sample_size=2).fit(data).neighbours([1])
    assert sorted(codes.tolist()) == [0, 1] and len(sims) == 2  # recency ranks of sessions 2 and 1


def test_unknown_empty_and_exclude() -> None:
    model = SessionKNN().fit(_handmade())
    for query in ([], [12345], [-1, 999]):
        items, scores = model.recommend(query)
        assert len(items) == 0 and len(scores) == 0
        assert items.dtype == np.int64 and scores.dtype == np.float32
    # unknown items are ignored, known ones still work
    assert model.recommend([12345, 2, 3], n=1)[0].tolist() == model.recommend([2, 3], n=1)[0].tolist()
    items, _ = model.recommend([2, 3], n=10, exclude={7, 2, 3, 4242})
    assert not {7, 2, 3} & set(items.tolist())
    assert model.recommend([2, 3], n=2)[0].shape == (2,)
    assert len(model.recommend([2, 3], n=0)[0]) == 0


def test_repeat_weight_scales_query_items() -> None:
    model = SessionKNN(repeat_weight=0.0).fit(_handmade())
    items, _ = model.recommend([2, 3], n=10)
    assert not {2, 3} & set(items.tolist()) and items[0] == 7
    items, _ = model.set_params(repeat_weight=1.0).recommend([2, 3], n=10)
    assert 3 in items.tolist()  # repeats are allowed (about 1 next click in 5 on Diginetica)


def test_unfitted_model_and_string_session_ids() -> None:
    assert len(SessionKNN().recommend([1, 2])[0]) == 0
    data = Interactions(np.array(["a", "a", "b", "b"]), np.array([1, 2, 1, 3]), np.arange(4.0))
    items, _ = SessionKNN().fit(data).recommend([1], n=5, exclude={1})
    assert set(items.tolist()) == {2, 3}
    with pytest.raises(ValueError):
        SessionKNN().set_params(nonsense=1)


def test_grid_points() -> None:
    assert grid_points({"k": [1, 2], "len_norm": [0.0]}) == [{"k": 1, "len_norm": 0.0}, {"k": 2, "len_norm": 0.0}]


def test_tune_returns_params_and_beats_popularity() -> None:
    data = generate_sessions(n_sessions=3000, n_items=500, seed=1)
    grid = {"k": [50, 200], "lambda_npw": [1.0, 4.0]}
    best, report = tune(data, grid, max_cases=1000, seed=0)
    assert set(best) == set(DEFAULT_PARAMS)
    assert best["k"] in (50, 200) and best["lambda_npw"] in (1.0, 4.0)
    assert len(report["results"]) == 4 and report["valid_cases"] == 1000
    assert report["best"]["mrr"] == max(r["mrr"] for r in report["results"])
    assert report["best"]["hr"] > 1.5 * report["popularity"]["hr"]
    assert report["best"]["mrr"] > 1.5 * report["popularity"]["mrr"]

    # the chosen model, refitted on the training part, reproduces the reported figures
    fit_part, valid = split_by_time(data)
    prefixes, targets = next_item_cases(valid, context=1 << 30, max_cases=1000, seed=0)
    scores = evaluate(SessionKNN(**best).fit(fit_part), prefixes, targets)
    assert scores["mrr"] == pytest.approx(report["best"]["mrr"], abs=1e-4)
    assert scores["hr"] > popularity_scores(fit_part, targets)["hr"]
