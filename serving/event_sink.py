"""Accepted clicks → Kafka, from the API process (aiokafka: async, so no thread-pool hops).

The producer connects in the background and reconnects after broker outages; a request never
waits longer than `send_timeout_s` for its answer: the broker gets that bound less a margin for
the HTTP round trip (`ANSWER_MARGIN_S`), and if it cannot ack in time, the caller answers 503 with
Retry-After and the client keeps the event. After a few failures in a row a
circuit breaker answers 503 at once for a second, so an outage does not hold every request (and
its connection) for the whole timeout; the next request after that probes the broker again.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from serving.budget import CircuitBreaker
from streamrec.events import ClickEvent
from streamrec.settings import Settings

log = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 1.0
# Kept out of the broker's share of the send timeout: parsing, the 503 body and loopback, plus a
# late event-loop timer on a busy machine, so the client has its answer within `send_timeout_s`.
ANSWER_MARGIN_S = 0.1


class KafkaUnavailable(RuntimeError):
    """The broker did not accept the event in time."""


class EventSink:
    def __init__(self, settings: Settings, send_timeout_s: float = 2.0) -> None:
        self.settings = settings
        self.send_timeout_s = send_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task | None = None
        self.last_error = "not connected yet"
        self.breaker = CircuitBreaker(open_s=1.0, threshold=3)

    async def _start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            request_timeout_ms=int(self.send_timeout_s * 1000),
        )
        try:
            await producer.start()
        except Exception as exc:
            self.last_error = str(exc) or type(exc).__name__
            await producer.stop()
            raise
        self._producer = producer
        self.last_error = ""

    async def _ensure_started(self, timeout_s: float) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start())
        try:
            await asyncio.wait_for(asyncio.shield(self._starting), timeout=max(timeout_s, 0.001))
        except Exception as exc:  # noqa: BLE001
            raise KafkaUnavailable(f"Kafka at {self.settings.kafka_bootstrap} is unavailable: {self.last_error or exc}")
        assert self._producer is not None
        return self._producer

    async def send(self, event: ClickEvent) -> tuple[int, int]:
        """Send and wait for the broker's ack; returns (partition, offset). Connecting and the ack
        share one deadline (`send_timeout_s` less the answer's margin), so no request's answer
        comes later than `send_timeout_s`."""
        if self.breaker.is_open:
            raise KafkaUnavailable(f"Kafka at {self.settings.kafka_bootstrap} is unavailable "
                                   f"({self.breaker.last_error}); not tried again for up to {self.breaker.open_s:g}s")
        loop = asyncio.get_running_loop()
        broker_s = max(self.send_timeout_s - ANSWER_MARGIN_S, self.send_timeout_s / 2)
        deadline = loop.time() + broker_s
        try:
            producer = await self._ensure_started(broker_s)
        except KafkaUnavailable as exc:
            self.breaker.failure(exc)
            raise
        try:
            metadata = await asyncio.wait_for(
                producer.send_and_wait(self.settings.clicks_topic, value=event.to_bytes(),
                                       key=event.session_id.encode()),
                timeout=max(deadline - loop.time(), 0.001),
            )
        except Exception as exc:  # noqa: BLE001
            self.last_error = str(exc) or type(exc).__name__
            self.breaker.failure(self.last_error)
            raise KafkaUnavailable(f"Kafka did not acknowledge the event within {self.send_timeout_s:g}s: "
                                   f"{self.last_error}") from exc
        self.breaker.success()
        return metadata.partition, metadata.offset

    async def healthy(self) -> tuple[bool, str]:
        try:
            producer = await self._ensure_started(HEALTH_TIMEOUT_S)
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=HEALTH_TIMEOUT_S)
            return True, self.settings.kafka_bootstrap
        except Exception as exc:  # noqa: BLE001
            return False, str(exc) or type(exc).__name__

    async def close(self) -> None:
        if self._starting and not self._starting.done():
            self._starting.cancel()
        if self._producer is not None:
            await self._producer.stop()
