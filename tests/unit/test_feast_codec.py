"""streamrec's Redis codec writes and reads exactly Feast's layout (checked against Feast's protos)."""

import random

import numpy as np
import pytest
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import FloatList, Int64List, Value
from google.protobuf.timestamp_pb2 import Timestamp

from streamrec import feature_schema as s
from streamrec import feast_codec as codec


@pytest.mark.parametrize("value", [0, 1, -1, 127, 128, 2**40, -(2**40), 2**63 - 1, -(2**63)])
def test_int64_matches_feast(value):
    expected = Value(int64_val=value).SerializeToString()
    assert codec.encode_value(s.INT64, value) == expected
    assert codec.decode_value(expected) == value


@pytest.mark.parametrize("values", [[], [0], [1, 300, -2, 2**50], list(range(200))])
def test_int64_list_matches_feast(values):
    expected = Value(int64_list_val=Int64List(val=values)).SerializeToString()
    assert codec.encode_value(s.INT64_LIST, values) == expected
    assert codec.decode_value(expected) == values


def test_float_list_matches_feast():
    vector = np.random.default_rng(0).normal(size=64).astype(np.float32)
    expected = Value(float_list_val=FloatList(val=vector.tolist())).SerializeToString()
    assert codec.encode_value(s.FLOAT_LIST, vector) == expected
    np.testing.assert_array_equal(codec.decode_value(expected), vector)


def test_null_value_reads_as_none():
    assert codec.decode_value(Value().SerializeToString()) is None
    assert codec.decode_value(None) is None


def test_entity_keys_match_feast():
    item = EntityKey(join_keys=[s.ITEM_KEY], entity_values=[Value(int64_val=42)])
    session = EntityKey(join_keys=[s.SESSION_KEY], entity_values=[Value(string_val="web-1:x")])
    assert codec.entity_key(s.VIEWS[s.ITEM_STATS_VIEW], 42) == _redis_key(s.PROJECT, item)
    assert codec.entity_key(s.VIEWS[s.SESSION_FEATURES_VIEW], "web-1:x") == _redis_key(s.PROJECT, session)


def test_field_names_match_feast():
    for spec in s.VIEWS.values():
        for feature in spec.features:
            assert codec.field_name(spec.name, feature) == _mmh3(f"{spec.name}:{feature}")


def test_timestamps_match_feast_microseconds():
    from datetime import datetime, timezone

    rng = random.Random(1)
    for _ in range(500):
        moment = datetime.fromtimestamp(rng.uniform(1e9, 2e9), tz=timezone.utc)
        proto = Timestamp()
        proto.FromDatetime(moment)
        assert codec.encode_timestamp(moment.timestamp()) == proto.SerializeToString()
        assert abs(codec.decode_timestamp(proto.SerializeToString()) - moment.timestamp()) < 1e-6


def test_decode_row_returns_old_rows_like_feast_and_none_when_missing():
    spec = s.VIEWS[s.SESSION_FEATURES_VIEW]
    row = codec.encode_row(spec, {s.RECENT_ITEMS: [1, 2], s.CLICK_COUNT: 2, s.LAST_EVENT_TS: 5}, event_ts=1000.0)
    raw = [row[f] for f in codec.read_fields(spec)]
    assert codec.decode_row(spec, raw) == {s.RECENT_ITEMS: [1, 2], s.CLICK_COUNT: 2, s.LAST_EVENT_TS: 5}
    assert codec.decode_row(spec, [None] * len(raw)) is None
