"""Event-loop stall watch for the API process: how late the loop runs a 10 ms timer (a histogram,
`streamrec_api_loop_lag_seconds`), and, when it stops beating for longer than `stack_after_s`, the
stack of the code holding it, logged once per stall. A stalled loop delays every request in
flight at once; the request log shows the symptom on many requests, this names the cause.

A daemon thread reads the loop thread's frame (`sys._current_frames`, a documented CPython API);
it needs the GIL to do so, so a C call that holds the GIL for the whole stall is named when it
returns (the log then says how long it was late), which still points at the right code.

The same lag, smoothed, is the API's overload signal: a loop that runs its timers late runs every
request's next step late too, so requests are queueing. `overload_reason()` says so once the
smoothed lag passes `shed_after_s`, and /recommend then answers from the in-memory fallbacks
(cheap, no I/O) until the queue drains: an overloaded API degrades its answers instead of making
every visitor wait. Queueing delay as the overload signal is CoDel's idea; for event loops it is
how `toobusy` guards Node services.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from contextlib import suppress

from serving.metrics import LOOP_LAG

log = logging.getLogger(__name__)
TICK_S = 0.01
STACK_AFTER_S = 0.1
STACK_FRAMES = 15
STALL_MESSAGE = "event loop stalled"  # how each stall's log record begins (the soak finds them by it)
LAG_SMOOTHING = 0.2  # weight of the newest tick: a single late tick (one GC pause) is not an overload


class LoopWatch:
    """Start inside the running loop (`start()`), stop with `await stop()`; `stalls` keeps the last
    few (seconds late when seen, stack) for tests and diagnosis."""

    def __init__(self, tick_s: float = TICK_S, stack_after_s: float = STACK_AFTER_S,
                 shed_after_s: float = 0.0) -> None:
        """`shed_after_s`: smoothed lag over which `overload_reason()` reports overload (0: never)."""
        self.tick_s = tick_s
        self.stack_after_s = stack_after_s
        self.shed_after_s = shed_after_s
        self.lag_s = 0.0  # smoothed lateness of the timer
        self.stalls: list[tuple[float, str]] = []
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._done = threading.Event()
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._tick())
        self._thread = threading.Thread(target=self._watch, name="loop-watch", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._done.set()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._thread is not None:
            self._thread.join(timeout=1)

    async def _tick(self) -> None:
        while True:
            due = time.monotonic() + self.tick_s
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            late = max(0.0, now - due)
            LOOP_LAG.observe(late)
            self.lag_s += LAG_SMOOTHING * (late - self.lag_s)
            self._beat = now

    def overload_reason(self) -> str | None:
        """Why requests should be answered cheaply now, or None when the loop keeps time."""
        if self.shed_after_s and self.lag_s > self.shed_after_s:
            return f"event loop {self.lag_s * 1000:.0f} ms late (shedding over {self.shed_after_s * 1000:.0f} ms)"
        return None

    def _watch(self) -> None:
        reported = 0.0  # the beat whose stall was already logged
        while not self._done.wait(self.tick_s):
            beat = self._beat
            late = time.monotonic() - beat
            if late <= self.stack_after_s or beat == reported:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            stack = "".join(traceback.format_stack(frame)[-STACK_FRAMES:])
            del frame
            reported = beat
            self.stalls = [*self.stalls[-9:], (late, stack)]
            log.warning(STALL_MESSAGE + ": no timer ran for %.0f ms; the loop thread is in:\n%s", late * 1000, stack)
