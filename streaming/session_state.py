"""Per-session streaming state and how one click changes it.

State is a JSON-able dict so it can live in a Faust table and its changelog. Each state
remembers the highest Kafka offset it has applied per source partition, which makes a
redelivered click (at-least-once after a crash or rebalance) a no-op instead of a double count.
"""

from __future__ import annotations

from typing import TypedDict


class SessionState(TypedDict):
    recent: list[int]  # distinct items, oldest first, at most `max_recent`
    count: int  # clicks applied
    last_ts: int  # newest event time applied, unix ms
    applied: dict[str, int]  # source partition -> highest applied offset


def empty_session() -> SessionState:
    return {"recent": [], "count": 0, "last_ts": 0, "applied": {}}


def already_applied(state: SessionState, partition: int, offset: int) -> bool:
    return offset <= state["applied"].get(str(partition), -1)


def apply_click(
    state: SessionState | None, item_id: int, ts_ms: int, partition: int, offset: int, max_recent: int
) -> tuple[SessionState, bool]:
    """Return the state after the click and whether it changed anything (False on redelivery)."""
    current = state if state is not None else empty_session()
    if already_applied(current, partition, offset):
        return current, False
    recent = [i for i in current["recent"] if i != item_id]
    recent.append(item_id)
    applied = dict(current["applied"])
    applied[str(partition)] = offset
    new: SessionState = {
        "recent": recent[-max_recent:],
        "count": current["count"] + 1,
        "last_ts": max(current["last_ts"], ts_ms),
        "applied": applied,
    }
    return new, True
