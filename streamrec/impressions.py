"""The inference log's record: what one `/recommend` answer showed, which model version chose it and
with what probability the routing policy picked that version.

The API writes one per answer to the `impressions` topic (keyed by session, like the clicks), plus
one per shadow challenger's list (`shadow=True`: logged, never shown). The worker joins clicks to
them (rewards, `streaming.attribution`), and `streamrec report online` evaluates any policy from
them afterwards, which is why the propensity is logged with every record. When the exploration slot
(`candidates.exploration`) may change a list, the record also carries each shown item's own
propensity (`item_propensities`, aligned with `items`); a record without them (older ones, fallbacks,
exploration off) showed a deterministic list: every item's propensity is 1.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass

from streamrec.events import MAX_ITEM_ID

POLICIES = ("single", "ab", "shadow", "bandit")
DEFAULT_EXPERIMENT = "default"  # the experiment of the routing that was never set (single, champion only)


class InvalidImpression(ValueError):
    """A record of the impressions topic that cannot be used; the message says why."""


def new_request_id() -> str:
    """The id of one `/recommend` answer: in the response and in its impression records."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Impression:
    request_id: str
    session_id: str
    ts: float  # unix seconds, the API's clock when it answered
    model_version: str  # the arm: the version whose list this is
    policy: str  # the routing policy in force (POLICIES)
    propensity: float  # probability with which the policy picked this version for this request
    stage: str
    degraded: bool
    items: tuple[int, ...]  # in shown order: rank = position + 1
    scores: tuple[float, ...]
    shadow: bool = False  # a challenger's list, scored for the log only
    experiment: str = DEFAULT_EXPERIMENT  # the routing config in force: its arms' counters start at zero
    item_propensities: tuple[float, ...] = ()  # per shown item, given the arm; () = all 1 (no exploration)

    def shown_propensities(self) -> tuple[float, ...]:
        """Each shown item's probability of being in this list, given the arm (1 when not logged)."""
        return self.item_propensities or (1.0,) * len(self.items)

    def to_bytes(self) -> bytes:
        return json.dumps({
            "request_id": self.request_id, "session_id": self.session_id, "ts": self.ts,
            "model_version": self.model_version, "policy": self.policy, "propensity": self.propensity,
            "stage": self.stage, "degraded": self.degraded, "items": list(self.items),
            "scores": list(self.scores), "shadow": self.shadow,
            "experiment": self.experiment,
            **({"item_propensities": list(self.item_propensities)} if self.item_propensities else {}),
        }, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "Impression":
        """Parse and validate one record; InvalidImpression says what is wrong."""
        if not raw:
            raise InvalidImpression("empty message")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidImpression(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidImpression("not a JSON object")
        try:
            impression = cls(
                request_id=_text(data, "request_id"), session_id=_text(data, "session_id"),
                ts=_number(data, "ts"), model_version=_text(data, "model_version"), policy=_text(data, "policy"),
                propensity=_number(data, "propensity"), stage=_text(data, "stage"),
                degraded=bool(data.get("degraded", False)), items=tuple(_item(v) for v in data["items"]),
                scores=tuple(float(v) for v in data.get("scores", ())), shadow=bool(data.get("shadow", False)),
                experiment=_text(data, "experiment") if "experiment" in data else DEFAULT_EXPERIMENT,
                item_propensities=tuple(_probability(v, "item propensity") for v in data.get("item_propensities", ())),
            )
        except KeyError as missing:
            raise InvalidImpression(f"missing field {missing}") from None
        except (TypeError, ValueError) as exc:
            raise InvalidImpression(str(exc)) from None
        if impression.policy not in POLICIES:
            raise InvalidImpression(f"unknown policy {impression.policy!r}")
        if not 0 < impression.propensity <= 1:
            raise InvalidImpression(f"propensity {impression.propensity} is not in (0, 1]")
        if impression.item_propensities and len(impression.item_propensities) != len(impression.items):
            raise InvalidImpression(f"{len(impression.item_propensities)} item propensities for "
                                    f"{len(impression.items)} items")
        return impression


def _text(data: dict, name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(f"{name} must be a non-empty string of at most 256 characters")
    return value


def _number(data: dict, name: str) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)


def _probability(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{what} {value!r} is not a number in (0, 1]")
    return float(value)


def _item(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ITEM_ID:
        raise ValueError(f"item id {value!r} is not an integer in [0, {MAX_ITEM_ID}]")
    return value
