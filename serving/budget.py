"""Latency budget and circuit breaker: how a request stays on time when a step is slow or down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class StepTimings:
    """Wall time of each named step of one request, in milliseconds."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.steps: dict[str, float] = {}
        self._mark = self.started

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = round((now - self._mark) * 1000, 3)
        self._mark = now

    def skip(self) -> None:
        """Restart the lap clock without recording (time spent outside any named step)."""
        self._mark = time.perf_counter()

    def total(self) -> dict[str, float]:
        return {**self.steps, "total": round((time.perf_counter() - self.started) * 1000, 3)}


class Budget:
    """Deadline of one request; steps ask whether they still fit before they start."""

    def __init__(self, total_ms: float, reserve_ms: float) -> None:
        self.deadline = time.perf_counter() + total_ms / 1000
        self.reserve_s = reserve_ms / 1000

    def remaining_s(self) -> float:
        """Time left for optional steps: the reserve is kept for the fallback path."""
        return self.deadline - time.perf_counter() - self.reserve_s

    def fits(self, expected_s: float) -> bool:
        return self.remaining_s() > expected_s

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await within the remaining budget; raises asyncio.TimeoutError when it would be late."""
        remaining = self.remaining_s()
        if remaining <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise asyncio.TimeoutError
        return await asyncio.wait_for(awaitable, timeout=remaining)


class StepCost:
    """Exponentially weighted mean duration of a step, to predict whether it fits the budget."""

    def __init__(self, initial_s: float = 0.001, alpha: float = 0.05) -> None:
        self.mean_s = initial_s
        self.alpha = alpha

    def observe(self, seconds: float) -> None:
        self.mean_s += self.alpha * (seconds - self.mean_s)


class CircuitBreaker:
    """After `threshold` consecutive failures, skip the dependency for `open_s` instead of paying
    its timeout per request. One slow reply on a busy machine is not an outage: a single failure
    only degrades its own request."""

    def __init__(self, open_s: float = 1.0, threshold: int = 3) -> None:
        self.open_s = open_s
        self.threshold = threshold
        self.open_until = 0.0
        self.consecutive = 0
        self.last_error = ""

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def failure(self, error: BaseException | str) -> None:
        self.last_error = str(error) or type(error).__name__
        self.consecutive += 1
        if self.consecutive >= self.threshold:
            self.open_until = time.monotonic() + self.open_s

    def success(self) -> None:
        self.consecutive = 0
        self.open_until = 0.0
