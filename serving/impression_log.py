"""The inference log: every `/recommend` answer → one record in the `impressions` topic.

The request path only appends to a bounded buffer (no I/O, no serialisation); a background task
serialises and hands records to an aiokafka producer, which batches them. Nothing here may make
an answer late or failed: when Kafka is slow or down the buffer fills and newer records are
dropped and counted (`streamrec_impressions_dropped_total`), and the producer reconnects by
itself. Records are keyed by session, like the clicks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiokafka import AIOKafkaProducer

from serving import metrics
from streamrec.impressions import Impression
from streamrec.settings import Settings

log = logging.getLogger(__name__)
RECONNECT_S = 1.0  # between attempts to reach the broker


class ImpressionLog:
    def __init__(self, settings: Settings, producer_factory=None) -> None:  # noqa: ANN001 - for tests
        self.settings = settings
        self.capacity = settings.impression_buffer
        self._buffer: deque[Impression] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._producer: AIOKafkaProducer | None = None
        self._factory = producer_factory or self._new_producer

    def log(self, impression: Impression) -> None:
        """On the request path: O(1), never blocks, never raises for Kafka's sake."""
        if len(self._buffer) >= self.capacity:
            metrics.IMPRESSIONS_DROPPED.labels("buffer_full").inc()
            return
        self._buffer.append(impression)
        self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="impression-log")

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5, request_timeout_ms=5000)

    async def _connect(self) -> AIOKafkaProducer:
        attempts = 0
        while True:
            producer = self._factory()
            try:
                await producer.start()
                return producer
            except Exception as exc:  # noqa: BLE001 - any failure to connect: try again later
                (log.warning if attempts == 0 else log.debug)(
                    "impression log: Kafka unavailable (%s); impressions are dropped until it answers", exc)
                attempts += 1
                await producer.stop()
                await asyncio.sleep(RECONNECT_S)

    async def _run(self) -> None:
        self._producer = await self._connect()
        topic = self.settings.impressions_topic
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                impression = self._buffer.popleft()
                try:
                    sent = await self._producer.send(topic, value=impression.to_bytes(),
                                                     key=impression.session_id.encode())
                except Exception as exc:  # noqa: BLE001 - the accumulator is full or the broker is gone
                    metrics.IMPRESSIONS_DROPPED.labels("kafka").inc()
                    log.debug("impression dropped: %s", exc)
                    continue
                sent.add_done_callback(_count_delivery)

    async def close(self) -> None:
        """Flush what Kafka can take in a few seconds, then stop."""
        if self._task is not None:
            deadline = asyncio.get_running_loop().time() + 5
            while self._buffer and asyncio.get_running_loop().time() < deadline and self._producer is not None:
                await asyncio.sleep(0.01)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), timeout=5)
            except Exception:  # noqa: BLE001 - shutting down: what is lost is counted below
                pass
        if self._buffer:
            metrics.IMPRESSIONS_DROPPED.labels("shutdown").inc(len(self._buffer))
            self._buffer.clear()


def _count_delivery(sent: asyncio.Future) -> None:
    if sent.cancelled() or sent.exception() is not None:
        metrics.IMPRESSIONS_DROPPED.labels("kafka").inc()
    else:
        metrics.IMPRESSIONS_LOGGED.inc()
