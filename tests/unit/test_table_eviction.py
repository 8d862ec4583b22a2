"""The worker's session table forgets idle sessions: memory stays bounded, recovery forgets them too."""

from __future__ import annotations

import asyncio

from streaming.app import KeyPartitionedTable


class FakeTopic:
    def get_topic_name(self) -> str:
        return "changelog"

    def prepare_key(self, key, serializer):  # noqa: ANN001
        return key, None

    def prepare_value(self, value, serializer):  # noqa: ANN001
        return str(value).encode(), None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []

    async def send(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001
        self.sent.append((key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class FakeApp:
    def __init__(self) -> None:
        self.producer = FakeProducer()


def table_with(monkeypatch) -> KeyPartitionedTable:
    """A KeyPartitionedTable's own methods on plain stand-ins for Faust's app, store and topic."""
    table = object.__new__(KeyPartitionedTable)
    store: dict[bytes, object] = {}
    for name, value in {"data": store, "app": FakeApp(), "changelog_topic": FakeTopic(),
                        "key_serializer": None, "value_serializer": None, "partitions": 4}.items():
        monkeypatch.setattr(KeyPartitionedTable, name, value, raising=False)
    return table


async def test_idle_keys_are_dropped_with_a_tombstone_and_active_ones_kept(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("streaming.app.time.monotonic", lambda: clock[0])
    table = table_with(monkeypatch)
    await table.put_many({b"old": 1, b"busy": 2})
    clock[0] += 50
    await table.put_many({b"busy": 3})
    table.data[b"recovered"] = 4  # loaded from the changelog: never written here
    clock[0] += 20  # old: idle 70 s, busy: 20 s, recovered: first seen now
    assert await table.evict_idle(60) == 1
    assert set(table.data) == {b"busy", b"recovered"}
    assert table.app.producer.sent[-1] == (b"old", None)  # the tombstone
    clock[0] += 61
    assert await table.evict_idle(60) == 2 and not table.data and not table.written_at
