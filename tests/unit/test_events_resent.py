"""Re-sent events (same session, item, time and type; a new Kafka record) change nothing, and
dead letters keep the original bytes within Kafka's message size."""

import base64
import hashlib
import json

from streamrec import feature_schema as s
from streaming import session_state
from streaming.processor import DEAD_LETTER_MAX_VALUE_BYTES, RawRecord, SessionBatchProcessor, dead_letter_record
from streamrec.settings import Settings
from tests.unit.test_processor import FakeStore


def record(offset: int, item: int = 1, ts: float = 1000.5, session: str = "a", partition: int = 0) -> RawRecord:
    value = json.dumps({"session_id": session, "item_id": item, "ts": ts}).encode()
    return RawRecord(value, partition, offset, "clicks")


def make_processor():
    store, sessions, forwarded = FakeStore(), {}, []

    async def dead_letter(message):
        raise AssertionError("nothing here is invalid")

    async def forward(clicks):
        forwarded.extend(clicks)

    return SessionBatchProcessor(Settings(), store, sessions, dead_letter, forward), store, sessions, forwarded


async def test_a_resent_event_is_neither_applied_nor_forwarded():
    processor, store, _, forwarded = make_processor()
    assert await processor.process([record(0, item=1), record(1, item=2)]) == 2
    assert await processor.process([record(2, item=1), record(3, item=3)]) == 1  # offset 2 re-sends offset 0
    row = store.rows[(s.SESSION_FEATURES_VIEW, "a")]
    assert row[s.CLICK_COUNT] == 3 and row[s.RECENT_ITEMS] == [1, 2, 3]
    assert [(c.item_id, c.offset) for c in forwarded] == [(1, 0), (2, 1), (3, 3)]


async def test_a_redelivered_resend_is_still_not_forwarded_but_the_original_is():
    processor, _, _, forwarded = make_processor()
    await processor.process([record(0), record(1)])  # offset 1 is a re-send of offset 0
    forwarded.clear()
    assert await processor.process([record(0), record(1)]) == 0  # both redelivered after a crash
    assert [c.offset for c in forwarded] == [0]  # the item side dedupes offset 0 itself


def test_same_item_at_another_time_or_of_another_type_is_a_new_event():
    state, _ = session_state.apply_click(None, 1, 1000, 0, 0, 20, session_state.event_identity(1, 1.0, "click"))
    for identity in (session_state.event_identity(1, 1.001, "click"), session_state.event_identity(1, 1.0, "view")):
        assert not session_state.resent_copy(state, identity, 0, 1)
    assert session_state.resent_copy(state, session_state.event_identity(1, 1.0, "click"), 0, 1)
    assert not session_state.resent_copy(state, session_state.event_identity(1, 1.0, "click"), 0, 0)  # itself


def test_the_resend_window_is_the_last_recent_items_events():
    state = None
    for n in range(25):
        state, _ = session_state.apply_click(state, n, n, 0, n, 20, session_state.event_identity(n, float(n), "click"))
    assert len(state["seen"]) == 20
    assert not session_state.resent_copy(state, session_state.event_identity(0, 0.0, "click"), 0, 99)
    assert session_state.resent_copy(state, session_state.event_identity(24, 24.0, "click"), 0, 99)


def test_state_without_a_seen_list_still_applies():
    old = {"recent": [5], "count": 1, "last_ts": 1, "applied": {"0": 3}}
    assert not session_state.resent_copy(old, "5|1.0|click", 0, 4)
    new, changed = session_state.apply_click(old, 6, 2, 0, 4, 20, "6|2.0|click")
    assert changed and new["count"] == 2 and new["seen"] == {"6|2.0|click": "0:4"}


def test_a_dead_letter_keeps_small_values_whole():
    letter = json.loads(dead_letter_record(RawRecord(b"\xff\x00junk", 2, 9, "clicks"), "event: Invalid JSON"))
    assert base64.b64decode(letter["value_b64"]) == b"\xff\x00junk" and "truncated" not in letter
    assert (letter["partition"], letter["offset"], letter["reason"]) == (2, 9, "event: Invalid JSON")


def test_a_dead_letter_of_a_huge_value_stays_under_a_megabyte_and_says_what_it_cut():
    for raw in (bytes(range(256)) * 4000, b"\x01" * 1_000_000):  # base64'd / JSON-escaped 6x
        letter_bytes = dead_letter_record(RawRecord(raw, 0, 1, "clicks"), "too big")
        assert len(letter_bytes) < 1_000_000
        letter = json.loads(letter_bytes)
        kept = letter["value"].encode() if "value" in letter else base64.b64decode(letter["value_b64"])
        assert kept == raw[:DEAD_LETTER_MAX_VALUE_BYTES]
        assert letter["truncated"] and letter["original_bytes"] == len(raw)
        assert letter["original_sha256"] == hashlib.sha256(raw).hexdigest()
