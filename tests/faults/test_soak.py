"""Soak: mixed `POST /events` and `POST /recommend` traffic against the real API and worker (real
Kafka and Redis) for 10 minutes at half the measured saturation rate. No errors, a stable p99
(the last minute within 1.5x the first) and flat memory (each process grows under 10%).

`STREAMREC_SOAK_S` shortens the run for a quick look (the issue's figure is the 600 s default).
The worker runs with a 30 s session idle window, so its session state reaches its steady level
within the warm-up; with the default 30 minutes the same level comes after half an hour.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import Iterator

import aiohttp
import numpy as np
import psutil
import pytest

from streamrec.artifacts import load_current
from infra import process
from streamrec.settings import Settings
from tests.conftest import CLI

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(1200)]

SOAK_S = float(os.environ.get("STREAMREC_SOAK_S", "600"))
IDLE_S = 30  # STREAMREC_SESSION_IDLE_S of the soak's worker
WARMUP_S = 2.0 * IDLE_S  # past one idle window: the worker's session state has reached its level
SATURATION_S = 15.0
SATURATION_CONCURRENCY = 16
WINDOW_S = 60.0 if SOAK_S >= 300 else SOAK_S / 5
MEMORY_GROWTH_LIMIT = 0.10
P99_GROWTH_LIMIT = 1.5


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


async def open_loop(base: str, traffic: Traffic, rate: float, seconds: float,
                    on_tick=None) -> list[tuple[float, str, int, float]]:
    """Send at `rate`/s on schedule for `seconds`; (scheduled time, path, status, latency from the
    scheduled time, so a stall is charged to every request it delays)."""
    results: list[tuple[float, str, int, float]] = []
    pending: set[asyncio.Task] = set()
    start = time.perf_counter()
    next_tick = start
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
    return results


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


def test_ten_minutes_of_mixed_traffic_at_half_saturation(live_settings: Settings, soak_worker: int, api: str) -> None:
    pids = {"api": process.is_running("api", live_settings), "worker": soak_worker}
    assert all(pids.values()), pids
    items = load_current(live_settings.models_dir).item_ids
    traffic = Traffic(api, items)

    saturation = asyncio.run(saturation_rate(api, traffic))
    rate = saturation / 2
    asyncio.run(open_loop(api, traffic, rate, WARMUP_S))

    memory: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}

    def sample(elapsed: float) -> None:
        for name, pid in pids.items():
            memory[name].append((elapsed, rss_mb(pid)))

    sample(0.0)
    results = asyncio.run(open_loop(api, traffic, rate, SOAK_S, on_tick=sample))
    sample(SOAK_S)

    errors = [(t, path, status) for t, path, status, _ in results
              if status != (202 if path == "/events" else 200)]
    windows = int(SOAK_S // WINDOW_S)
    p99 = []
    for w in range(windows):
        latencies = [ms for t, path, _, ms in results if path == "/recommend" and w * WINDOW_S <= t < (w + 1) * WINDOW_S]
        p99.append(float(np.percentile(latencies, 99)))
    growth = {}
    for name, series in memory.items():
        # first full window's level against the last window's: start-up allocations are not growth
        first = np.median([mb for t, mb in series if t <= WINDOW_S])
        last = np.median([mb for t, mb in series if t >= SOAK_S - WINDOW_S])
        growth[name] = (first, last, last / first - 1)
    worst = max(ms for *_, ms in results)
    print(f"\nFAULT-REPORT soak: {SOAK_S:.0f}s at {rate:.0f} req/s (half of the {saturation:.0f} req/s saturation), "
          f"{len(results)} requests ({sum(p == '/events' for _, p, _, _ in results)} events), errors {len(errors)}, "
          f"recommend p99 per {WINDOW_S:.0f}s window {[round(v, 1) for v in p99]} ms, worst latency {worst:.1f} ms, "
          "memory MB first->last window " + ", ".join(f"{n} {a:.0f}->{b:.0f} ({g:+.1%})" for n, (a, b, g) in growth.items()))
    assert not errors, errors[:10]
    assert p99[-1] <= P99_GROWTH_LIMIT * p99[0], p99
    for name, (_, _, g) in growth.items():
        assert g < MEMORY_GROWTH_LIMIT, (name, growth[name])
