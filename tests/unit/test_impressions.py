"""The inference log's record: round trip and refusal of malformed records."""

from __future__ import annotations

import json

import pytest

from streamrec.impressions import Impression, InvalidImpression, new_request_id


def impression(**changes) -> Impression:
    base = dict(request_id=new_request_id(), session_id="s-1", ts=1_700_000_000.25, model_version="v1",
                policy="ab", propensity=0.5, stage="stream", degraded=False, items=(7, 3, 2**53 - 1),
                scores=(0.9, 0.5, 0.1))
    return Impression(**{**base, **changes})


def test_round_trip_keeps_every_field() -> None:
    original = impression(shadow=True)
    assert Impression.from_bytes(original.to_bytes()) == original


def test_item_propensities_round_trip_aligned_with_items() -> None:
    original = impression(item_propensities=(1.0, 1.0, 0.0125))
    assert json.loads(original.to_bytes())["item_propensities"] == [1.0, 1.0, 0.0125]
    assert Impression.from_bytes(original.to_bytes()) == original
    assert original.shown_propensities() == (1.0, 1.0, 0.0125)


def test_a_record_without_item_propensities_showed_a_deterministic_list() -> None:
    # records logged before exploration existed, fallbacks and exploration off: no key at all
    data = json.loads(impression().to_bytes())
    assert "item_propensities" not in data
    parsed = Impression.from_bytes(json.dumps(data).encode())
    assert parsed.item_propensities == () and parsed.shown_propensities() == (1.0, 1.0, 1.0)


def test_request_ids_are_unique() -> None:
    assert len({new_request_id() for _ in range(1000)}) == 1000


@pytest.mark.parametrize("change, message", [
    ({"propensity": 0.0}, "propensity"),
    ({"propensity": 1.5}, "propensity"),
    ({"policy": "greedy"}, "unknown policy"),
    ({"items": [1, -2]}, "item id"),
    ({"items": [1, True]}, "item id"),
    ({"ts": "soon"}, "ts must be a finite number"),
    ({"session_id": ""}, "session_id"),
    ({"item_propensities": [1.0, 0.5]}, "2 item propensities for 3 items"),
    ({"item_propensities": [1.0, 1.0, 0.0]}, "item propensity 0.0 is not a number in"),
    ({"item_propensities": [1.0, 1.0, "1"]}, "item propensity"),
])
def test_malformed_records_are_refused_with_the_reason(change: dict, message: str) -> None:
    data = {**json.loads(impression().to_bytes()), **change}
    with pytest.raises(InvalidImpression, match=message):
        Impression.from_bytes(json.dumps(data).encode())


@pytest.mark.parametrize("raw", [None, b"", b"{", b"[1, 2]", b'{"request_id": "x"}'])
def test_garbage_is_refused(raw: bytes | None) -> None:
    with pytest.raises(InvalidImpression):
        Impression.from_bytes(raw)
