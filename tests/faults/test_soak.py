"""Soak: mixed `POST /events` and `POST /recommend` traffic against the real API and worker (real
Kafka and Redis) at half the measured saturation rate, 10 minutes by default. No errors; no slower
minute: each minute's level (the median of its seconds' `/recommend` p99) at most the larger of 2x
the median minute's and 10 ms over it; the memory of
the API and of the worker within 10% of the median minute's (a leak or a slow climb shows as early
minutes below and late ones above). A minute's own p99 is printed but not judged against the
others: at ~300 requests a second, one stall of half a second lifts it alone to ~50 ms, and that
says nothing about the service getting slower over time; the stall itself is named instead (the
API's loop watch logs the stack that held its event loop, its GC pauses and Redis' latency monitor
are printed).

`STREAMREC_SOAK_S` sets the length (at least four minutes): `make soak` runs the full 600 s, CI
runs 300 s (five minutes). The windows are a minute long whatever the length: a shorter window's
p99 rests on too few requests (CI once ran five 24 s windows, and one of them read 42 ms against a
27 ms median: a few stalls of tens of ms on this 2-core machine, not a degradation over time).

Stalls outside the service are measured, not guessed, and left out of the p99 (both p99s are
printed): a hiccup meter process (`tests/faults/hiccups.py`, the jHiccup idea: an idle process
that wakes every millisecond) records when the machine stalled, and the load generator meters its
own event loop. One such stall of half a second delays a few hundred requests (every request is
timed from its scheduled send) and alone lifts a minute's p99 by half: CI failed once with minute
p99s [15.1, 13.5, 9.4, 22.9, 20.3] ms, worst 570 ms, on the same tree that had passed the run
before. Requests scheduled from just before such a stall to as long again after it are left out;
a window with more than 2% of its requests left out is too noisy to judge and is not compared
(its figures are printed), so the exclusion cannot hide a service that is slow for long; at least
four windows must be judged, or the test fails (CI runs five: a minute of the host's CPU steal,
27% in one CI run, then costs a window, not the run). A stall of the API or the worker alone is
not seen by the meters and counts in full. `STREAMREC_SOAK_DUMP=path` writes every `/recommend`
latency, the stalls and each process's CPU every 0.5 s to a JSON file for diagnosis.

Why a 30 s session idle window: the worker's session state is bounded by the sessions of one idle
window (`STREAMREC_SESSION_IDLE_S`, 1800 s by default), so its memory is flat only once eviction
runs. With 30 s, the warm-up (two idle windows) fills the state to its level and eviction (every
7.5 s) then goes on through the whole measured run; the test checks it did (sessions evicted
during the run > 0), so flat memory means "state bounded by eviction", not "too short to grow".
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from collections.abc import Iterator

import aiohttp
import httpx
import numpy as np
import psutil
import pytest
import redis as redis_lib

from streamrec.artifacts import load_current
from infra import process
from serving.loop_watch import STALL_MESSAGE
from serving.ops import Buckets, parse, total
from streamrec.settings import Settings
from tests.conftest import CLI
from tests.faults.conftest import worker_metrics
from tests.faults.hiccups import LoopLag, Meter

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(1200)]

SOAK_S = float(os.environ.get("STREAMREC_SOAK_S", "600"))
IDLE_S = 30  # STREAMREC_SESSION_IDLE_S of the soak's worker: eviction goes on in the run
WARMUP_S = 2.0 * IDLE_S  # past one idle window: the worker's session state has reached its level
SATURATION_S = 15.0
SATURATION_CONCURRENCY = 16
WINDOW_S = 60.0  # the README's "every minute"
MIN_WINDOWS = 4  # judged ones: fewer fails the run
MEMORY_TOLERANCE = 0.10  # each window's memory within 10% of the median window's
P99_FACTOR = 2.0  # a window is slower only if its level is over 2x the median window's ...
P99_SLACK_MS = 10.0  # ... and over it by more than 10 ms: on the shared 2-core VM, minutes of an unchanged
# tree differ by up to 1.9x and 17.7 ms with no stall in the service or the machine ([19.7, 30.8, 37.4,
# 13.6, 14.2] in a fresh-clone CI run: the slow minutes' API took 11% more CPU per request at the same
# rate, i.e. the host ran slower); a leak or a growing queue exceeds both
STALL_MARGIN_S = 0.05  # requests in flight when a stall outside the service began
MAX_LEFT_OUT = 0.02  # a window with more of its requests inside such stalls cannot be judged


class Traffic:
    """Visits: a session clicks a few catalogue items (POST /events) and asks for recommendations
    after each click (POST /recommend), so both endpoints and the worker carry load."""

    def __init__(self, base: str, items: np.ndarray, seed: int = 7) -> None:
        self.base = base
        self.items = items.tolist()
        self.rng = random.Random(seed)
        self.tag = uuid.uuid4().hex[:6]
        self.visit = 0
        self.step = 0
        self.session = ""

    def next_request(self) -> tuple[str, bytes]:
        """Alternates an event and a recommendation of the same session; a new session every ~8 steps."""
        if self.step % 8 == 0:
            self.visit += 1
            self.session = f"soak-{self.tag}-{self.visit}"
        self.step += 1
        if self.step % 2:
            body = {"session_id": self.session, "item_id": self.rng.choice(self.items), "ts": time.time()}
            return "/events", json.dumps(body).encode()
        return "/recommend", json.dumps({"session_id": self.session, "k": 20}).encode()


async def _send(http: aiohttp.ClientSession, base: str, path: str, body: bytes) -> tuple[str, int, float]:
    started = time.perf_counter()
    try:
        async with http.post(base + path, data=body, headers={"content-type": "application/json"}) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        status = 0
    return path, status, (time.perf_counter() - started) * 1000


async def saturation_rate(base: str, traffic: Traffic) -> float:
    """Requests/s of the mixed traffic with `SATURATION_CONCURRENCY` clients sending back to back."""
    done = 0
    deadline = time.perf_counter() + SATURATION_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await _send(http, base, *traffic.next_request())
                done += 1

        await asyncio.gather(*(client() for _ in range(SATURATION_CONCURRENCY)))
    return done / SATURATION_S


async def open_loop(base: str, traffic: Traffic, rate: float, seconds: float, on_tick=None,
                    lag: LoopLag | None = None) -> tuple[float, list[tuple[float, str, int, float]]]:
    """Send at `rate`/s on schedule for `seconds`; (start on the monotonic clock, [(scheduled time
    since start, path, status, latency from the scheduled time)]: a stall is charged to every
    request it delays). `lag` meters this loop's own stalls meanwhile."""
    results: list[tuple[float, str, int, float]] = []
    pending: set[asyncio.Task] = set()
    start = time.perf_counter()
    next_tick = start
    if lag is not None:
        lag.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                     connector=aiohttp.TCPConnector(limit=256)) as http:
        async def one(scheduled: float, path: str, body: bytes) -> None:
            _, status, _ = await _send(http, base, path, body)
            results.append((scheduled - start, path, status, (time.perf_counter() - scheduled) * 1000))

        n = 0
        while True:
            scheduled = start + n / rate
            if scheduled - start >= seconds:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled, *traffic.next_request()))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            if on_tick is not None and time.perf_counter() >= next_tick:
                on_tick(time.perf_counter() - start)
                next_tick += WINDOW_S / 4
        await asyncio.gather(*pending)
    if lag is not None:
        lag.stop()
    return start, results


class CpuTracer(threading.Thread):
    """CPU seconds of each process every 0.5 s (monotonic time, {name: cpu}), for diagnosis."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            row = {}
            for name, proc in self.procs.items():
                try:
                    times = proc.cpu_times()
                    row[name] = times.user + times.system
                except psutil.Error:
                    pass
            self.samples.append((time.monotonic(), row))

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its children (uvicorn and Faust may fork helpers)."""
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


@pytest.fixture()
def soak_worker(live_settings: Settings) -> Iterator[int]:
    """The session's worker, restarted with a short session idle window (same group and state) so
    ten minutes reach the steady state a day of traffic reaches with the default 30 minutes."""
    process.stop("worker", live_settings)
    settings = Settings(**{**live_settings.model_dump(), "session_idle_s": IDLE_S})
    yield process.start_detached("worker", [*CLI, "stream"], settings, env=settings.to_env())
    process.stop("worker", settings)


def sessions_evicted(settings: Settings) -> float:
    """The worker's `streamrec_worker_sessions_evicted_total` (0 until its first eviction)."""
    return worker_metrics(settings).get("sessions_evicted", 0.0)


def excluded_spans(stalls: list[tuple[float, float]], start: float) -> list[tuple[float, float]]:
    """Scheduled-time spans (since `start`) whose requests a stall outside the service delayed:
    from just before the stall (requests in flight) to as long again after it (the backlog drains
    at the spare half of the capacity, as fast as it built up)."""
    return [(s - start - STALL_MARGIN_S, e - start + (e - s) + STALL_MARGIN_S) for s, e in stalls]


def recommend_latencies(results: list[tuple[float, str, int, float]], spans: list[tuple[float, float]] = (),
                        window: int | None = None, window_s: float = WINDOW_S) -> list[tuple[float, float]]:
    """(scheduled time, ms) of each `/recommend`, in one window (`window_s` long) if given, leaving
    out the ones scheduled within `spans`."""
    return [(t, ms) for t, path, _, ms in results
            if path == "/recommend" and (window is None or window * window_s <= t < (window + 1) * window_s)
            and not any(a <= t <= b for a, b in spans)]


def window_p99(results: list[tuple[float, str, int, float]], windows: int,
               spans: list[tuple[float, float]] = (), window_s: float = WINDOW_S) -> tuple[list[float], list[float]]:
    """Per window (`window_s` long): `/recommend` p99 (ms), requests placed by their scheduled time,
    leaving out the ones scheduled within `spans`; and the share of the window's requests left out."""
    p99, left_out = [], []
    for w in range(windows):
        kept = recommend_latencies(results, spans, w, window_s)
        p99.append(float(np.percentile([ms for _, ms in kept], 99)))
        left_out.append(1 - len(kept) / len(recommend_latencies(results, window=w, window_s=window_s)))
    return p99, left_out


def window_level(results: list[tuple[float, str, int, float]], windows: int,
                 spans: list[tuple[float, float]] = ()) -> list[float]:
    """Per window: the median of its seconds' `/recommend` p99 (ms), i.e. the tail latency the window
    held for most of its seconds. A sustained slowdown (a leak, a growing queue, a collector walking a
    growing heap) lifts it; one stall of half a second does not (it lifts that window's p99 alone to
    ~50 ms: a 529 ms stall in CI, one second of sixty, read as a "slower minute")."""
    levels = []
    for w in range(windows):
        seconds: dict[int, list[float]] = {}
        for t, ms in recommend_latencies(results, spans, w):
            seconds.setdefault(int(t), []).append(ms)
        levels.append(float(np.median([np.percentile(v, 99) for v in seconds.values()])))
    return levels


def slow_windows(levels: list[float]) -> list[int]:
    """Windows whose level is over the median window's by both P99_FACTOR and P99_SLACK_MS."""
    median = float(np.median(levels))
    bound = max(P99_FACTOR * median, median + P99_SLACK_MS)
    return [w for w, v in enumerate(levels) if v > bound]


def worst_seconds(results: list[tuple[float, str, int, float]], window: int, top: int = 5) -> list[tuple[int, float]]:
    """The `top` seconds of a window by their slowest `/recommend` (second since start, ms)."""
    slowest: dict[int, float] = {}
    for t, ms in recommend_latencies(results, window=window):
        slowest[int(t)] = max(slowest.get(int(t), 0.0), ms)
    return sorted(((sec, round(ms)) for sec, ms in slowest.items()), key=lambda x: -x[1])[:top]


GC_PAUSE = "streamrec_api_gc_pause_seconds"
LOOP_LAG = "streamrec_api_loop_lag_seconds"


@dataclass(frozen=True)
class ApiFigures:
    """What the soak reads from the API's /metrics before and after the run."""

    gc_pauses: Buckets | None  # generation 1-2 collector pauses (None before the first)
    gc_seconds: float  # paused in all
    loop_lag: Buckets | None
    shed: float  # /recommend answers shed to the in-memory fallbacks for overload
    answered: float  # all /recommend answers
    recommend: Buckets | None  # the API's own /recommend latency (streamrec_recommend_seconds, all stages)

    @classmethod
    def read(cls, api: str) -> ApiFigures:
        samples = parse(httpx.get(f"{api}/metrics", timeout=5).text)
        return cls(Buckets.of(samples, GC_PAUSE), total(samples, f"{GC_PAUSE}_sum") or 0.0, Buckets.of(samples, LOOP_LAG),
                   total(samples, "streamrec_recommend_degraded_total", reason="overload") or 0.0,
                   total(samples, "streamrec_recommend_seconds_count") or 0.0,
                   Buckets.of(samples, "streamrec_recommend_seconds"))


def over(buckets: Buckets | None, bound_s: float) -> float:
    """Observations of a histogram above one of its bucket bounds."""
    return buckets.count - buckets.counts[buckets.bounds.index(bound_s)] if buckets else 0.0


def api_loop_stalls(settings: Settings, since_bytes: int) -> list[str]:
    """The API log's loop-watch reports written after `since_bytes` (the stack of each stall)."""
    with open(process.log_path("api", settings), "rb") as log:
        log.seek(since_bytes)
        text = log.read().decode(errors="replace")
    return text.split(STALL_MESSAGE)[1:]


def window_rate(series: list[tuple[float, float]], windows: int) -> list[float]:
    """Per window, the growth per second of a cumulative series (CPU seconds: cores in use)."""
    def at(t: float) -> float:
        return min(series, key=lambda point: abs(point[0] - t))[1]
    return [(at((w + 1) * WINDOW_S) - at(w * WINDOW_S)) / WINDOW_S for w in range(windows)]


def window_memory(series: list[tuple[float, float]], windows: int) -> list[float]:
    """Median RSS (MB) of each window's samples (one every quarter window)."""
    return [float(np.median([mb for t, mb in series if w * WINDOW_S <= t <= (w + 1) * WINDOW_S]))
            for w in range(windows)]


def test_mixed_traffic_at_half_saturation_every_window_like_the_median_window(
        live_settings: Settings, soak_worker: int, api: str) -> None:
    windows = int(round(SOAK_S / WINDOW_S))
    assert windows >= MIN_WINDOWS, f"STREAMREC_SOAK_S={SOAK_S:g} gives {windows} windows, fewer than {MIN_WINDOWS}"
    pids = {"api": process.is_running("api", live_settings), "worker": soak_worker}
    assert all(pids.values()), pids
    items = load_current(live_settings.models_dir).item_ids
    traffic = Traffic(api, items)

    saturation = asyncio.run(saturation_rate(api, traffic))
    rate = saturation / 2
    asyncio.run(open_loop(api, traffic, rate, WARMUP_S))

    memory: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in [*pids, "loadgen", "steal", "machine"]}

    def sample(elapsed: float) -> None:
        for name, pid in pids.items():
            memory[name].append((elapsed, rss_mb(pid)))
        for name, pid in [*pids.items(), ("loadgen", os.getpid())]:
            times = psutil.Process(pid).cpu_times()
            cpu[name].append((elapsed, times.user + times.system))
        machine = psutil.cpu_times()
        cpu["steal"].append((elapsed, getattr(machine, "steal", 0.0)))
        cpu["machine"].append((elapsed, sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)))

    # The load generator's own full GC passes over everything pytest imported stalled its loop for
    # ~200 ms (seen by LoopLag in two local runs): freeze that heap, as the API does at start-up.
    gc.collect()
    gc.freeze()
    evicted_before = sessions_evicted(live_settings)
    meter, lag = Meter(SOAK_S + 120), LoopLag()
    tracer = CpuTracer({name: pid for name, pid in [*((n, process.is_running(n, live_settings)) for n in
                        process.pid_names(live_settings)), ("worker", soak_worker), ("loadgen", os.getpid())] if pid})
    tracer.start()
    sample(0.0)
    before = ApiFigures.read(api)
    api_log_at = process.log_path("api", live_settings).stat().st_size
    redis = redis_lib.Redis.from_url(live_settings.redis_url)
    redis.config_set("latency-monitor-threshold", 25)  # Redis' own record of its slow events (ms)
    redis.latency_reset()
    start, results = asyncio.run(open_loop(api, traffic, rate, SOAK_S, on_tick=sample, lag=lag))
    sample(SOAK_S)
    tracer.stop()
    after = ApiFigures.read(api)
    shed, answered = after.shed - before.shed, after.answered - before.answered
    gc_pauses = after.gc_pauses.since(before.gc_pauses) if after.gc_pauses else None
    gc_over_50ms = over(gc_pauses, 0.05)
    loop_lag = after.loop_lag.since(before.loop_lag) if after.loop_lag else None
    redis_slow = {name.decode() if isinstance(name, bytes) else name: worst
                  for name, _, _, worst in redis.execute_command("LATENCY", "LATEST")}
    loop_stalls = api_loop_stalls(live_settings, api_log_at)
    machine_stalls = meter.stop()
    evicted = sessions_evicted(live_settings) - evicted_before

    errors = [(t, path, status) for t, path, status, _ in results
              if status != (202 if path == "/events" else 200)]
    raw_p99, _ = window_p99(results, windows)
    spans = excluded_spans(machine_stalls + lag.stalls, start)
    p99, left_out = window_p99(results, windows, spans)
    levels = window_level(results, windows, spans)
    level_median = float(np.median(levels))
    run_p99 = float(np.percentile([ms for _, ms in recommend_latencies(results, spans)], 99))
    server = after.recommend.since(before.recommend) if after.recommend else None
    server_p99 = server.quantile(0.99) * 1000 if server and server.count else None
    budget_ms = live_settings.latency_budget_ms
    mb = {name: window_memory(series, windows) for name, series in memory.items()}
    mb_median = {name: float(np.median(levels)) for name, levels in mb.items()}
    mb_off = {name: max(abs(v / mb_median[name] - 1) for v in levels) for name, levels in mb.items()}
    cores = {name: window_rate(series, windows) for name, series in cpu.items()}
    cores["others"] = [m - sum(cores[n][w] for n in [*pids, "loadgen"]) for w, m in enumerate(cores.pop("machine"))]
    worst = max(ms for *_, ms in results)
    events = sum(p == "/events" for _, p, _, _ in results)
    print(f"\nFIGURES case=8 soak injected='{SOAK_S:.0f}s mixed traffic at {rate:.0f} req/s (half of the "
          f"{saturation:.0f} req/s saturation), session idle {IDLE_S}s' requests={len(results)} events={events} "
          f"errors={len(errors)} windows={windows}x{WINDOW_S:.0f}s "
          f"level_ms={[round(v, 1) for v in levels]} (median second's p99 of each window; median window "
          f"{level_median:.1f}, max/median {max(levels) / level_median:.2f}, over by {max(levels) - level_median:.1f} ms; "
          f"slower means over {P99_FACTOR:g}x and {P99_SLACK_MS:g} ms) run_p99_ms={run_p99:.1f} (client side; budget {budget_ms:g} ms) "
          f"server_p99_ms={server_p99 if server_p99 is None else round(server_p99, 1)} (the API's histogram, interpolated) "
          f"p99_ms={[round(v, 1) for v in p99]} raw_p99_ms={[round(v, 1) for v in raw_p99]} "
          f"stalls_outside_service={len(machine_stalls)} machine+{len(lag.stalls)} loadgen "
          f"(longest {max([e - s for s, e in machine_stalls + lag.stalls], default=0) * 1000:.0f} ms, "
          f"requests left out per window {[f'{v:.2%}' for v in left_out]}) worst_ms={worst:.1f} "
          + " ".join(f"{name}_mb={[round(v) for v in levels]} (max off median {mb_off[name]:+.1%}, "
                     f"bound {MEMORY_TOLERANCE:.0%})" for name, levels in mb.items())
          + " cores=" + json.dumps({name: [round(v, 2) for v in levels] for name, levels in cores.items()})
          + f" sessions_evicted_in_run={evicted:.0f} api_gc_pauses_gen1_2={gc_over_50ms:.0f} over 50 ms "
          f"({gc_pauses.count if gc_pauses else 0:.0f} collections, "
          f"{(after.gc_seconds - before.gc_seconds) * 1000:.0f} ms paused in all) api_loop_lag_over_100ms={over(loop_lag, 0.1):.0f} "
          f"api_loop_stalls_logged={len(loop_stalls)} redis_latest_slow_ms={json.dumps(redis_slow)} "
          f"shed_for_overload={shed:.0f} of {answered:.0f} answers ({shed / max(answered, 1):.2%})")
    for report in loop_stalls[:5]:
        print("API loop stall" + report[:2000])
    if os.environ.get("STREAMREC_SOAK_DUMP"):
        with open(os.environ["STREAMREC_SOAK_DUMP"], "w") as out:
            json.dump({"start": start, "results": [r for r in results if r[1] == "/recommend"],
                       "machine_stalls": machine_stalls, "loadgen_stalls": lag.stalls,
                       "cpu_1s": tracer.samples}, out)
    assert not errors, errors[:10]
    assert evicted > 0, "no session was evicted during the run: flat memory would prove nothing"
    noisy = [(w, v) for w, v in enumerate(left_out) if v > MAX_LEFT_OUT]
    judged = [w for w in range(windows) if w not in dict(noisy)]
    assert len(judged) >= MIN_WINDOWS, (
        f"the machine or the load generator stalled too long to judge these windows: {noisy}; "
        f"{len(judged)} judged, fewer than {MIN_WINDOWS}")
    judged_levels = [levels[w] for w in judged]
    slow = [(judged[i], judged_levels[i], worst_seconds(results, judged[i])) for i in slow_windows(judged_levels)]
    assert not slow, (f"windows whose median second's p99 is over {P99_FACTOR:g}x and {P99_SLACK_MS:g} ms over "
                      f"the median judged window's {np.median(judged_levels):.1f} ms (window, level, its slowest "
                      f"seconds; not judged as too noisy: {noisy}): {slow}")
    # The run's p99 against the 50 ms budget (client and the API's own histogram) is printed, not judged:
    # it is a speed figure of a 2-core machine that the load generator, Kafka and the worker keep ~90% busy
    # (the tree before issue 13 read a client p99 of 65 ms here, and two CI runs of one tree read a server
    # p99 of under 50 and 54 ms). Issue 5 asks the soak for no errors, a stable p99 and flat memory; the
    # budget itself is judged where it is the claim: tests/faults/test_redis_outage.py.
    for name, levels in mb.items():
        assert mb_off[name] <= MEMORY_TOLERANCE, (name, levels, mb_median[name])
