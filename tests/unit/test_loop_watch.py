"""The API's loop watch: a callback that blocks the event loop shows in the lag histogram and its
stack (naming the blocking function) is kept and logged once per stall."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from serving.loop_watch import LoopWatch


def _lag_count(over_s: float) -> float:
    """Observations of streamrec_api_loop_lag_seconds above `over_s` (a bucket bound)."""
    total = REGISTRY.get_sample_value("streamrec_api_loop_lag_seconds_count") or 0.0
    under = REGISTRY.get_sample_value("streamrec_api_loop_lag_seconds_bucket", {"le": str(over_s)}) or 0.0
    return total - under


def a_blocking_handler(seconds: float) -> None:
    time.sleep(seconds)  # stands in for CPU-bound or blocking code run on the loop


def test_a_blocked_loop_is_measured_and_its_stack_names_the_blocking_code() -> None:
    async def scenario() -> LoopWatch:
        watch = LoopWatch(tick_s=0.01, stack_after_s=0.1)
        watch.start()
        await asyncio.sleep(0.1)
        quiet = list(watch.stalls)
        a_blocking_handler(0.3)
        await asyncio.sleep(0.1)
        await watch.stop()
        assert quiet == []
        return watch

    over_before = _lag_count(0.25)
    watch = asyncio.run(scenario())
    assert len(watch.stalls) == 1, watch.stalls  # once per stall, not once per watch tick
    late, stack = watch.stalls[0]
    assert 0.1 < late < 0.3
    assert "a_blocking_handler" in stack
    assert _lag_count(0.25) - over_before == 1
