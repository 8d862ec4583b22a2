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


def test_overload_is_reported_while_the_loop_runs_late_and_not_for_one_late_tick() -> None:
    async def scenario() -> tuple[str | None, str | None, str | None, str | None]:
        watch = LoopWatch(tick_s=0.01, stack_after_s=10, shed_after_s=0.02)
        never = LoopWatch(tick_s=0.01, stack_after_s=10)
        watch.start()
        never.start()
        await asyncio.sleep(0.1)
        quiet = watch.overload_reason()
        a_blocking_handler(0.06)  # one GC-pause-like stall: smoothed, it stays under 20 ms
        await asyncio.sleep(0.005)  # the late tick has run, the next one not yet
        one_stall = watch.overload_reason()
        for _ in range(15):  # a queue of work: every tick comes 40 ms late
            a_blocking_handler(0.04)
            await asyncio.sleep(0)
        busy, busy_never = watch.overload_reason(), never.overload_reason()
        await asyncio.sleep(0.5)  # the queue drains
        drained = watch.overload_reason()
        await watch.stop()
        await never.stop()
        return quiet, one_stall, (busy, busy_never), drained

    quiet, one_stall, (busy, busy_never), drained = asyncio.run(scenario())
    assert quiet is None and one_stall is None
    assert busy is not None and busy.startswith("event loop") and busy_never is None
    assert drained is None
