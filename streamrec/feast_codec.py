"""Byte-exact codec for Feast's Redis online-store layout (entity_key_serialization_version 3).

Feast keeps one Redis hash per entity: key = serialized entity key + project name; fields =
murmur3(view:feature) → serialized `feast.types.Value`, plus `_ts:<view>` → a protobuf Timestamp.
Encoding and decoding those few message shapes by hand lets the worker and the API use the
online store without `import feast` (~5 s) and decode embeddings straight into numpy. Tests
check every shape against Feast's own protobufs and its SDK reads.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import mmh3
import numpy as np

from streamrec import feature_schema as s

_VALUE_TYPE_STRING = 2  # feast ValueType.STRING
_VALUE_TYPE_INT64 = 4  # feast ValueType.INT64
_INT64_VAL = 4  # field numbers of feast.types.Value
_INT64_LIST_VAL = 14
_FLOAT_LIST_VAL = 16


# --- protobuf wire helpers --------------------------------------------------------------------

def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Item ids recur in every row that lists them (a session's recent items are encoded again on each of
# its clicks), so their varints are cached; timestamps and counts, nearly all distinct, are not.
_list_element_varint = lru_cache(maxsize=1 << 16)(_varint)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _tag(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


# --- keys and field names -----------------------------------------------------------------------

@lru_cache(maxsize=64)
def field_name(view: str, feature: str) -> bytes:
    """Redis hash field of one feature: murmur3_32 little-endian, as Feast's `_mmh3`."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


@lru_cache(maxsize=16)
def timestamp_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


@lru_cache(maxsize=16)
def _key_prefix(join_key: str) -> bytes:
    name = join_key.encode()
    return struct.pack("<I", 1) + struct.pack("<I", _VALUE_TYPE_STRING) + struct.pack("<I", len(name)) + name


def entity_key(spec: s.ViewSpec, value: int | str, project: str = s.PROJECT) -> bytes:
    """Redis key of one entity (single join key), identical to Feast's `_redis_key`."""
    if spec.key_kind == s.INT64:
        body = struct.pack("<I", _VALUE_TYPE_INT64) + struct.pack("<I", 8) + struct.pack("<q", int(value))
    else:
        raw = str(value).encode()
        body = struct.pack("<I", _VALUE_TYPE_STRING) + struct.pack("<I", len(raw)) + raw
    return _key_prefix(spec.join_key) + body + project.encode()


# --- values ------------------------------------------------------------------------------------

def encode_value(kind: str, value: object) -> bytes:
    """Serialize a python value as feast.types.Value of the given kind."""
    if value is None:
        return b""  # an empty Value message: Feast reads it as null
    if kind == s.INT64:
        return _tag(_INT64_VAL, 0) + _varint(int(value))  # type: ignore[call-overload]
    if kind == s.INT64_LIST:
        packed = b"".join([_list_element_varint(int(v)) for v in value])  # type: ignore[attr-defined]
        inner = _length_delimited(1, packed) if packed else b""
        return _length_delimited(_INT64_LIST_VAL, inner)
    if kind == s.FLOAT_LIST:
        floats = np.asarray(value, dtype="<f4").tobytes()
        inner = _length_delimited(1, floats) if floats else b""
        return _length_delimited(_FLOAT_LIST_VAL, inner)
    raise ValueError(f"unknown feature kind {kind!r}")


def _decode_int64_list(buf: bytes) -> list[int]:
    out: list[int] = []
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        if tag == (1 << 3) | 2:  # packed
            length, pos = _read_varint(buf, pos)
            stop = pos + length
            while pos < stop:
                v, pos = _read_varint(buf, pos)
                out.append(_signed64(v))
        elif tag == (1 << 3) | 0:
            v, pos = _read_varint(buf, pos)
            out.append(_signed64(v))
        else:
            raise ValueError("unexpected field in Int64List")
    return out


def _decode_float_list(buf: bytes) -> np.ndarray:
    if not buf:
        return np.zeros(0, dtype=np.float32)
    tag, pos = _read_varint(buf, 0)
    if tag == (1 << 3) | 2:
        length, pos = _read_varint(buf, pos)
        if pos + length == len(buf):
            return np.frombuffer(buf, dtype="<f4", count=length // 4, offset=pos).astype(np.float32)
    # unpacked or several chunks: rare; decode generically
    values: list[float] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        if tag == (1 << 3) | 5:
            values.append(struct.unpack_from("<f", buf, pos)[0])
            pos += 4
        elif tag == (1 << 3) | 2:
            length, pos = _read_varint(buf, pos)
            values.extend(np.frombuffer(buf, dtype="<f4", count=length // 4, offset=pos).tolist())
            pos += length
        else:
            raise ValueError("unexpected field in FloatList")
    return np.asarray(values, dtype=np.float32)


def decode_value(raw: bytes | None) -> object:
    """Parse a serialized feast.types.Value of the kinds streamrec uses; None when null/missing."""
    if not raw:
        return None
    tag, pos = _read_varint(raw, 0)
    field, wire_type = tag >> 3, tag & 7
    if field == _INT64_VAL and wire_type == 0:
        value, _ = _read_varint(raw, pos)
        return _signed64(value)
    if wire_type == 2:
        length, pos = _read_varint(raw, pos)
        payload = raw[pos:pos + length]
        if field == _INT64_LIST_VAL:
            return _decode_int64_list(payload)
        if field == _FLOAT_LIST_VAL:
            return _decode_float_list(payload)
    raise ValueError(f"unsupported feast Value field {field}")


def encode_timestamp(unix_seconds: float) -> bytes:
    """protobuf Timestamp at microsecond precision, as Feast's `Timestamp.FromDatetime`."""
    micros = int(round(unix_seconds * 1_000_000))
    seconds, nanos = micros // 1_000_000, (micros % 1_000_000) * 1000
    out = _tag(1, 0) + _varint(seconds) if seconds else b""
    if nanos:
        out += _tag(2, 0) + _varint(nanos)
    return out


def decode_timestamp(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    seconds = nanos = 0
    pos = 0
    while pos < len(raw):
        tag, pos = _read_varint(raw, pos)
        value, pos = _read_varint(raw, pos)
        if tag >> 3 == 1:
            seconds = _signed64(value)
        elif tag >> 3 == 2:
            nanos = value
    return seconds + nanos / 1e9


def encode_row(spec: s.ViewSpec, values: dict[str, object], event_ts: float) -> dict[bytes, bytes]:
    """Hash fields of one entity row of `spec`, as Feast's online_write_batch writes them."""
    row = {timestamp_field(spec.name): encode_timestamp(event_ts)}
    for feature, kind in spec.features.items():
        row[field_name(spec.name, feature)] = encode_value(kind, values.get(feature))
    return row


def read_fields(spec: s.ViewSpec, features: tuple[str, ...] | None = None) -> list[bytes]:
    """HMGET field list for a view: the features asked for, then the timestamp."""
    wanted = features or tuple(spec.features)
    return [field_name(spec.name, f) for f in wanted] + [timestamp_field(spec.name)]


def decode_row(
    spec: s.ViewSpec, raw: list[bytes | None], features: tuple[str, ...] | None = None
) -> dict[str, object] | None:
    """Values of one HMGET reply; None if the entity has no row for this view.

    Like Feast 0.67's `get_online_features` on Redis, no TTL filtering happens here: a row is
    returned with its values however old it is. Streaming session keys expire in Redis itself,
    and readers that care about age use the row's time features (e.g. `window_end_ts`).
    """
    wanted = features or tuple(spec.features)
    if raw[-1] is None and not any(raw[:-1]):
        return None
    return {f: decode_value(v) for f, v in zip(wanted, raw[:-1])}
