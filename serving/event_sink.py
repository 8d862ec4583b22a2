"""Accepted clicks → Kafka, from the API process (aiokafka: async, so no thread-pool hops).

The producer connects in the background and reconnects after broker outages; a request never
waits longer than `send_timeout_s` for the broker: if it cannot be acked in time, the caller
answers 503 with Retry-After and the client keeps the event.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from streamrec.events import ClickEvent
from streamrec.settings import Settings

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The broker did not accept the event in time."""


class EventSink:
    def __init__(self, settings: Settings, send_timeout_s: float = 2.0) -> None:
        self.settings = settings
        self.send_timeout_s = send_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task | None = None
        self.last_error = "not connected yet"

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

    async def _ensure_started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start())
        try:
            await asyncio.wait_for(asyncio.shield(self._starting), timeout=self.send_timeout_s)
        except Exception as exc:  # noqa: BLE001
            raise KafkaUnavailable(f"Kafka at {self.settings.kafka_bootstrap} is unavailable: {self.last_error or exc}")
        assert self._producer is not None
        return self._producer

    async def send(self, event: ClickEvent) -> tuple[int, int]:
        """Send and wait for the broker's ack; returns (partition, offset)."""
        producer = await self._ensure_started()
        try:
            metadata = await asyncio.wait_for(
                producer.send_and_wait(self.settings.clicks_topic, value=event.to_bytes(),
                                       key=event.session_id.encode()),
                timeout=self.send_timeout_s,
            )
        except Exception as exc:  # noqa: BLE001
            self.last_error = str(exc) or type(exc).__name__
            raise KafkaUnavailable(f"Kafka did not acknowledge the event: {self.last_error}") from exc
        return metadata.partition, metadata.offset

    async def healthy(self) -> tuple[bool, str]:
        try:
            producer = await self._ensure_started()
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=1.0)
            return True, self.settings.kafka_bootstrap
        except Exception as exc:  # noqa: BLE001
            return False, str(exc) or type(exc).__name__

    async def close(self) -> None:
        if self._starting and not self._starting.done():
            self._starting.cancel()
        if self._producer is not None:
            await self._producer.stop()
