"""Routing policies: who answers, sticky per session, with the propensity the policy really used."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from serving.routing import BANDIT_FLOOR, Router, session_position, thompson_probabilities
from streamrec.arm_stats import ArmStats
from streamrec.model_registry import RoutingConfig

SESSIONS = [f"session-{n}" for n in range(20000)]


def test_single_sends_everything_to_the_champion_with_propensity_one() -> None:
    decisions = {Router("v1", RoutingConfig("single")).choose(s) for s in SESSIONS[:100]}
    assert {(d.version, d.propensity, d.shadow) for d in decisions} == {("v1", 1.0, None)}


def test_ab_splits_by_the_weights_and_logs_them_as_propensities() -> None:
    router = Router("v1", RoutingConfig("ab", ("v2",), (0.25, 0.75)))
    decisions = [router.choose(s) for s in SESSIONS]
    share = Counter(d.version for d in decisions)
    assert share["v1"] / len(SESSIONS) == pytest.approx(0.25, abs=0.015)
    assert {d.version: d.propensity for d in decisions} == {"v1": 0.25, "v2": 0.75}


def test_a_session_keeps_its_arm() -> None:
    router = Router("v1", RoutingConfig("ab", ("v2", "v3")))
    first = {s: router.choose(s).version for s in SESSIONS[:500]}
    assert all(router.choose(s).version == v for s, v in first.items())
    assert len(set(first.values())) == 3


def test_session_positions_are_uniform() -> None:
    positions = np.array([session_position(s) for s in SESSIONS])
    assert positions.min() >= 0 and positions.max() < 1
    assert np.histogram(positions, bins=10, range=(0, 1))[0].min() > 0.09 * len(SESSIONS)


def test_shadow_serves_the_champion_and_names_the_challenger() -> None:
    decision = Router("v1", RoutingConfig("shadow", ("v2",))).choose("s")
    assert (decision.version, decision.propensity, decision.shadow) == ("v1", 1.0, "v2")


def test_thompson_probabilities_are_the_posterior_probability_of_being_best() -> None:
    clicked, shown = np.array([30, 22, 5]), np.array([100, 100, 40])
    rng = np.random.default_rng(1)
    draws = rng.beta(1 + clicked[:, None], 1 + shown[:, None] - clicked[:, None], size=(3, 200_000))
    monte_carlo = np.bincount(draws.argmax(axis=0), minlength=3) / draws.shape[1]
    assert thompson_probabilities(clicked, shown, floor=0) == pytest.approx(monte_carlo, abs=0.005)


def test_thompson_probabilities_stay_exact_with_large_counts() -> None:
    # posteriors far narrower than a grid over [0, 1] could resolve
    p = thompson_probabilities([30_100, 30_000], [100_000, 100_000], floor=0)
    rng = np.random.default_rng(2)
    a = rng.beta(30_101, 69_901, 400_000)
    b = rng.beta(30_001, 70_001, 400_000)
    assert p[0] == pytest.approx((a > b).mean(), abs=0.005)


def test_the_floor_keeps_a_hopeless_arm_explored() -> None:
    p = thompson_probabilities([500, 10], [1000, 1000])
    assert p[1] == pytest.approx(BANDIT_FLOOR)
    assert p.sum() == pytest.approx(1.0)


def test_bandit_moves_traffic_to_the_arm_with_more_reward_and_logs_that_probability() -> None:
    router = Router("v1", RoutingConfig("bandit", ("v2",)))
    assert router.share() == {"v1": 0.5, "v2": 0.5}
    router.update({"v1": ArmStats("v1", impressions=400, clicked=40), "v2": ArmStats("v2", impressions=400, clicked=80)})
    share = router.share()
    assert share["v2"] > 0.95
    decisions = [router.choose(s) for s in SESSIONS]
    assert Counter(d.version for d in decisions)["v2"] / len(SESSIONS) == pytest.approx(share["v2"], abs=0.01)
    assert {d.version: d.propensity for d in decisions} == pytest.approx(share)
