"""Item exploration in the ranking step: an exploration slot whose per-item propensities are exact.

The ranker shows what it knows; items with few exposures stay unknown because they are never shown.
The slot gives them a chance at a bounded, known cost: with probability `strength` the LAST of the
shown places goes to an item drawn from the candidates the ranker left out (retrieved for this
session, not shown, not excluded), each with weight 1 / sqrt(1 + exposure) — the width of a count's
confidence interval, so the less an item was seen, the likelier it is drawn. Otherwise the list is
the ranker's, untouched.

Why a slot and not a score bonus: the policy is stochastic with a closed form, so every shown item's
propensity (the probability that this policy shows it in this list, given the ranker's order) is exact
and costs O(pool): 1 for the first k-1 items, 1 - strength for the ranker's k-th item, and
strength · w_j / Σw for the explored item j. That is what inverse-propensity estimates of the
inference log need. It also bounds the offline cost: a list only changes at its last place, so
HR@k falls by at most strength × (share of cases whose next item the ranker put exactly at rank k).

Per request the draws come from a numpy Generator seeded by the request id (`request_rng`): an
answer can be replayed, and tests can count frequencies over seeds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Exploration:
    """The shown list after the slot, with each shown item's propensity (aligned with `items`)."""

    items: list[int]
    propensities: list[float]
    explored_position: int | None = None  # 0-based place of the explored item; None: the ranker's list


def request_rng(request_id: str) -> np.random.Generator:
    """The request's own generator: the same id draws the same slot (replays, tests)."""
    seed = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "little")
    return np.random.Generator(np.random.SFC64(seed))  # half the set-up time of default_rng's PCG64


def uncertainty(exposure: np.ndarray) -> np.ndarray:
    """Weight of an item in the draw: 1 / sqrt(1 + exposure), 1 for an item never seen."""
    return 1.0 / np.sqrt(1.0 + np.maximum(np.asarray(exposure, dtype=np.float64), 0.0))


def explore_slot(shown: Sequence[int], pool: np.ndarray, exposure: np.ndarray, strength: float,
                 rng: np.random.Generator | None) -> Exploration:
    """`shown`: the ranker's list, best first; `pool`: candidate ids that may take the last place
    (none of them shown or excluded); `exposure`: what is known of each pool item's exposure."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"exploration strength {strength} is not in [0, 1]")
    items = [int(item) for item in shown]
    if strength == 0.0 or not items or len(pool) == 0 or rng is None:
        return Exploration(items, [1.0] * len(items))  # deterministic: the ranker's list, no draw
    propensities = [1.0] * len(items)
    if rng.random() >= strength:
        propensities[-1] = 1.0 - strength  # the ranker's last item is shown unless the slot explores
        return Exploration(items, propensities)
    weights = uncertainty(exposure)
    cumulative = np.cumsum(weights)
    drawn = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    drawn = min(drawn, len(pool) - 1)  # rounding at the top end of the last interval
    items[-1] = int(pool[drawn])
    propensities[-1] = strength * float(weights[drawn] / cumulative[-1])
    return Exploration(items, propensities, len(items) - 1)

