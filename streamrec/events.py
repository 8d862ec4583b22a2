"""The click event schema, shared by the producer, the streaming worker and `POST /events`.

One definition keeps the three in agreement: whatever `POST /events` accepts the worker applies,
and whatever the worker dead-letters the API would have refused.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
MAX_ITEM_ID = 2**53 - 1  # exact as a JSON/JavaScript number, so every client and validator agrees on it
EventType = Literal["click", "view", "add_to_cart", "purchase"]


def _integral_id(value: object) -> object:
    """JSON Schema's `integer` includes `5.0`, so the API's spec promises it: take it as 5. JSON
    `true` or `3.7` silently becoming an item id would corrupt features, so those are refused."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("item_id must be an integer")
    return int(value) if isinstance(value, float) else value


ItemId = Annotated[int, Field(ge=0, le=MAX_ITEM_ID, strict=True), BeforeValidator(_integral_id)]


class ClickEvent(BaseModel):
    """One interaction of a visitor's session with an item."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    session_id: str = Field(..., pattern=SESSION_ID_PATTERN, description="Session identifier.")
    item_id: ItemId = Field(..., description="Catalogue item id.")
    ts: float = Field(..., gt=0, allow_inf_nan=False, description="Event time, unix seconds (finite, > 0).")
    user_id: str | None = Field(None, max_length=128, description="Optional known user.")
    event_type: EventType = Field("click", description="Kind of interaction.")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class InvalidEvent(ValueError):
    """An event that cannot be applied; `reason` goes into the dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_event(raw: bytes, *, max_bytes: int, max_future_skew_s: float, now: float | None = None) -> ClickEvent:
    """Validate a raw Kafka value; raise InvalidEvent saying what is wrong."""
    if raw is None:
        raise InvalidEvent("empty message")
    if len(raw) > max_bytes:
        raise InvalidEvent(f"event of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        event = ClickEvent.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "event"
        raise InvalidEvent(f"{where}: {first.get('msg', 'invalid')}") from None
    now = time.time() if now is None else now
    if event.ts > now + max_future_skew_s:
        raise InvalidEvent(f"ts {event.ts:.15g} is more than {max_future_skew_s:.0f}s in the future")
    return event
