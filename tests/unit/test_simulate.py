"""The simulation's bookkeeping: rewards per policy and arm, the bandit's share of the better arm."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.simulate import Phase, Visit, summarize


def visits(spec: list[list[tuple[str, bool]]]) -> list[Visit]:
    return [Visit(steps) for steps in spec]


def test_summary_counts_rewards_traffic_and_the_better_arm() -> None:
    ab = Phase("ab", "e-ab", visits([[("s", True), ("s", True)], [("w", False), ("w", True)], [("w", False)]]),
               3.0, {"s": 2, "w": 1}, {"s": 2, "w": 3})
    bandit = Phase("bandit", "e-b", visits([[("w", False)]] + [[("s", True)]] * 9), 2.0, {"s": 9, "w": 0}, {"s": 9, "w": 1})
    best = Phase("best", "e-best", visits([[("s", True), ("s", False)]] * 5), 1.0, {"s": 5}, {"s": 10})
    out = summarize({"bandit": bandit, "ab": ab, "best": best}, "s", "w", Path("data/x"), 10)
    assert out["better_arm"] == "s"  # 2/2 against 1/3 in the A/B run
    assert (out["rewards_simulated"], out["rewards_attributed"]) == (3 + 9 + 5, 3 + 9 + 5)
    assert out["policies"]["ab"]["measured_ctr"] == {"s": 1.0, "w": pytest.approx(1 / 3)}
    assert out["policies"]["ab"]["traffic"] == {"s": 2, "w": 3}
    assert out["policies"]["bandit"]["better_arm_share_first_2000"] == 0.9
    assert out["policies"]["bandit"]["weak_arm_sessions_first_200"] == 1
    assert out["policies"]["bandit"]["reward_vs_best"] == pytest.approx(9 / 5)
    assert out["policies"]["best"]["reward_rate"] == 0.5
