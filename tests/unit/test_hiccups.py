"""The soak's hiccup meter sees a stall of its own process (SIGSTOP stands in for the machine
stalling it) and nothing on an idle machine; the soak leaves out exactly the requests it delayed."""

from __future__ import annotations

import os
import signal
import time

from tests.faults.hiccups import Meter
from tests.faults.test_soak import excluded_spans, slow_windows, window_level, window_p99


def test_meter_records_a_stall_of_its_process() -> None:
    meter = Meter(seconds=20, threshold_ms=50)
    time.sleep(1.0)
    os.kill(meter.proc.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    time.sleep(0.3)
    os.kill(meter.proc.pid, signal.SIGCONT)
    time.sleep(0.3)
    stalls = meter.stop()
    assert len(stalls) == 1, stalls
    start, end = stalls[0]
    assert abs(start - stopped) < 0.05 and end - start >= 0.29, (stopped, stalls)


def test_requests_in_a_stall_and_its_drain_are_left_out() -> None:
    # one window of 60 s, one /recommend a second at 5 ms, but 500 ms at second 30: the stall
    # from 30.0 to 30.2 s leaves out 29.95 .. 30.45 s, i.e. the request of second 30 only
    results = [(float(t), "/recommend", 200, 500.0 if t == 30 else 5.0) for t in range(60)]
    spans = excluded_spans([(1030.0, 1030.2)], start=1000.0)
    raw, _ = window_p99(results, 1)
    kept, left_out = window_p99(results, 1, spans)
    assert raw[0] > 100 and kept[0] == 5.0
    assert abs(left_out[0] - 1 / 60) < 1e-9


def test_a_minute_is_slower_only_past_factor_and_slack() -> None:
    # CI's minute p99s of unchanged trees, read as levels: noise, not a slower minute
    assert slow_windows([13.9, 17.1, 10.3, 9.9, 9.3]) == []
    assert slow_windows([15.1, 13.5, 9.4, 22.9, 20.3]) == []
    assert slow_windows([19.7, 30.8, 37.4, 13.6, 14.2]) == []
    # a growing queue: over 2x and 10 ms past the median minute's 15 ms
    assert slow_windows([10, 12, 15, 24, 34]) == [4]
    # small levels: 2x alone would fail 11 ms against 5; the 10 ms slack does not
    assert slow_windows([5, 5, 5, 11, 5]) == []


def _minutes(ms_at: dict[int, float], minutes: int = 3, per_second: int = 200) -> list[tuple[float, str, int, float]]:
    """/recommend results: `per_second` a second at 5 ms, except seconds in `ms_at` (second -> ms)."""
    return [(sec + i / per_second, "/recommend", 200, ms_at.get(sec, 5.0))
            for sec in range(60 * minutes) for i in range(per_second)]


def test_one_stall_does_not_make_a_slower_minute_but_a_sustained_slowdown_does() -> None:
    # one second of 500 ms answers in minute 1 (CI's 529 ms stall): that minute's p99 jumps ...
    stall = _minutes({90: 500.0})
    assert window_p99(stall, 3)[0][1] > 100
    # ... its level does not, and no minute is slower
    assert window_level(stall, 3) == [5.0, 5.0, 5.0]
    assert slow_windows(window_level(stall, 3)) == []
    # minute 2 three times slower for 40 of its 60 seconds: a sustained slowdown is caught
    slower = _minutes({sec: 25.0 for sec in range(120, 160)})
    assert window_level(slower, 3) == [5.0, 5.0, 25.0]
    assert slow_windows(window_level(slower, 3)) == [2]
