"""The inference log never makes an answer wait or fail: bounded buffer, drops counted."""

from __future__ import annotations

import asyncio


from serving import metrics
from serving.impression_log import ImpressionLog, session_partition
from streamrec.impressions import Impression
from streamrec.settings import Settings


def impression(n: int) -> Impression:
    return Impression(f"r{n}", f"s{n % 7}", 1.0 + n, "v1", "single", 1.0, "stream", False, (1, 2), (0.5, 0.2))


def dropped(reason: str) -> float:
    return metrics.IMPRESSIONS_DROPPED.labels(reason)._value.get()


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.capacity = capacity

    def append(self, *, key: bytes, value: bytes, timestamp: float | None) -> object | None:
        if len(self.records) == self.capacity:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    """Takes batches once `open` is set; `fail` makes every send raise (a broker gone)."""

    def __init__(self, open_: asyncio.Event, fail: bool = False, batch_capacity: int = 4) -> None:
        self.open, self.fail, self.sent = open_, fail, []
        self.batch_capacity = batch_capacity

    async def start(self) -> None:
        if not self.open.is_set():
            raise ConnectionError("no broker")

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int):  # noqa: ANN201
        if self.fail:
            raise TimeoutError("accumulator full")
        for key, value in batch.records:
            assert session_partition(key, 3) == partition  # keyed like the clicks
            self.sent.append((topic, key, Impression.from_bytes(value)))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_records_reach_the_topic_keyed_by_session_in_order() -> None:
    producer = FakeProducer(asyncio.Event())
    producer.open.set()
    log = ImpressionLog(Settings(impression_buffer=100, impressions_topic="imp-t"), lambda: producer)
    log.start()
    for n in range(50):
        log.log(impression(n))
    for _ in range(100):
        await asyncio.sleep(0.001)
        if len(producer.sent) == 50 and log.buffered == 0:
            break
    await log.close()
    # every record once, keyed by session, each session's records in order (batches go per partition)
    assert sorted((i.request_id for _, _, i in producer.sent), key=lambda r: int(r[1:])) == [f"r{n}" for n in range(50)]
    assert all(t == "imp-t" and k == i.session_id.encode() for t, k, i in producer.sent)
    for session in {i.session_id for _, _, i in producer.sent}:
        mine = [int(i.request_id[1:]) for _, _, i in producer.sent if i.session_id == session]
        assert mine == sorted(mine)


async def test_while_kafka_is_unreachable_the_buffer_is_bounded_and_overflow_counted(monkeypatch) -> None:
    monkeypatch.setattr("serving.impression_log.RECONNECT_S", 0.001)
    producer = FakeProducer(asyncio.Event())
    log = ImpressionLog(Settings(impression_buffer=10), lambda: producer)
    log.start()
    before = dropped("buffer_full")
    for n in range(25):
        log.log(impression(n))  # returns at once: no await, nothing raised
    assert log.buffered == 10
    assert dropped("buffer_full") - before == 15
    producer.open.set()  # the broker is back: what was kept goes out
    for _ in range(200):
        await asyncio.sleep(0.005)
        if len(producer.sent) == 10:
            break
    assert sorted(int(i.request_id[1:]) for _, _, i in producer.sent) == list(range(10))
    await log.close()


async def test_a_send_the_broker_refuses_is_dropped_and_counted() -> None:
    producer = FakeProducer(asyncio.Event(), fail=True)
    producer.open.set()
    log = ImpressionLog(Settings(impression_buffer=100), lambda: producer)
    log.start()
    before = dropped("kafka")
    for n in range(5):
        log.log(impression(n))
    for _ in range(100):
        await asyncio.sleep(0.001)
        if log.buffered == 0:
            break
    await log.close()
    assert dropped("kafka") - before == 5
