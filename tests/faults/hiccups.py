"""Hiccup meter (the jHiccup idea): a process that does nothing but sleep 1 ms at a time and records
every wake-up that came late by more than a threshold. A late wake-up of an idle process is a stall
of the machine (CPU steal, the scheduler, memory pressure), not of the service under test; the soak
uses these intervals to tell a platform stall from a service one. The loop is bounded by
`--seconds`; the intervals are printed as one JSON line of [start, end] on CLOCK_MONOTONIC (the
clock of `time.perf_counter` and `time.monotonic` in every process on Linux).

    python -m tests.faults.hiccups --seconds 400 --threshold-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time

TICK_S = 0.001


def measure(seconds: float, threshold_s: float, stalls: list[tuple[float, float]]) -> None:
    """Appends to `stalls` (start, end) of every wake-up late by more than `threshold_s`, for
    `seconds` (the list keeps what was seen when interrupted)."""
    deadline = time.monotonic() + seconds
    now = time.monotonic()
    while now < deadline:
        due = now + TICK_S
        time.sleep(TICK_S)
        now = time.monotonic()
        if now - due > threshold_s:
            stalls.append((due, now))


class Meter:
    """The meter as a child process; `stop()` ends it early and returns its intervals."""

    def __init__(self, seconds: float, threshold_ms: float = 50.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.hiccups", "--seconds", str(seconds),
             "--threshold-ms", str(threshold_ms)],
            stdout=subprocess.PIPE, text=True)

    def stop(self) -> list[tuple[float, float]]:
        self.proc.send_signal(2)  # SIGINT: print what was seen so far
        out, _ = self.proc.communicate(timeout=30)
        return [tuple(pair) for pair in json.loads(out.strip().splitlines()[-1])]


class LoopLag:
    """The same meter inside an asyncio loop (the load generator's): a stall of the load generator
    delays the requests it sends and reads, and is no more the service's than the machine's."""

    def __init__(self, threshold_s: float = 0.05) -> None:
        self.threshold_s = threshold_s
        self.stalls: list[tuple[float, float]] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + 0.005
            await asyncio.sleep(0.005)
            now = time.monotonic()
            if now - due > self.threshold_s:
                self.stalls.append((due, now))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threshold-ms", type=float, default=50.0)
    args = parser.parse_args()
    # A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored: restore
    # the handler that turns it into KeyboardInterrupt, or `Meter.stop()` waits for the whole run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stalls: list[tuple[float, float]] = []
    try:
        measure(args.seconds, args.threshold_ms / 1000, stalls)
    except KeyboardInterrupt:
        pass
    print(json.dumps(stalls), flush=True)


if __name__ == "__main__":
    main()
