"""Per-arm online counters: impressions, clicked impressions and reciprocal ranks of the clicks.

The worker's reward attribution (`streaming.attribution`) is their only writer, one Redis hash per
experiment and model version, and it appends each counted reward to the reward log (a Redis stream); the API reads them for the bandit's posterior and the operations view, and
`streamrec report online` for the live figures. One impression is "clicked" when a click of its
session within the attribution window picked an item it showed (counted once, at its first such
click); CTR = clicked / impressions, MRR = rr_sum / clicked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ARM_KEY_PREFIX = "streamrec:arm:"  # + experiment + ":" + model version -> hash of the counters below
FIELDS = ("impressions", "clicked", "rr_sum", "shadow_impressions", "shadow_clicked", "shadow_rr_sum")
REWARD_LOG = "streamrec:rewards"  # Redis stream: one entry per counted reward (`streamrec report online`)
REWARD_LOG_MAX = 1_000_000  # entries kept (approximately: XADD MAXLEN ~)


def arm_key(experiment: str, version: str) -> str:
    """Counters are per experiment (a routing config): a new experiment's arms start at zero."""
    return f"{ARM_KEY_PREFIX}{experiment}:{version}"


@dataclass(frozen=True)
class ArmStats:
    version: str
    impressions: int = 0  # served (shown) answers
    clicked: int = 0  # of those, answers followed by a click on a shown item
    rr_sum: float = 0.0  # sum of 1/rank of those clicks
    shadow_impressions: int = 0  # lists scored as a shadow challenger (not shown)
    shadow_clicked: int = 0  # of those, lists that held the item the visitor then clicked
    shadow_rr_sum: float = 0.0

    @property
    def ctr(self) -> float | None:
        return self.clicked / self.impressions if self.impressions else None

    @property
    def mrr(self) -> float | None:
        return self.rr_sum / self.clicked if self.clicked else None

    @property
    def shadow_ctr(self) -> float | None:
        return self.shadow_clicked / self.shadow_impressions if self.shadow_impressions else None

    @classmethod
    def from_hash(cls, version: str, values: dict) -> "ArmStats":
        """From HGETALL's reply (bytes or str keys and values; absent fields are 0)."""
        plain = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in values.items()}
        return cls(version, int(plain.get("impressions", 0)), int(plain.get("clicked", 0)), plain.get("rr_sum", 0.0),
                   int(plain.get("shadow_impressions", 0)), int(plain.get("shadow_clicked", 0)),
                   plain.get("shadow_rr_sum", 0.0))

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, "impressions": self.impressions, "clicked": self.clicked,
                "ctr": self.ctr, "mrr": self.mrr, "shadow_impressions": self.shadow_impressions,
                "shadow_clicked": self.shadow_clicked, "shadow_ctr": self.shadow_ctr}


async def read_arm_stats(client, experiment: str, versions: Sequence[str]) -> dict[str, ArmStats]:  # noqa: ANN001
    """The counters of `versions` in `experiment`, in one round trip (client: redis.asyncio.Redis)."""
    async with client.pipeline(transaction=False) as pipe:
        for version in versions:
            pipe.hgetall(arm_key(experiment, version))
        replies = await pipe.execute()
    return {v: ArmStats.from_hash(v, reply or {}) for v, reply in zip(versions, replies)}


def ctr_interval(clicked: int, shown: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of a CTR (clicked out of shown), as (low, high); None when nothing was shown.
    The one definition the online report and the operations view share."""
    if shown <= 0:
        return None
    from scipy.stats import binomtest  # ~0.3 s to import: only where an interval is asked for

    ci = binomtest(int(clicked), int(shown)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
