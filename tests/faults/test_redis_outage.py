"""Redis outage while the API serves: our own redis-server is first frozen (SIGSTOP: connections hang),
then killed (SIGKILL: connections refused) under steady /recommend traffic. Every request must still
get a 200 within the latency budget from the in-process fallbacks, say `degraded` and why, /health
must say so, and once Redis is back (empty, as a cache without persistence restarts) and the batch
features are re-materialized, full service must return without restarting the API."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from infra import process, redis_server
from infra.kafka import free_port
from streamrec.settings import Settings
from tests.conftest import start_api, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

API = "api-redis-outage"
BASELINE_S = 3.0
HANG_S = 3.0  # Redis frozen (SIGSTOP): every connection hangs
SETTLE_S = 0.2  # after SIGSTOP, before requests count as 'during the freeze'
RESUME_S = 2.0
DOWN_S = 5.0  # Redis killed (SIGKILL): connections refused
AFTER_S = 3.0
# The budget bounds the recommender's pipeline (timings_ms.total). Slack: asyncio timers fire on
# the next loop iteration, and this is a 2-core machine shared with Kafka, Redis and other jobs, so
# one scheduling quantum (~10 ms) late is allowed; nothing near a Redis timeout (seconds) is.
SERVER_SLACK_MS = 10.0
# The README promises the answer within the latency budget: the client's wall time during the fault
# gets the same one-quantum slack as the server's, and nothing for a Redis timeout.
CLIENT_SLACK_MS = SERVER_SLACK_MS


def own_settings(live: Settings, data_dir: Path, **overrides) -> Settings:
    """The live stack's settings with our own data dir (a copy of the trained model and batch
    sources), Redis URL and API port; pid files and logs land in our own run dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for part in ("models", "batch"):
        if not (data_dir / part).exists():
            shutil.copytree(live.data_dir / part, data_dir / part, symlinks=True)
    values = {**live.model_dump(), "data_dir": data_dir, "api_port": free_port(),
              "redis_url": f"redis://127.0.0.1:{free_port()}/0"}
    values.update(overrides)
    return Settings(**values)


def materialize_everything(settings: Settings) -> None:
    """`feast materialize` over all time into this Redis (incremental would skip what the registry
    says is already loaded, and a restarted cache holds nothing)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    feast(settings, ["materialize", "2000-01-01T00:00:00", now])


def feast(settings: Settings, args: list[str]) -> None:
    """The Feast CLI on our settings, output captured (shown only if it fails)."""
    from training.feast_ops import feast_argv

    done = subprocess.run(feast_argv(settings, args), env={**os.environ, **settings.feast_env()},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"feast {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-3000:]}"


@pytest.fixture()
def outage_settings(live_settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    settings = own_settings(live_settings, tmp_path_factory.mktemp("redis-outage"))
    try:
        redis_server.start(settings)
        feast(settings, ["apply"])
        materialize_everything(settings)
        yield settings
    finally:
        process.stop(API, settings)
        process.stop(redis_server.NAME, settings, expect=redis_server.EXPECT)


@dataclass
class Sample:
    phase: str  # when the request was sent
    status: int
    client_ms: float
    body: dict = field(default_factory=dict)
    phase_end: str = ""  # when its answer arrived


@dataclass
class Traffic:
    """Steady /recommend traffic (one request at a time, ~100/s) and /health every 0.25 s."""

    base: str
    sessions: list[tuple[str, list[int]]]
    phase: str = "baseline"
    samples: list[Sample] = field(default_factory=list)
    health: list[tuple[str, int, dict]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(5)
        next_health = 0.0
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self.stop.is_set():
                session_id, items = rng.choice(self.sessions)
                phase = self.phase
                started = time.perf_counter()
                try:
                    response = client.post("/recommend", json={"session_id": session_id, "k": 10,
                                                               "session_items": items})
                    elapsed = (time.perf_counter() - started) * 1000
                    body = response.json() if response.headers.get("content-type", "").startswith(
                        "application/json") else {"text": response.text[:200]}
                    self.samples.append(Sample(phase, response.status_code, elapsed, body, self.phase))
                    if time.monotonic() >= next_health:
                        next_health = time.monotonic() + 0.25
                        sent_in = self.phase
                        reply = client.get("/health")
                        # counted in a phase only if sent and answered inside it
                        self.health.append((sent_in if self.phase == sent_in else "transition",
                                            reply.status_code, reply.json()))
                except BaseException as exc:  # noqa: BLE001 - a hang or reset is a finding
                    self.errors.append(exc)
                    self.samples.append(Sample(phase, 0, (time.perf_counter() - started) * 1000))
                time.sleep(0.01)


def test_recommend_keeps_answering_within_budget_through_a_redis_outage(outage_settings):
    settings = outage_settings
    budget_ms = settings.latency_budget_ms
    base = start_api(API, settings)
    # Known items: the popular fallback answers a request without items.
    probe = httpx.post(f"{base}/recommend", json={"session_id": "probe", "k": 50}, timeout=5).json()
    known = [entry["item_id"] for entry in probe["items"]]
    rng = random.Random(1)
    tag = uuid.uuid4().hex[:6]
    sessions = [(f"ro-{tag}-{n}", rng.sample(known, rng.randint(1, 5))) for n in range(40)]

    traffic = Traffic(base, sessions)
    thread = threading.Thread(target=traffic.run, name="traffic", daemon=True)
    thread.start()
    pid = redis_server.managed_pid(settings)
    assert pid is not None
    marks: dict[str, float] = {}
    try:
        time.sleep(BASELINE_S)
        traffic.phase = "transition"  # requests in flight while the fault lands: not asserted degraded
        os.kill(pid, signal.SIGSTOP)
        # A reply Redis wrote just before it stopped can still arrive: give the boundary 0.2 s.
        time.sleep(SETTLE_S)
        traffic.phase = "hang"
        time.sleep(HANG_S - SETTLE_S)
        os.kill(pid, signal.SIGCONT)
        traffic.phase = "resume"
        time.sleep(RESUME_S)
        traffic.phase = "transition"
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: process._proc_info(pid) is None, 10, "redis-server to die")
        traffic.phase = "down"
        time.sleep(DOWN_S)
        traffic.phase = "restarted"  # Redis answers again, empty: the API must notice by itself
        restarted = time.monotonic()
        redis_server.start(settings)
        marks["redis_up_s"] = time.monotonic() - restarted
        # Back but empty: the API reads it again by itself (no "unavailable" reason any more) and,
        # until the batch features are re-materialized, says which features are missing.
        wait_for(lambda: any(s.phase == "restarted" and s.body and not any(
            "unavailable" in r for r in s.body.get("degraded_reasons", [])) for s in traffic.samples[-20:]),
            10, "the API to read Redis again after the restart")
        marks["first_ok_s"] = time.monotonic() - restarted
        materialize_everything(settings)
        marks["materialized_s"] = time.monotonic() - restarted
        traffic.phase = "after"
        time.sleep(AFTER_S)
    finally:
        traffic.stop.set()
        thread.join(15)
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    samples = traffic.samples
    by_phase = {p: [s for s in samples if s.phase == p]
                for p in ("baseline", "transition", "hang", "resume", "down", "restarted", "after")}
    fault = by_phase["hang"] + by_phase["down"] + by_phase["transition"]
    non_200 = [s for s in samples if s.status != 200]
    server_ms = [s.body["timings_ms"]["total"] for s in samples if s.status == 200]
    fault_server_max = max(s.body["timings_ms"]["total"] for s in fault if s.status == 200)
    fault_client_max = max(s.client_ms for s in fault)
    # Sent and answered inside the freeze or the outage (a request sent just before SIGCONT may
    # rightly be answered by the thawed Redis).
    inside = [s for s in by_phase["hang"] + by_phase["down"] if s.phase_end == s.phase]
    not_degraded_in_fault = [s.body for s in inside if not (s.body.get("degraded") and s.body.get("degraded_reasons"))]
    health = {p: [(code, h["status"], h["redis"]["ok"]) for q, code, h in traffic.health if q == p]
              for p in by_phase}
    stages = {p: sorted({s.body.get("stage") for s in v if s.body}) for p, v in by_phase.items()}
    # Redis back but empty (before re-materialization): items have no embedding row; the API uses the
    # model's copy and must say so.
    silent_fallbacks = sum(1 for s in by_phase["restarted"]
                           if s.body.get("stage", "").startswith("fallback") and not s.body.get("degraded"))
    figures = (f"FIGURES case=1 redis-outage injected='SIGSTOP {HANG_S:g}s, SIGKILL {DOWN_S:g}s, restart empty "
               f"+ re-materialize' requests={len(samples)} (fault {len(fault)}) lost={len(non_200)} "
               f"worst_fault_ms=server {fault_server_max:.1f} / client {fault_client_max:.1f} "
               f"budget_ms={budget_ms:g} recovery: redis up {marks['redis_up_s']:.1f}s, API reads it again "
               f"{marks['first_ok_s']:.2f}s, re-materialized {marks['materialized_s']:.1f}s "
               f"(meanwhile {silent_fallbacks} of {len(by_phase['restarted'])} answers were fallbacks not marked degraded)")
    missing_marked = sum(1 for s in by_phase["restarted"] if any("missing from the online store" in r
                                                                 for r in s.body.get("degraded_reasons", [])))
    # run with -s to see the figures (the report table is made of these lines)
    print(f"\n{figures}\nstages per phase {stages}\nhealth per phase "
          f"{ {p: sorted(set(v)) for p, v in health.items()} }")

    assert not traffic.errors, f"client errors (hang/reset): {traffic.errors[:3]}"
    assert not non_200, f"{len(non_200)} non-200 responses, e.g. {[(s.status, s.body) for s in non_200[:3]]}"
    assert all(v for p, v in by_phase.items() if p != "transition"), f"a phase got no traffic: { {p: len(v) for p, v in by_phase.items()} }"
    # Before the fault nothing is unavailable; a request the busy 2-core machine made late may
    # still take the budget's cheaper path (and say so), but only rarely.
    baseline_degraded = [s.body["degraded_reasons"] for s in by_phase["baseline"] if s.body["degraded"]]
    assert not [r for r in baseline_degraded if any("unavailable" in x for x in r)], baseline_degraded
    assert len(baseline_degraded) <= 0.01 * len(by_phase["baseline"]), baseline_degraded
    assert silent_fallbacks == 0 and missing_marked > 0, (silent_fallbacks, missing_marked)
    assert not not_degraded_in_fault, f"responses during the outage not marked degraded: {not_degraded_in_fault[:2]}"
    assert max(server_ms) <= budget_ms + SERVER_SLACK_MS, f"server time {max(server_ms):.1f} ms over the budget"
    assert fault_client_max <= budget_ms + CLIENT_SLACK_MS, (
        f"a request took {fault_client_max:.1f} ms (client) during the outage; budget {budget_ms:g} ms")
    assert health["hang"] and all(code == 503 and status == "degraded" and not redis_ok
                                  for code, status, redis_ok in health["hang"]), health["hang"]
    assert all(code == 503 and status == "degraded" and not redis_ok
               for code, status, redis_ok in health["down"]), health["down"]
    assert health["down"] and health["after"]
    assert all(code == 200 and status == "ok" for code, status, _ in health["after"]), health["after"]
    after = by_phase["after"]
    assert not [s for s in after if s.body["degraded"]], "degraded after recovery"
    assert {s.body["stage"] for s in after} <= {"stream", "batch"}, stages["after"]
