"""POST /events' sink never holds a request longer than its send timeout, and after a few failures
in a row answers "unavailable" at once instead of paying the timeout per request."""

from __future__ import annotations

import asyncio

import pytest

from serving.event_sink import EventSink, KafkaUnavailable
from streamrec.events import ClickEvent
from infra.kafka import free_port
from streamrec.settings import Settings

EVENT = ClickEvent(session_id="s", item_id=1, ts=1.0)


async def test_no_broker_fails_within_the_timeout_then_fast(monkeypatch) -> None:
    # behaviour, not wall time: every wait is granted at most the send timeout, and once the
    # breaker opens the sink answers without trying the broker at all
    import serving.event_sink

    granted: list[float] = []
    wait_for = asyncio.wait_for

    def spy(awaitable, timeout):
        granted.append(timeout)
        return wait_for(awaitable, timeout)

    monkeypatch.setattr(serving.event_sink.asyncio, "wait_for", spy)
    sink = EventSink(Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}"), send_timeout_s=0.5)
    try:
        for _ in range(sink.breaker.threshold):
            with pytest.raises(KafkaUnavailable):
                await sink.send(EVENT)
        assert granted and all(0 < t <= 0.5 for t in granted), granted
        asked = len(granted)
        with pytest.raises(KafkaUnavailable, match="not tried again"):
            await sink.send(EVENT)
        assert len(granted) == asked  # no new attempt, so no timeout paid
    finally:
        await sink.close()
