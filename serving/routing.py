"""Which model version answers a request, and with what probability: the routing policies.

- `single`: the champion answers everything (propensity 1).
- `ab`: a fixed split between the champion and the arms (weights), sticky per session.
- `shadow`: the champion answers; the one arm also scores the request off the hot path, and its
  list is logged as a shadow impression (never shown).
- `bandit`: Thompson sampling over the versions' attributed reward (clicked impressions out of
  impressions, Beta(1, 1) prior), sticky per session.

Sticky and logged exactly: a session's position `u` in [0, 1) comes from a hash of its id, and
the policy's current arm probabilities cut [0, 1) into intervals, so a session keeps its arm
while the probabilities hold and every process routes it alike. For the bandit, those
probabilities are Thompson sampling's own: P(arm's reward rate is the highest) under the
posterior, integrated numerically with scipy.stats.beta rather than sampled, so the propensity
logged with each impression is the probability with which the policy picked that arm (what IPS
and SNIPS need). A floor keeps every arm explored (`BANDIT_FLOOR`) and the propensities away from
0, which would make off-policy estimates explode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mmh3
import numpy as np
from scipy import integrate, stats

from streamrec.arm_stats import ArmStats, read_arm_stats
from streamrec.model_registry import RoutingConfig

log = logging.getLogger(__name__)
BANDIT_FLOOR = 0.02  # least probability of any arm under the bandit
GRID_POINTS = 2001


@dataclass(frozen=True)
class Decision:
    version: str  # the version whose list is shown
    propensity: float  # probability with which the policy picked it for this request
    policy: str
    experiment: str
    shadow: str | None = None  # a challenger to score off the hot path (shadow policy)


def session_position(session_id: str) -> float:
    """The session's sticky point in [0, 1)."""
    return mmh3.hash(session_id, seed=0x5EED, signed=False) / 2**32


def thompson_probabilities(clicked: Sequence[int], impressions: Sequence[int], floor: float = BANDIT_FLOOR) -> np.ndarray:
    """P(arm a has the highest reward rate) under independent Beta(1 + clicked, 1 + not clicked)
    posteriors: the integral of pdf_a(x) * prod_b cdf_b(x), on a fine grid; then mixed with the
    uniform so each arm keeps at least `floor`."""
    k = len(clicked)
    if k == 1:
        return np.ones(1)
    a = 1.0 + np.asarray(clicked, dtype=float)
    b = 1.0 + np.asarray(impressions, dtype=float) - np.asarray(clicked, dtype=float)
    # The grid spans where any posterior has mass, so it stays fine when the counts are large.
    grid = np.linspace(stats.beta.ppf(1e-9, a, b).min(), stats.beta.ppf(1 - 1e-9, a, b).max(), GRID_POINTS)
    pdf = stats.beta.pdf(grid[None, :], a[:, None], b[:, None])
    cdf = stats.beta.cdf(grid[None, :], a[:, None], b[:, None])
    log_cdf = np.log(np.clip(cdf, 1e-300, None))
    others = np.exp(log_cdf.sum(axis=0, keepdims=True) - log_cdf)  # prod over b != a
    p = integrate.trapezoid(pdf * others, grid, axis=1)
    p = np.clip(p, 0.0, None)
    p = p / p.sum() if p.sum() > 0 else np.full(k, 1.0 / k)
    floor = min(floor, 1.0 / k)
    return floor + (1.0 - k * floor) * p


class Router:
    """One routing config, ready to decide; rebuilt when the config or the champion changes."""

    def __init__(self, champion: str, config: RoutingConfig) -> None:
        """`config` was validated by the registry (arms exist, shadow has one, ab weights fit)."""
        self.policy = config.policy
        self.experiment = config.experiment
        self.champion = champion
        self.arms = [champion] if config.policy == "single" else [champion, *config.arms]
        weights = config.weights if config.policy == "ab" and config.weights else [1.0] * len(self.arms)
        w = np.asarray(weights, dtype=float)
        self.probabilities = w / w.sum() if config.policy in ("ab", "bandit") else np.ones(1)
        self.stats: dict[str, ArmStats] = {}

    def update(self, stats: Mapping[str, ArmStats]) -> None:
        """The bandit's posterior from the worker's counters (other policies keep their split)."""
        self.stats = dict(stats)
        if self.policy != "bandit":
            return
        got = [self.stats.get(v, ArmStats(v)) for v in self.arms]
        self.probabilities = thompson_probabilities([s.clicked for s in got], [s.impressions for s in got])

    def share(self) -> dict[str, float]:
        """Each version's current probability of answering a new session."""
        if self.policy in ("single", "shadow"):
            return {self.champion: 1.0}
        return {v: float(p) for v, p in zip(self.arms, self.probabilities)}

    def choose(self, session_id: str) -> Decision:
        if self.policy == "single":
            return Decision(self.champion, 1.0, "single", self.experiment)
        if self.policy == "shadow":
            return Decision(self.champion, 1.0, "shadow", self.experiment, shadow=self.arms[1])
        u = session_position(session_id)
        edges = np.cumsum(self.probabilities)
        n = min(int(np.searchsorted(edges, u, side="right")), len(self.arms) - 1)
        return Decision(self.arms[n], float(self.probabilities[n]), self.policy, self.experiment)


class LiveRouting:
    """The router of the model pool's current state, with the arms' counters refreshed from Redis
    (the bandit's posterior; the other policies report them). Rebuilt when the pool swaps."""

    def __init__(self, client: Any, refresh_s: float) -> None:  # redis.asyncio.Redis
        self.client = client
        self.refresh_s = refresh_s
        self._router: Router | None = None
        self._state: object = None  # the pool state the router was built for

    def router(self, champion: str, config: RoutingConfig, state: object) -> Router:
        if state is not self._state or self._router is None:
            router = Router(champion, config)
            if self._router is not None:
                router.update(self._router.stats)
            self._router, self._state = router, state
        return self._router

    async def refresh(self) -> None:
        router = self._router
        if router is not None:
            router.update(await read_arm_stats(self.client, router.experiment, router.arms))

    async def run(self) -> None:
        """Every `refresh_s`; a Redis error keeps the last posterior (routing never fails a request)."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - Redis down: route on what we know
                log.debug("arm counters not refreshed: %s", exc)
