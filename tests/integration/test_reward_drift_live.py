"""Reward drift on the live stack: visitors browse through the real API (answers logged to Kafka,
clicks through POST /events), the worker attributes their rewards in Redis, and the learner's own
drift monitor (`training.learn.DriftMonitor` reading `ArmRewards`, river's ADWIN) reads the
champion's counters as `streamrec learn` does at each check. While the visitors click what they are
shown as often as before, the reward statistic stays quiet; once they stop clicking what they are
shown (the same visitors clicking items the model has never seen), it fires, with the mean after
the change below the mean before. The unit tests (`test_drift.py`) measure the detector's false
alarms and delays on made-up rewards; this one checks the path from a click to the detector."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from candidates.bundle import ModelBundle
from evaluation.simulate import replay, wait_for_attribution
from streamrec.artifacts import load_current
from streamrec.model_registry import ModelRegistry
from streamrec.settings import Settings
from training.learn import ArmRewards, DriftMonitor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

VISITORS, STEPS, CONCURRENCY = 400, 5, 8  # 2,000 answers a phase
UNSEEN = 10**9  # item ids far above the catalogue's: never shown, so never a reward


def browse(settings: Settings, api: str, sessions: list[list[int]], experiment: str, version: str) -> tuple[int, int]:
    """The visitors browse; returns (rewarded steps, steps) once the worker has counted every answer."""
    clicked, shown = asyncio.run(wait_for_attribution(settings, experiment, [version], 0, 0))  # as they are now
    visits = asyncio.run(replay(api, sessions, f"rd-{uuid.uuid4().hex[:6]}", k=20, concurrency=CONCURRENCY,
                                max_session_items=settings.max_session_items, timeout_s=240))
    rewarded = sum(hit for v in visits for _, hit in v.steps)
    steps = sum(len(v.steps) for v in visits)
    asyncio.run(wait_for_attribution(settings, experiment, [version], clicked[version] + rewarded, 120,
                                     impressions=shown[version] + steps))
    return rewarded, steps


def test_the_learners_reward_statistic_fires_when_visitors_stop_clicking_what_they_are_shown(
        live_settings: Settings, api: str, worker: int) -> None:
    registry = ModelRegistry(live_settings.models_dir)
    version, experiment = registry.champion(), registry.routing().experiment
    popular = load_current(live_settings.models_dir).popular[:60].tolist()
    rng = random.Random(3)
    clicking = [[rng.sample(popular, STEPS + 1) for _ in range(VISITORS)] for _ in range(2)]
    ignoring = [[UNSEEN + rng.randrange(10**6) for _ in range(STEPS + 1)] for _ in range(VISITORS)]

    monitor = DriftMonitor(ArmRewards(live_settings))
    champion = ModelBundle.load_current(live_settings.models_dir)
    monitor(None, champion)  # the learner's first check: counters read, nothing fed yet
    phases = []
    for name, sessions in (("clicking", clicking[0]), ("clicking again", clicking[1]), ("ignoring", ignoring)):
        rewarded, steps = browse(live_settings, api, sessions, experiment, version)
        statistic = monitor(None, champion).get("reward_drift")
        phases.append((name, rewarded, steps, statistic))
        print(f"reward drift, {name}: {rewarded} rewards in {steps} answers, statistic {statistic}")

    (_, hits_a, steps_a, first), (_, hits_b, steps_b, second), (_, hits_c, steps_c, third) = phases
    assert hits_a / steps_a > 0.05 and hits_b / steps_b > 0.05, "too few rewards for a drop to mean anything"
    assert hits_c == 0
    assert first is not None and not first.fired and not second.fired
    assert third.fired, third
    assert monitor.reward_drift is not None and monitor.reward_drift.drop is not None
    before, after, _ = monitor.reward_drift.drop
    assert after < before
