"""The fetch loop delivers directly only when Faust's delivery could not block."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import faust
import pytest

from streaming import fast_delivery


class Flag:
    def __init__(self, value: bool = False) -> None:
        self.value = value

    def is_set(self) -> bool:
        return self.value

    def locked(self) -> bool:
        return self.value


def fake_app(queue_full: bool = False):
    queue = SimpleNamespace(full=lambda: queue_full)
    flow = SimpleNamespace(active=True)
    app = SimpleNamespace(
        topics=SimpleNamespace(_tp_to_callback_lock=Flag(), _tp_index={"tp": [SimpleNamespace(queue=queue)]}),
        flow_control=SimpleNamespace(is_active=lambda: flow.active),
        producer=SimpleNamespace(buffer=SimpleNamespace(size=0, max_messages=100)),
    )
    return app, flow, SimpleNamespace(suspend_flow=Flag())


def test_direct_delivery_when_nothing_can_block() -> None:
    app, _, consumer = fake_app()
    check = fast_delivery.delivery_cannot_block(app, consumer)
    assert check("tp")
    assert check("a partition without channels")


@pytest.mark.parametrize("blocker", ["suspend_flow", "flow_control", "lock", "producer_buffer", "full_queue"])
def test_faust_race_whenever_the_delivery_could_wait(blocker: str) -> None:
    app, flow, consumer = fake_app(queue_full=blocker == "full_queue")
    check = fast_delivery.delivery_cannot_block(app, consumer)
    if blocker == "suspend_flow":
        consumer.suspend_flow.value = True  # a rebalance began
    elif blocker == "flow_control":
        flow.active = False
    elif blocker == "lock":
        app.topics._tp_to_callback_lock.value = True  # subscriptions being updated
    elif blocker == "producer_buffer":
        app.producer.buffer.size = 101
    assert not check("tp")


def test_an_untested_faust_keeps_its_own_loop(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    consumer = SimpleNamespace(_drain_messages="faust's")
    monkeypatch.setattr(faust, "__version__", "0.99.0")
    with caplog.at_level(logging.WARNING):
        assert not fast_delivery.install(consumer)
    assert consumer._drain_messages == "faust's" and "keeping Faust's own fetch loop" in caplog.text


def test_the_installed_faust_gets_the_loop() -> None:
    consumer = SimpleNamespace(_drain_messages="faust's")
    assert fast_delivery.install(consumer)
    assert asyncio.iscoroutinefunction(consumer._drain_messages)
