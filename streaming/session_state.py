"""Per-session streaming state and how one click changes it.

State is a JSON-able dict so it can live in a Faust table and its changelog. Each state
remembers the highest Kafka offset it has applied per source partition, which makes a
redelivered click (at-least-once after a crash or rebalance) a no-op instead of a double count.
It also remembers which record applied each of its last events, so the same event sent again
(a client or producer retry: a new record, same session, item, time and type) is skipped too.
"""

from __future__ import annotations

from typing import TypedDict

from typing_extensions import NotRequired  # typing's own from Python 3.11


class SessionState(TypedDict):
    recent: list[int]  # distinct items, oldest first, at most `max_recent`
    count: int  # clicks applied
    last_ts: int  # newest event time applied, unix ms
    applied: dict[str, int]  # source partition -> highest applied offset
    seen: NotRequired[dict[str, str]]  # identity of each of the last `max_recent` events -> "partition:offset"


def empty_session() -> SessionState:
    return {"recent": [], "count": 0, "last_ts": 0, "applied": {}}


def event_identity(item_id: int, ts: float, event_type: str) -> str:
    """What makes two records the same event of a session (the exact float time included)."""
    return f"{item_id}|{ts!r}|{event_type}"


def resent_copy(state: SessionState | None, identity: str, partition: int, offset: int) -> bool:
    """True if this event was already applied from another record: a re-send, to skip."""
    if state is None:
        return False
    where = state.get("seen", {}).get(identity)
    return where is not None and where != f"{partition}:{offset}"


def already_applied(state: SessionState, partition: int, offset: int) -> bool:
    return offset <= state["applied"].get(str(partition), -1)


def apply_click(
    state: SessionState | None, item_id: int, ts_ms: int, partition: int, offset: int, max_recent: int,
    identity: str | None = None,
) -> tuple[SessionState, bool]:
    """Return the state after the click and whether it changed anything (False on redelivery).

    With `identity` (see `event_identity`) the state remembers the record that applied it, for
    `resent_copy`; the caller checks that first."""
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
    if identity is not None or "seen" in current:
        seen = dict(current.get("seen", {}))
        if identity is not None:
            seen[identity] = f"{partition}:{offset}"
            while len(seen) > max_recent:  # oldest first (insertion order)
                del seen[next(iter(seen))]
        new["seen"] = seen
    return new, True
