"""Validation of raw click events: what is accepted, and the reason given for what is not."""

import json

import pytest

from streamrec.events import MAX_ITEM_ID, InvalidEvent, parse_event

NOW = 1_800_000_000.0


def parse(raw: bytes):
    return parse_event(raw, max_bytes=4096, max_future_skew_s=3600, now=NOW)


def body(**fields) -> bytes:
    return json.dumps({"session_id": "s1", "item_id": 7, "ts": NOW, **fields}).encode()


def reason(raw: bytes) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse(raw)
    return caught.value.reason


@pytest.mark.parametrize("ts", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_timestamps_are_refused_as_such(ts):
    raw = body(ts="@").replace(b'"@"', ts)
    assert reason(raw) == "ts: Input should be a finite number"


@pytest.mark.parametrize("ts", [0, -1, -1e308])
def test_zero_and_negative_timestamps_are_refused(ts):
    assert reason(body(ts=ts)) == "ts: Input should be greater than 0"


@pytest.mark.parametrize("ts", [NOW + 3601, 1e300, NOW * 1000])
def test_far_future_timestamps_are_refused_with_a_readable_reason(ts):
    message = reason(body(ts=ts))
    assert message.endswith("is more than 3600s in the future") and len(message) < 80


def test_old_timestamps_are_accepted():
    assert parse(body(ts=1.0)).ts == 1.0


@pytest.mark.parametrize("item_id", [MAX_ITEM_ID + 1, 2**63, 10**40, -1])
def test_out_of_range_item_ids_are_refused(item_id):
    assert reason(body(item_id=item_id)).startswith("item_id:")


def test_an_item_unknown_to_the_model_is_a_valid_click():
    assert parse(body(item_id=MAX_ITEM_ID)).item_id == MAX_ITEM_ID


@pytest.mark.parametrize("raw", [b"[1, 2]", b"null", b'"click"', b"42", b"true"])
def test_json_that_is_not_an_object_is_refused(raw):
    assert reason(raw) == "event: Input should be an object"


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe\x00", body() + b" trailing"])
def test_invalid_json_is_refused(raw):
    assert reason(raw).startswith("event: Invalid JSON")


def test_oversized_events_are_refused_before_parsing():
    assert "exceeds the limit of 4096" in reason(body(user_id="u" * 5000))


def test_a_missing_value_is_refused():
    assert reason(None) == "empty message"


def test_a_valid_event_parses():
    event = parse(body(event_type="purchase", user_id="u1"))
    assert (event.session_id, event.item_id, event.ts, event.event_type) == ("s1", 7, NOW, "purchase")
