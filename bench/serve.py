"""`streamrec bench serve`: `POST /recommend` under load — closed loop at fixed concurrency, open loop at a fixed rate.

The bodies are realistic never-seen sessions of catalogue items (the training dataset's test
prefixes, else prefixes of its sessions, else co-visitation walks), so every request takes the full
path. `wrk -t1` gives throughput and latency per connection count (one thread: the server needs
the other core); an open loop at `--rate` times each request from its *scheduled* send, so a stall
is charged to every request it delays. The reference is the same server's cheapest path (an empty
session → the popular list); the server's CPU per answer bounds the closed-loop mean from below
(`mean_ms_floor`). `ranked_rps` counts only the answers of the full pipeline, not the fallbacks.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.cli import bench_app
from bench.common import (BenchSetupError, JsonFlag, Seed, console, cpu_seconds, latency_summary, print_table,
                          print_targets, run_command, service, targets)
from streamrec.settings import Settings, get_settings

RECOMMEND_PATH = "/recommend"
K = 20
TIMEOUT_S = 2.0  # per request, of wrk and the open loop
MAX_BODY_ITEMS = 50  # longer sessions are cut to their latest items (the server's default limit)
TARGETS = {"p99_ms_at_32": 15.0, "rps_at_32": 500.0, "p50_ms_at_1": 5.0}  # the issue's, with the full ranker


# --- request bodies ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Sessions:
    """Item sequences for request bodies and where they came from."""

    items: list[list[int]]
    source: str


def _srgnn_test_prefixes(path: Path) -> Iterator[list[int]]:
    import gzip

    with gzip.open(path, "rt") as lines:
        next(lines, None)  # header: prefix<TAB>label
        yield from ([int(item) for item in line.split("\t", 1)[0].split()] for line in lines)


def _dataset_prefixes(path: Path, rng: np.random.Generator) -> Iterator[list[int]]:
    """A random-length prefix of each session of the dataset (its training split)."""
    from streamrec.datasets import load_dataset

    data = load_dataset(path)
    starts = data.session_starts()
    for start, end in zip(starts.tolist(), np.append(starts[1:], len(data)).tolist()):
        yield data.item_ids[start:start + int(rng.integers(1, end - start + 1))].tolist()


def sample_sessions(model, count: int, seed: int = 0, max_items: int = MAX_BODY_ITEMS) -> Sessions:
    """`count` sessions of catalogue items: dataset test prefixes, dataset prefixes, or catalogue walks."""
    rng = np.random.default_rng(seed)
    known = {int(item) for item in model.item_ids.tolist()}
    path = Path(str(model.meta.get("dataset") or "synthetic"))
    pools: list[tuple[str, Any]] = []
    if str(path) != "synthetic" and path.exists():
        pools += [(f"test prefixes of {path.name}", lambda f=test_file: _srgnn_test_prefixes(f))
                  for test_file in (path / "test_pairs.tsv.gz", path / "test_pairs.tsv")
                  if path.is_dir() and test_file.exists()]
        pools.append((f"session prefixes of {path.name}", lambda: _dataset_prefixes(path, rng)))
    for source, make in pools:
        try:
            candidates = [kept for sequence in make()
                          if (kept := [item for item in sequence if item in known][-max_items:])]
        except (OSError, ValueError) as exc:
            console.print(f"[yellow]sessions from {source} unavailable ({exc}); trying the next source[/]")
            continue
        if len(candidates) >= min(count, 100):
            chosen = rng.choice(len(candidates), size=count, replace=len(candidates) < count)
            return Sessions([candidates[i] for i in chosen.tolist()], source)
    from bench.retrieval import SessionSpec, session_walks, trained_catalogue

    walks = session_walks(trained_catalogue(model), count, SessionSpec(max_length=min(10, max_items)), rng)
    return Sessions([model.item_ids[walk].tolist() for walk in walks], "catalogue walks (popularity + co-visitation)")


def request_bodies(sessions: Sessions, k: int, tag: str) -> tuple[list[str], list[str]]:
    """(recommend bodies, reference bodies): the sessions, and empty never-seen sessions, as JSON."""
    def body(session_id: str, items: list[int]) -> str:
        return json.dumps({"session_id": session_id, "k": k, "session_items": items, "exclude_seen": True},
                          separators=(",", ":"))

    return ([body(f"bench-{tag}-{i}", items) for i, items in enumerate(sessions.items)],
            [body(f"bench-ref-{tag}-{i}", []) for i in range(len(sessions.items))])


def tally(counts: dict[str, int], names: Iterable[str]) -> None:
    for name in names:
        counts[name] = counts.get(name, 0) + 1


# --- closed loop: wrk (its Lua counts the answers; wrk's own `--latency` text has no p95) ---------

WRK_SCRIPT = r"""
local bodies, position, threads = {}, 0, {}
responses, non_2xx, degraded, fallback, reasons = 0, 0, 0, 0, {}

function setup(thread) table.insert(threads, thread) end

function init(args)  -- args: the bodies file (one per line), the path
  for line in io.lines(args[1]) do
    if #line > 0 then bodies[#bodies + 1] = wrk.format("POST", args[2], {["Content-Type"] = "application/json"}, line)
    end
  end
  position = math.random(#bodies) - 1
end

function request()
  position = position % #bodies + 1
  return bodies[position]
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then non_2xx = non_2xx + 1; return end
  if string.find(body, '"degraded":true', 1, true) then
    degraded = degraded + 1
    local reason = string.match(body, '"degraded_reasons":%["([^:"]*)') or "unknown"
    reasons[reason] = (reasons[reason] or 0) + 1
  end
  if string.find(body, '"stage":"fallback_', 1, true) then fallback = fallback + 1 end
end

function done(summary, latency, requests)
  local counts, merged, parts = {responses = 0, non_2xx = 0, degraded = 0, fallback = 0}, {}, {}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(counts) do counts[name] = counts[name] + (thread:get(name) or 0) end
    for reason, n in pairs(thread:get("reasons") or {}) do merged[reason] = (merged[reason] or 0) + n end
  end
  for reason, n in pairs(merged) do
    parts[#parts + 1] = string.format('"%s":%d', string.gsub(reason, '[^%w _%-]', '_'), n)
  end
  local e = summary.errors
  io.write(string.format(
    '{"streamrec_wrk":1,"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"responses":%d,"non_2xx":%d,"degraded":%d,"fallback":%d,' ..
    '"p50_us":%.1f,"p95_us":%.1f,"p99_us":%.1f,"max_us":%.1f,"mean_us":%.1f,"degraded_reasons":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    counts.responses, counts.non_2xx, counts.degraded, counts.fallback,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    table.concat(parts, ",")))
end
"""


def parse_wrk_output(stdout: str) -> dict[str, float]:
    """The JSON line of the Lua `done()` hook, as the figures of one level."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith('{"streamrec_wrk"')), None)
    if line is None:
        raise BenchSetupError(f"wrk printed no result line; its output was:\n{stdout[-2000:]}")
    raw = json.loads(line)
    duration_s = raw["duration_us"] / 1e6
    ranked = raw["responses"] - raw["non_2xx"] - raw["fallback"]  # answered by the full pipeline
    return {
        "requests": int(raw["requests"]),
        "rps": round(raw["requests"] / duration_s, 1) if duration_s > 0 else 0.0,
        "ranked_rps": round(ranked / duration_s, 1) if duration_s > 0 else 0.0,
        **{f"{q}_ms": round(raw[f"{q}_us"] / 1000, 3) for q in ("p50", "p95", "p99", "max", "mean")},
        "errors": int(sum(raw[e] for e in ("connect", "read", "write", "timeout", "non_2xx"))),
        "non_2xx": int(raw["non_2xx"]), "timeouts": int(raw["timeout"]), "degraded": int(raw["degraded"]),
        "fallback": int(raw["fallback"]), "degraded_reasons": raw.get("degraded_reasons", {}),
    }


def run_wrk(url: str, script: Path, bodies_file: Path, concurrency: int, duration_s: float) -> dict[str, float]:
    """One closed-loop level: `wrk -t1 -c{concurrency}` for `duration_s`."""
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", f"--timeout={TIMEOUT_S:g}s",
            "-s", str(script), url, "--", str(bodies_file), RECOMMEND_PATH]
    completed = subprocess.run(argv, capture_output=True, text=True, check=False,
                               timeout=duration_s + TIMEOUT_S + 60)
    if completed.returncode != 0:
        raise BenchSetupError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")
    return {"concurrency": concurrency, **parse_wrk_output(completed.stdout)}


# --- open loop: fixed offered rate -------------------------------------------------------------

async def _open_loop(url: str, bodies: Sequence[bytes], rate: float, duration_s: float) -> dict[str, Any]:
    import aiohttp

    total = max(1, int(rate * duration_s))
    latencies: list[float] = []
    send_lag: list[float] = []
    counts: dict[str, Any] = {"errors": 0, "non_2xx": 0, "timeouts": 0, "degraded": 0, "fallback": 0,
                              "degraded_reasons": {}}
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as client:
        async def one(body: bytes, scheduled: float) -> None:
            try:
                async with client.post(url + RECOMMEND_PATH, data=body,
                                       headers={"Content-Type": "application/json"}) as answer:
                    payload, status = await answer.read(), answer.status
            except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                counts["errors"] += 1
                counts["timeouts"] += isinstance(exc, asyncio.TimeoutError)
                return
            latencies.append(clock() - scheduled)
            if not 200 <= status < 300:
                counts["non_2xx"] += 1
                counts["errors"] += 1
                return
            counts["fallback"] += b'"stage":"fallback_' in payload  # byte patterns: no parsing under load
            if b'"degraded":true' in payload:
                counts["degraded"] += 1
                reasons = json.loads(payload).get("degraded_reasons", [])
                tally(counts["degraded_reasons"], (reason.split(":")[0] for reason in reasons))

        start = clock() + 0.05
        tasks = []
        for i in range(total):
            scheduled = start + i / rate
            if scheduled > clock():
                await asyncio.sleep(scheduled - clock())
            send_lag.append(max(0.0, clock() - scheduled))
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)], scheduled)))
        await asyncio.gather(*tasks)
        elapsed = clock() - start
    ok = len(latencies) - counts["non_2xx"]
    return {"offered": rate, "achieved": round(ok / elapsed, 1) if elapsed > 0 else 0.0, "requests": total,
            **latency_summary(latencies), **counts,
            "send_lag_p99_ms": round(float(np.percentile(send_lag, 99)) * 1000, 3) if send_lag else 0.0}


def run_open_loop(url: str, bodies: Sequence[str], rate: float, duration_s: float) -> dict[str, Any]:
    """`rate` requests/s for `duration_s` at exact intervals; latency from each scheduled send time."""
    coroutine = _open_loop(url, [body.encode() for body in bodies], rate, duration_s)
    try:
        import uvloop

        return uvloop.run(coroutine)  # also on Python 3.10, which has no asyncio.Runner
    except ImportError:
        return asyncio.run(coroutine)


# --- the server --------------------------------------------------------------------------------

def _health(url: str) -> dict | None:
    import httpx

    try:
        answer = httpx.get(f"{url}/health", timeout=2.0)
    except httpx.HTTPError:
        return None
    try:
        return {"status_code": answer.status_code, **answer.json()}
    except ValueError:
        return {"status_code": answer.status_code}


@contextmanager
def running_server(settings: Settings, url: str | None, workers: int | None = None,
                   env_overrides: dict[str, str] | None = None) -> Iterator[tuple[str, int | None]]:
    """(base url, pid or None): the given server, or `streamrec serve` started here and stopped on exit."""
    if url is not None:
        if _health(url.rstrip("/")) is None:
            raise BenchSetupError(f"nothing answers GET {url}/health; start the API (`streamrec serve`) or "
                                  "leave out --url to let the benchmark start one")
        yield url.rstrip("/"), None
        return
    from infra.kafka import free_port

    port = free_port()
    argv = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers or settings.api_workers)]
    env = {**settings.to_env(), "STREAMREC_API_HOST": "127.0.0.1", "STREAMREC_API_PORT": str(port),
           **(env_overrides or {})}
    base = f"http://127.0.0.1:{port}"
    with service(f"bench-api-{port}", argv, settings, lambda: _health(base) is not None, env=env) as pid:
        yield base, pid


def check_responses(url: str, bodies: Sequence[str], reference_bodies: Sequence[str], k: int) -> dict[str, Any]:
    """Sequential sample, parsed: stages, degraded answers, short lists and mean server step timings."""
    import httpx

    counts: dict[str, Any] = {"requests": len(bodies), "errors": 0, "degraded": 0, "fallback": 0, "short": 0,
                              "stages": {}, "degraded_reasons": {}, "reference_stages": {}}
    timings: dict[str, list[float]] = {}
    with httpx.Client(base_url=url, timeout=5.0, headers={"Content-Type": "application/json"}) as client:
        for body in bodies:
            answer = client.post(RECOMMEND_PATH, content=body)
            if answer.status_code != 200:
                counts["errors"] += 1
                continue
            payload = answer.json()
            tally(counts["stages"], [payload["stage"]])
            counts["fallback"] += payload["stage"].startswith("fallback_")
            counts["degraded"] += bool(payload["degraded"])
            counts["short"] += len(payload["items"]) < k
            tally(counts["degraded_reasons"], (reason.split(":")[0] for reason in payload.get("degraded_reasons", [])))
            for step, ms in payload["timings_ms"].items():
                timings.setdefault(step, []).append(ms)
        for body in reference_bodies:
            answer = client.post(RECOMMEND_PATH, content=body)
            failed = f"http {answer.status_code}"
            tally(counts["reference_stages"],
                  [answer.json().get("stage", failed) if answer.status_code == 200 else failed])
    return {**counts, "server_timings_mean_ms": {step: round(float(np.mean(v)), 3) for step, v in timings.items()},
            "server_timings_p50_ms": {step: round(float(np.median(v)), 3) for step, v in timings.items()}}


def cpu_bound(before: float | None, after: float | None, level: dict, cores: int | None = None) -> dict[str, Any]:
    """Server CPU per answer at this level, and the floor it sets on closed-loop latency.

    With c ms of server CPU per request and n cores, no more than n/c requests per ms can be
    answered, so N connections in a closed loop wait at least N·c/n ms on average (Little's law),
    even if HTTP, the client and Redis cost nothing; p99 is above the mean.
    """
    if before is None or after is None or not level["requests"]:
        return {"server_cpu_ms_per_request": None, "mean_ms_floor": None}
    per_request_ms = 1000 * (after - before) / level["requests"]
    return {"server_cpu_ms_per_request": round(per_request_ms, 3),
            "mean_ms_floor": round(level["concurrency"] * per_request_ms / (cores or os.cpu_count() or 1), 2)}


# --- the benchmark -----------------------------------------------------------------------------

def where_we_stand(levels: list[dict], errors: int) -> dict[str, Any]:
    """The issue's targets next to the measured figures (None where a level was not measured)."""
    by_concurrency = {level["concurrency"]: level for level in levels}
    at_32, at_1 = by_concurrency.get(32), by_concurrency.get(1)
    return targets({"p99_ms_at_32": (TARGETS["p99_ms_at_32"], at_32 and at_32["p99_ms"], lambda v, t: v <= t),
                    "rps_at_32": (TARGETS["rps_at_32"], at_32 and at_32["ranked_rps"], lambda v, t: v >= t),
                    "p50_ms_at_1": (TARGETS["p50_ms_at_1"], at_1 and at_1["p50_ms"], lambda v, t: v <= t),
                    "errors": (0, errors, lambda v, t: v <= t)})


LOG_COST_CONNECTIONS = 8
LOG_COST_TARGET_MS = 0.1  # issue 12: the inference log costs at most this much server CPU per request


def impression_log_cost(settings: Settings, script: Path, bodies: Path, duration_s: float, warmup_s: float,
                        rounds: int = 5) -> dict[str, Any]:
    """Server CPU per request with the inference log on and off: two servers started alike, one with
    STREAMREC_IMPRESSION_LOG=false, loaded in alternating rounds; the cost is the difference of the
    medians. `bodies` are the reference requests (empty sessions: popular items, no model work):
    the log's work does not depend on how the list was made, and on cheap requests the difference
    stands out of the run-to-run spread (on the full pipeline, ~4.5 ms of CPU a request, two
    servers both logging differed by 0.2 ms)."""
    console.print(f"impression log: CPU per request on / off, {rounds} alternating rounds at concurrency "
                  f"{LOG_COST_CONNECTIONS}, {duration_s:g}s each")
    on: list[float] = []
    off: list[float] = []
    with running_server(settings, None, workers=1, env_overrides={"STREAMREC_IMPRESSION_LOG": "true"}) as (
            on_base, on_pid), \
            running_server(settings, None, workers=1, env_overrides={"STREAMREC_IMPRESSION_LOG": "false"}) as (
            off_base, off_pid):
        for server in (on_base, off_base):
            run_wrk(server, script, bodies, LOG_COST_CONNECTIONS, max(warmup_s, 1.0))
        for _ in range(rounds):
            for server, server_pid, out in ((on_base, on_pid, on), (off_base, off_pid, off)):
                before = cpu_seconds(server_pid)
                level = run_wrk(server, script, bodies, LOG_COST_CONNECTIONS, duration_s)
                out.append(cpu_bound(before, cpu_seconds(server_pid), level)["server_cpu_ms_per_request"])
    cost = float(np.median(on) - np.median(off))
    return {"connections": LOG_COST_CONNECTIONS, "rounds": rounds, "requests": "reference (empty sessions)",
            "cpu_ms_per_request_on": on, "cpu_ms_per_request_off": off, "cost_ms_per_request": round(cost, 4),
            "target_ms": LOG_COST_TARGET_MS, "met": cost <= LOG_COST_TARGET_MS}


def run_serve_bench(settings: Settings, duration_s: float = 10.0, concurrency: tuple[int, ...] = (1, 8, 32),
                    rate: float = 250.0, url: str | None = None, warmup_s: float = 3.0, n_bodies: int = 4000,
                    sample: int = 200, seed: int = 0, workers: int | None = None, log_rounds: int = 3) -> dict[str, Any]:
    """`rate` 0 skips the open loop; `url` None starts `streamrec serve` with `workers` processes here."""
    from streamrec.artifacts import RANKER, load_current

    if shutil.which("wrk") is None:
        raise BenchSetupError("wrk is not installed: `sudo apt-get install wrk` (scripts/setup.sh does it)")
    try:
        model = load_current(settings.models_dir)
    except FileNotFoundError as exc:
        raise BenchSetupError(f"{exc} (data dir {settings.data_dir})") from exc
    sessions = sample_sessions(model, n_bodies, seed=seed, max_items=min(settings.max_session_items, MAX_BODY_ITEMS))
    bodies, reference_bodies = request_bodies(sessions, K, uuid.uuid4().hex[:8])
    lengths = np.array([len(items) for items in sessions.items])
    console.print(f"[bold]bodies[/] {len(bodies):,} sessions from {sessions.source}: "
                  f"{lengths.mean():.1f} items on average (median {np.median(lengths):.0f}, max {lengths.max()})")
    notes: list[str] = []

    with tempfile.TemporaryDirectory(prefix="streamrec-bench-serve-") as folder, \
            running_server(settings, url, workers=workers) as (base, pid):
        script, recommend_file, reference_file = (Path(folder) / name
                                                  for name in ("bench.lua", "recommend.jsonl", "reference.jsonl"))
        script.write_text(WRK_SCRIPT)
        recommend_file.write_text("\n".join(bodies) + "\n")
        reference_file.write_text("\n".join(reference_bodies) + "\n")

        health = _health(base) or {}  # what the server serves (the local model's figures otherwise)
        served = {"catalogue_items": health.get("catalogue_items", len(model.item_ids)),
                  "model_version": health.get("model_version") or model.version,
                  "scorer": health.get("scorer") or ("lightgbm-lambdarank" if (model.path / RANKER).exists()
                                                     else "blend")}
        if served["model_version"] != model.version:
            notes.append(f"the server serves model {served['model_version']}, the bodies come from the local "
                         f"model {model.version}; items unknown to the server take cheaper paths")
        if health and health.get("status") != "ok":
            notes.append(f"/health reports {health.get('status')}: {json.dumps(health)[:300]}")
        console.print(f"[bold]server[/] {base} (pid {pid or 'external'}): model {served['model_version']}, "
                      f"{served['catalogue_items']:,} items, scorer {served['scorer']}")

        check = check_responses(base, bodies[:sample], reference_bodies[:max(1, sample // 10)], K)
        if check["fallback"] or check["degraded"] or check["errors"]:
            notes.append(f"response check: {check['fallback']} fallback, {check['degraded']} degraded, "
                         f"{check['errors']} failed of {check['requests']} sequential requests "
                         f"(reasons {check['degraded_reasons']})")

        if warmup_s > 0:
            console.print(f"warm-up: {warmup_s:g}s at concurrency 8 (not measured)")
            run_wrk(base, script, recommend_file, 8, warmup_s)

        levels: list[dict] = []
        reference_levels: list[dict] = []
        for connections in concurrency:
            console.print(f"concurrency {connections}: recommend, then reference, {duration_s:g}s each")
            for path_file, results in ((recommend_file, levels), (reference_file, reference_levels)):
                before = cpu_seconds(pid)
                level = run_wrk(base, script, path_file, connections, duration_s)
                results.append({**level, **cpu_bound(before, cpu_seconds(pid), level)})

        log_cost = impression_log_cost(settings, script, reference_file, duration_s, warmup_s, log_rounds) \
            if url is None and log_rounds > 0 else None

        open_loop: dict[str, Any] | None = None
        if rate > 0:
            console.print(f"open loop: {rate:g} requests/s for {duration_s:g}s, then the reference")
            open_loop = run_open_loop(base, bodies, rate, duration_s)
            open_loop["reference"] = run_open_loop(base, reference_bodies, rate, duration_s)

    def ratio(ours: float, theirs: float) -> float:
        return round(ours / theirs, 2) if theirs and math.isfinite(theirs) else float("nan")

    under_load = [*levels, *([open_loop] if open_loop else [])]
    degraded, fallback = (sum(run[key] for run in under_load) for key in ("degraded", "fallback"))
    if degraded or fallback:
        notes.append(f"under load: {degraded} degraded and {fallback} fallback answers "
                     "to non-empty sessions (latency budget or online store; see degraded_reasons)")
    return {
        "benchmark": "serve",
        "levels": levels,
        "reference_levels": reference_levels,
        "ratios": [{"concurrency": level["concurrency"], "p50_ratio": ratio(level["p50_ms"], reference["p50_ms"]),
                    "p99_ratio": ratio(level["p99_ms"], reference["p99_ms"]),
                    "rps_ratio": ratio(level["rps"], reference["rps"])}
                   for level, reference in zip(levels, reference_levels)],
        "rate": open_loop,
        **served,
        "sessions": {"source": sessions.source, "bodies": len(bodies), "mean_items": round(float(lengths.mean()), 2),
                     "k": K},
        "response_check": check,
        "impression_log": log_cost,
        "targets": where_we_stand(levels, sum(run["errors"] for run in under_load)),
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "client": {"closed_loop": "wrk -t1 (one thread; the server needs the other core)",
                   "open_loop": "aiohttp + uvloop, latency from the scheduled send time"},
        "server": url or "started by the benchmark",
        "server_workers": None if url else workers or settings.api_workers,
        "notes": notes,
    }


def render(result: dict[str, Any]) -> None:
    columns = ("concurrency", "rps", "ranked_rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors", "non_2xx",
               "degraded", "fallback", "server_cpu_ms_per_request", "mean_ms_floor")
    print_table(f"POST /recommend, closed loop (wrk -t1), model {result['model_version']}, "
                f"{result['catalogue_items']:,} items, scorer {result['scorer']}",
                [{"path": path, **{c: level[c] for c in columns}}
                 for path, key in (("recommend", "levels"), ("reference", "reference_levels"))
                 for level in result[key]])
    print_table("recommend / reference (empty session → popular)", result["ratios"])
    if result["rate"]:
        keys = ("offered", "achieved", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors", "degraded", "fallback",
                "send_lag_p99_ms")
        print_table("open loop, fixed offered rate (latency from scheduled send)",
                    [{"path": path, **{key: run[key] for key in keys}}
                     for path, run in (("recommend", result["rate"]), ("reference", result["rate"]["reference"]))])
    timings = result["response_check"]["server_timings_mean_ms"]
    print_table("server step timings, sequential sample (mean ms)", [timings] if timings else [])
    log = result.get("impression_log")
    if log:
        print_table("impression log: server CPU ms per request, on / off (alternating rounds)",
                    [{"log": "on", **{f"round {n + 1}": v for n, v in enumerate(log["cpu_ms_per_request_on"])}},
                     {"log": "off", **{f"round {n + 1}": v for n, v in enumerate(log["cpu_ms_per_request_off"])}},
                     {"log": "cost (median on - off)", "round 1": log["cost_ms_per_request"]}])
    print_targets(result)


@bench_app.command("serve")
def serve(
    as_json: JsonFlag = False,
    duration: Annotated[float, typer.Option(min=1, help="Seconds per measured run.")] = 10.0,
    concurrency: Annotated[str, typer.Option(help="Closed-loop connection counts, comma-separated.")] = "1,8,32",
    rate: Annotated[float, typer.Option(min=0, help="Offered requests/s of the open-loop run; 0 skips it.")] = 250.0,
    url: Annotated[str | None, typer.Option(help="A running API; default: start `streamrec serve` here.")] = None,
    warmup: Annotated[float, typer.Option(min=0, help="Unmeasured seconds of load first.")] = 3.0,
    bodies: Annotated[int, typer.Option(min=10, help="Distinct request bodies in rotation.")] = 4000,
    sample: Annotated[int, typer.Option(min=0, help="Sequential requests parsed and checked first.")] = 200,
    seed: Seed = 0,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes of the started server (default STREAMREC_API_WORKERS).")] = None,
    log_rounds: Annotated[int, typer.Option(
        min=0, help="Rounds of the inference log's CPU cost (on vs a second server with it off); 0 skips it.")] = 3,
) -> None:
    """`POST /recommend` under load: wrk at fixed concurrency, an open loop at a fixed rate, against a reference."""
    try:
        levels = tuple(int(part) for part in concurrency.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"--concurrency {concurrency!r}: expected integers like 1,8,32") from None
    if not levels or min(levels) < 1:
        raise typer.BadParameter("--concurrency needs at least one level, each ≥ 1")
    run_command(lambda: run_serve_bench(get_settings(), duration, levels, rate, url, warmup, bodies, sample, seed,
                                        workers, log_rounds), render, as_json)
