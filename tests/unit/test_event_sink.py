"""POST /events' sink never holds a request longer than its send timeout, and after a few failures
in a row answers "unavailable" at once instead of paying the timeout per request."""

from __future__ import annotations

import time

import pytest

from serving.event_sink import EventSink, KafkaUnavailable
from streamrec.events import ClickEvent
from infra.kafka import free_port
from streamrec.settings import Settings

EVENT = ClickEvent(session_id="s", item_id=1, ts=1.0)


async def test_no_broker_fails_within_the_timeout_then_fast() -> None:
    sink = EventSink(Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}"), send_timeout_s=0.5)
    try:
        for _ in range(sink.breaker.threshold):
            started = time.perf_counter()
            with pytest.raises(KafkaUnavailable):
                await sink.send(EVENT)
            assert time.perf_counter() - started < 0.5 + 0.3
        started = time.perf_counter()
        with pytest.raises(KafkaUnavailable, match="not tried again"):
            await sink.send(EVENT)
        assert time.perf_counter() - started < 0.05
    finally:
        await sink.close()
