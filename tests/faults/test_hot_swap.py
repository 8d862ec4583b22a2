"""Hot swap under load: mixed traffic (the soak's open-loop sender) at half the saturation rate on
the live API, while the champion is promoted and rolled back again and again. No request may fail,
and `/recommend`'s p99 in the segments with a swap must stay within 1.5x its p99 in the segments
without one (medians over the segments, below). The API loads each version in a thread, warms it
up and swaps it in with one assignment; the swaps are counted by the API itself
(streamrec_model_swaps_total), so a test that measured no swap fails.

The run is cut into 7.5 s segments, swapping ones (a change at the segment's start: the API's 2 s
poll sees it and loads the version within the segment) taking turns with steady ones, so both sets
see the same host. Two windows measured one after the other did not: the VM's minutes differ by up
to 1.9x with nothing stalled (the soak's figures), and CI once read 447 ms swapping against 111 ms
steady, a local run 240 ms steady against 18.5 ms swapping, on the same tree. What is judged is the
median of the six swapping segments' p99 against the median of the six steady ones': a swap that
costs, costs at every swap and lifts every swapping segment; one chance event (a 210 ms request,
no stall of the API's loop, the machine or the load generator seen) lifts one segment and, pooled,
decided two of seven local runs (p99 ratios 2.0 and 2.1; the others printed 0.99 to 1.12).

Stalls outside the API are measured and left out, as in the soak (`test_soak.py`): the hiccup meter
(a process that wakes every millisecond) and the load generator's loop meter record them, and the
requests scheduled from just before such a stall to as long again after it are not judged. A run
with more than 2% of either set's requests inside such stalls is measured again (at most three
runs); the load generator's heap is frozen first (its full GC passes stalled it ~200 ms in the
soak). A stall of the API itself (a version loaded while holding the GIL) is seen by neither meter
and counts in full."""

from __future__ import annotations

import asyncio
import gc
import time

import httpx
import numpy as np
import pytest

from serving.ops import parse, total
from streamrec.artifacts import load_current
from streamrec.model_registry import ModelRegistry
from streamrec.settings import Settings
from tests.faults.hiccups import LoopLag, Meter
from tests.faults.test_soak import (MAX_LEFT_OUT, Traffic, excluded_spans, open_loop, recommend_latencies,
                                    saturation_rate, window_p99)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(900)]

WARMUP_S = 10.0
SEGMENT_S = 7.5  # > the API's 2 s poll plus a load: each change is seen and loaded within its segment
SEGMENTS = 12  # steady and swapping in turn: six changes (promote, rollback, ...) end on the champion
P99_FACTOR = 1.5
MAX_RUNS = 3  # measured again while the machine stalls too much to judge


def swaps_counted(api: str) -> float:
    return total(parse(httpx.get(f"{api}/metrics", timeout=5).text), "streamrec_model_swaps_total") or 0.0


@pytest.fixture()
def challenger(live_settings: Settings) -> str:
    """A second complete version beside the champion: one already there, else a small one trained now
    (the session model's knobs, another seed, not promoted)."""
    ready = [v.version for v in ModelRegistry(live_settings.models_dir).versions() if v.status == "candidate"]
    if ready:
        return ready[-1]
    from training.pipeline import train

    return train(live_settings, None, progress=False, promote=False, n_sessions=4000, n_items=800, n_topics=20,
                 seed=11).version


def swapping(t: float) -> bool:
    """Whether the request scheduled at `t` (s since the run's start) falls in a swapping segment."""
    return int(t // SEGMENT_S) % 2 == 1


class Run:
    """One measured run: every request's result, and the `/recommend` latencies of the steady and
    the swapping segments once the requests delayed by stalls outside the API are set aside."""

    def __init__(self, results: list, stalls: list[tuple[float, float]], start: float) -> None:
        self.results = results
        self.stalls = stalls
        spans = excluded_spans(stalls, start)
        kept = recommend_latencies(results, spans)
        self.kept = {phase: [ms for t, ms in kept if swapping(t) == phase] for phase in (False, True)}
        self.segment_p99, _ = window_p99(results, SEGMENTS, spans, window_s=SEGMENT_S)
        every = {phase: [ms for t, ms in recommend_latencies(results) if swapping(t) == phase]
                 for phase in (False, True)}
        self.left_out = max(1 - len(self.kept[phase]) / len(every[phase]) for phase in every)
        self.raw = {phase: float(np.percentile(every[phase], 99)) for phase in every}

    def p99(self, swapped: bool) -> float:
        """The pooled p99 of the steady or the swapping segments (printed)."""
        return float(np.percentile(self.kept[swapped], 99))

    def level(self, swapped: bool) -> float:
        """The median of the steady or the swapping segments' p99s (judged)."""
        return float(np.median(self.segment_p99[int(swapped)::2]))


async def measure(api: str, traffic: Traffic, rate: float, swapper) -> Run:
    """`SEGMENTS` segments of open-loop traffic at `rate` while `swapper()` changes the champion."""
    meter, lag = Meter(SEGMENTS * SEGMENT_S + 60), LoopLag()
    (start, results), _ = await asyncio.gather(open_loop(api, traffic, rate, SEGMENTS * SEGMENT_S, lag=lag),
                                               swapper())
    return Run(results, meter.stop() + lag.stalls, start)


def test_promote_and_rollback_under_load_fail_nothing_and_keep_p99(
        live_settings: Settings, worker: int, api: str, challenger: str) -> None:
    registry = ModelRegistry(live_settings.models_dir)
    champion = registry.champion()
    traffic = Traffic(api, load_current(live_settings.models_dir).item_ids)
    saturation = asyncio.run(saturation_rate(api, traffic))
    rate = saturation / 2
    asyncio.run(open_loop(api, traffic, rate, WARMUP_S))
    gc.collect()
    gc.freeze()

    swaps_before = swaps_counted(api)
    changes: list[str] = []

    async def swapper() -> None:
        started = time.perf_counter()
        for segment in range(1, SEGMENTS, 2):
            await asyncio.sleep(max(0.0, started + segment * SEGMENT_S - time.perf_counter()))
            if registry.champion() == champion:
                registry.promote(challenger)
                changes.append("promote")
            else:
                registry.rollback()
                changes.append("rollback")

    runs: list[Run] = []
    try:
        while len(runs) < MAX_RUNS:
            runs.append(asyncio.run(measure(api, traffic, rate, swapper)))
            if runs[-1].left_out <= MAX_LEFT_OUT:
                break
    finally:
        if registry.champion() != champion:
            registry.rollback()
    time.sleep(3 * live_settings.model_poll_s)
    swaps = swaps_counted(api) - swaps_before

    errors = [(t, path, status) for run in runs for t, path, status, _ in run.results
              if status != (202 if path == "/events" else 200)]
    run = runs[-1]
    steady, swap = run.level(False), run.level(True)
    worst = max(ms for t, *_, ms in run.results if swapping(t))
    print(f"\nFIGURES case=9 hot_swap injected='{len(changes)} champion changes in {len(runs)} run(s) "
          f"({', '.join(changes[:SEGMENTS // 2])}), one every other {SEGMENT_S:g}s segment, under mixed traffic at "
          f"{rate:.0f} req/s (half of {saturation:.0f})' requests={sum(len(r.results) for r in runs)} "
          f"errors={len(errors)} swaps_seen_by_api={swaps:.0f} "
          f"steady_level_ms={steady:.1f} swapping_level_ms={swap:.1f} ratio={swap / steady:.2f} (bound {P99_FACTOR:g}) "
          f"segment_p99_ms={[round(p, 1) for p in run.segment_p99]} "
          f"pooled_p99_ms={run.p99(False):.1f}/{run.p99(True):.1f} raw_p99_ms={run.raw[False]:.1f}/{run.raw[True]:.1f} "
          f"left_out={run.left_out:.2%} "
          f"stalls_outside_api={len(run.stalls)} swapping_worst_ms={worst:.1f}")
    for n, earlier in enumerate(runs[:-1]):
        print(f"run {n} not judged: {earlier.left_out:.2%} left out, raw p99 {earlier.raw[False]:.1f}/"
              f"{earlier.raw[True]:.1f} ms, stalls {[round(e - s, 3) for s, e in earlier.stalls]}")
    assert not errors, errors[:10]
    assert swaps >= len(changes) >= SEGMENTS // 2, f"the API swapped {swaps:.0f} times for {len(changes)} changes"
    assert registry.champion() == champion
    assert run.left_out <= MAX_LEFT_OUT, f"the machine or the load generator stalled too long to judge {MAX_RUNS} runs"
    assert swap <= P99_FACTOR * steady, \
        f"p99 {swap:.1f} ms in the median swapping segment vs {steady:.1f} in the median steady one"
