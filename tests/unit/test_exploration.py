"""The exploration slot: its logged propensities are the frequencies with which it shows each item."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from candidates.exploration import explore_slot, request_rng, uncertainty

SHOWN = [10, 11, 12, 13, 14]
POOL = np.array([20, 21, 22, 23], dtype=np.int64)
EXPOSURE = np.array([0, 3, 99, 8], dtype=np.float64)  # weights 1, 1/2, 1/10, 1/3


def test_strength_zero_is_the_rankers_list_with_propensity_one():
    explored = explore_slot(SHOWN, POOL, EXPOSURE, 0.0, request_rng("a"))
    assert explored.items == SHOWN and explored.propensities == [1.0] * 5 and explored.explored_position is None


def test_no_pool_no_generator_or_empty_list_never_explore():
    assert explore_slot(SHOWN, POOL[:0], EXPOSURE[:0], 0.9, request_rng("a")).propensities == [1.0] * 5
    assert explore_slot(SHOWN, POOL, EXPOSURE, 0.9, None).items == SHOWN
    assert explore_slot([], POOL, EXPOSURE, 0.9, request_rng("a")).items == []


def test_strength_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
        explore_slot(SHOWN, POOL, EXPOSURE, 1.5, request_rng("a"))


def test_only_the_last_place_changes_and_never_to_a_shown_item():
    for seed in range(300):
        explored = explore_slot(SHOWN, POOL, EXPOSURE, 0.5, request_rng(f"r{seed}"))
        assert explored.items[:-1] == SHOWN[:-1] and explored.propensities[:-1] == [1.0] * 4
        assert len(set(explored.items)) == len(SHOWN)
        assert (explored.explored_position is None) == (explored.items[-1] == SHOWN[-1])


def test_the_same_request_id_draws_the_same_list():
    lists = {tuple(explore_slot(SHOWN, POOL, EXPOSURE, 0.5, request_rng("same-id")).items) for _ in range(20)}
    assert len(lists) == 1


def test_less_exposed_items_are_drawn_more_often():
    weights = uncertainty(EXPOSURE)
    assert weights.tolist() == pytest.approx([1.0, 0.5, 0.1, 1 / 3])
    counts = Counter(explore_slot(SHOWN, POOL, EXPOSURE, 1.0, request_rng(f"r{seed}")).items[-1] for seed in range(3_000))
    assert counts[20] > counts[21] > counts[23] > counts[22] > 0


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_logged_propensity_matches_how_often_each_item_is_shown(strength):
    """Monte Carlo over request ids: every item's empirical frequency of being shown equals the
    propensity logged whenever it is shown (within 4 standard errors)."""
    n = 20_000
    shown_count: Counter[int] = Counter()
    logged: dict[int, set[float]] = {}
    for seed in range(n):
        explored = explore_slot(SHOWN, POOL, EXPOSURE, strength, request_rng(f"request-{seed}"))
        for item, propensity in zip(explored.items, explored.propensities):
            shown_count[item] += 1
            logged.setdefault(item, set()).add(propensity)
    for item in [*SHOWN, *POOL.tolist()]:
        values = logged.get(item, set())
        if not values:  # never shown: its propensity must be 0 (only the displaced item at strength 1)
            assert item == SHOWN[-1] and strength == 1.0
            continue
        assert len(values) == 1, f"item {item} logged with several propensities {values}"
        propensity = values.pop()
        frequency = shown_count[item] / n
        tolerance = 4 * np.sqrt(propensity * (1 - propensity) / n) + 1e-9
        assert abs(frequency - propensity) <= tolerance, (item, frequency, propensity)


def test_propensities_of_one_list_are_probabilities_of_the_slot():
    """At the last place, the ranker's item (1 - strength) and the pool's (strength · w/Σw) share
    probability 1: summed over every item that can stand there, the propensities make 1."""
    weights = uncertainty(EXPOSURE)
    strength = 0.25
    kept = explore_slot(SHOWN, POOL, EXPOSURE, strength, request_rng("x")).propensities[-1]
    drawn: dict[int, float] = {}
    for seed in range(2_000):
        explored = explore_slot(SHOWN, POOL, EXPOSURE, strength, request_rng(f"s{seed}"))
        if explored.explored_position is not None:
            drawn[explored.items[-1]] = explored.propensities[-1]
        else:
            kept = explored.propensities[-1]
    assert set(drawn) == set(POOL.tolist())
    assert kept == pytest.approx(1 - strength)
    assert kept + sum(drawn.values()) == pytest.approx(1.0)
    assert [drawn[i] for i in POOL.tolist()] == pytest.approx((strength * weights / weights.sum()).tolist())
