"""`streamrec bench features`: one request's online feature read, streamrec's path versus Feast's.

A request reads what `Recommender` reads: the session's streaming features and up to `--items`
item embeddings. The same keys are read, interleaved, by `OnlineStore.read_many` (one pipeline,
`streamrec.feast_codec`: the API's path), by Feast's SDK (`get_online_features`, its best case) and
by `feast serve` over HTTP, so all three see the same Redis and noise. Keys mix present, missing
(~10% of items and sessions) and expired (~5% of sessions) values, and every request's decoded
values are compared across the paths (`mismatches`). The benchmark's sessions are deleted after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.cli import bench_app
from bench.common import (BenchSetupError, JsonFlag, Seed, answers, console, latency_summary, plain, print_table,
                          require_stack, run_command, service)
from streamrec import feature_schema as s
from streamrec.settings import Settings, get_settings

PATHS = ("project", "feast_sdk", "feast_server")
SESSION_FEATURE_REFS = tuple(f"{s.SESSION_FEATURES_VIEW}:{f}" for f in s.SESSION_FEATURES)
EMBEDDING_REF = f"{s.ITEM_EMBEDDINGS_VIEW}:{s.EMBEDDING}"
FIRST_UNKNOWN_ITEM = 10**15  # item ids from here on are never in a catalogue


MISSING_ITEM_FRACTION = 0.1  # item ids not in the catalogue
MISSING_SESSION_FRACTION = 0.1  # session ids never written
EXPIRED_SESSION_FRACTION = 0.05  # sessions older than the view's TTL


@dataclass(frozen=True)
class FeatureRequest:
    session_id: str
    items: list[int]


# --- what each path returns, reduced to one comparable shape ----------------------------------
# (session feature values in SESSION_FEATURES order, one float32 byte string or None per item)

Canonical = tuple[tuple[object, ...], tuple[bytes | None, ...]]


def _vector(value: object) -> bytes | None:
    return None if value is None else np.asarray(value, dtype="<f4").tobytes()


def canonical_project(rows: list[list[dict[str, object] | None]]) -> Canonical:
    session_rows, embedding_rows = rows
    session = session_rows[0] or {}
    return (tuple(plain(session.get(f)) for f in s.SESSION_FEATURES),
            tuple(_vector(row[s.EMBEDDING]) if row else None for row in embedding_rows))


def canonical_columns(columns: dict[str, list[Any]]) -> Canonical:
    """From column lists (the SDK's to_dict(), or the server's JSON results by feature name)."""
    return (tuple(plain(columns[f][0]) for f in s.SESSION_FEATURES),
            tuple(_vector(v) for v in columns[s.EMBEDDING]))


def server_columns(body: dict[str, Any]) -> dict[str, list[Any]]:
    names = body["metadata"]["feature_names"]
    return {name: result["values"] for name, result in zip(names, body["results"])}


# --- the stack ----------------------------------------------------------------------------------

def _catalogue(settings: Settings) -> list[int]:
    import pandas as pd

    path = settings.batch_dir / s.ITEM_EMBEDDINGS_FILE
    if not path.exists():
        raise BenchSetupError(
            f"no trained model under {settings.data_dir} ({path.name} missing): run "
            "`streamrec up && streamrec train` (train also runs feast apply + materialize)")
    ids = pd.read_parquet(path, columns=[s.ITEM_KEY])[s.ITEM_KEY].unique()
    return sorted(int(i) for i in ids)


def _feature_store(settings: Settings):
    """Feast's SDK on this deployment's registry and Redis (feature_store.yaml reads the env)."""
    if not (settings.data_dir / "registry.db").exists():
        raise BenchSetupError(f"no Feast registry under {settings.data_dir}: run "
                              "`streamrec feast apply && streamrec feast materialize`")
    os.environ.update(settings.feast_env())
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(settings.feature_repo))
    known = {view.name for view in store.list_feature_views()}
    needed = {s.SESSION_FEATURES_VIEW, s.ITEM_EMBEDDINGS_VIEW}
    if not needed <= known:
        raise BenchSetupError(f"feature views {sorted(needed - known)} are not registered: run "
                              "`streamrec feast apply && streamrec feast materialize`")
    return store


async def _check_materialized(store, catalogue: list[int]) -> None:
    sample = catalogue[:: max(1, len(catalogue) // 200)]
    rows = await store.read(s.ITEM_EMBEDDINGS_VIEW, sample, (s.EMBEDDING,))
    if not any(row and row[s.EMBEDDING] is not None for row in rows):
        raise BenchSetupError("no item embeddings in the online store: run `streamrec feast materialize`")


def _every(fraction: float, n: int) -> bool:
    """True for an exact `fraction` of n = 0, 1, 2, ... spread evenly (so short runs get their share)."""
    return int((n + 1) * fraction) > int(n * fraction)


def _plan(settings: Settings, catalogue: list[int], tag: str, sessions: int, n_requests: int, warmup: int,
          per_request: int, seed: int):
    """Session rows to write, and the requests (warm-up first) to read."""
    from streamrec.online_store import Row

    rng = random.Random(seed)
    now = time.time()
    ttl_s = s.VIEWS[s.SESSION_FEATURES_VIEW].ttl_s
    rows, expired = [], []
    for i in range(sessions):
        is_expired = _every(EXPIRED_SESSION_FRACTION, i)
        event_ts = now - ttl_s - 3600 if is_expired else now - rng.uniform(0, 600)
        recent = rng.sample(catalogue, k=min(len(catalogue), rng.randint(1, settings.recent_items)))
        rows.append(Row(f"{tag}-{i}", {s.RECENT_ITEMS: recent, s.CLICK_COUNT: len(recent) + rng.randint(0, 5),
                                       s.LAST_EVENT_TS: int(event_ts * 1000)}, event_ts))
        if is_expired:
            expired.append(rows[-1].key)
    expired_set = set(expired)
    fresh = [row.key for row in rows if row.key not in expired_set] or expired
    requests, item_counter = [], 0
    for number in range(warmup + n_requests):
        n = number - warmup if number >= warmup else number  # each phase gets the mix
        if _every(MISSING_SESSION_FRACTION, n):
            session = f"{tag}-unknown-{number}"
        elif expired and _every(EXPIRED_SESSION_FRACTION / (1 - MISSING_SESSION_FRACTION), n):
            session = rng.choice(expired)
        else:
            session = rng.choice(fresh)
        unknown = sum(_every(MISSING_ITEM_FRACTION, item_counter + j) for j in range(per_request))
        item_counter += per_request
        items = rng.sample(catalogue, k=min(len(catalogue), per_request - unknown))
        items += [FIRST_UNKNOWN_ITEM + rng.randrange(10**9) for _ in range(unknown)]
        rng.shuffle(items)
        requests.append(FeatureRequest(session, items))
    return rows, requests, expired_set


@contextlib.contextmanager
def running_feast_server(settings: Settings) -> Iterator[str]:
    """`feast -c feature_repo serve` on a free loopback port, like a production server: no per-request
    access log and no gunicorn worker recycling mid-run (by default every ~1,000 requests)."""
    from infra.kafka import free_port

    port = free_port()
    executable = Path(sys.executable).with_name("feast")
    argv = [str(executable) if executable.exists() else (shutil.which("feast") or "feast"), "-c",
            str(settings.feature_repo), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log",
            "--max-requests", "0"]
    url = f"http://127.0.0.1:{port}"
    with service(f"bench-feast-serve-{port}", argv, settings, lambda: answers(f"{url}/health"),
                 env=settings.feast_env()):
        yield url


# --- the measurement ----------------------------------------------------------------------------

async def _measure(settings: Settings, feast_store, catalogue: list[int], plan: tuple, warmup: int, server: bool):
    import httpx

    from streamrec.online_store import OnlineStore, ReadRequest

    session_rows, requests, expired_ids = plan
    store = OnlineStore.from_url(settings.redis_url)
    running = contextlib.ExitStack()
    http = httpx.AsyncClient(timeout=30.0)
    timings: dict[str, list[float]] = {path: [] for path in PATHS}
    mismatches = {"feast_sdk": 0, "feast_server": 0}
    first_mismatch: str | None = None
    counts = {"missing_sessions": 0, "expired_sessions": 0, "missing_items": 0, "present_items": 0}
    try:
        await _check_materialized(store, catalogue)
        await store.write(s.SESSION_FEATURES_VIEW, session_rows, expire_s=settings.session_ttl_s)
        url = running.enter_context(running_feast_server(settings)) if server else None

        # each path returns what its caller would use (decoded values); only that part is timed
        async def project(request: FeatureRequest):
            return await store.read_many([
                ReadRequest(s.SESSION_FEATURES_VIEW, [request.session_id], s.SESSION_FEATURES),
                ReadRequest(s.ITEM_EMBEDDINGS_VIEW, request.items, (s.EMBEDDING,)),
            ])

        async def sdk(request: FeatureRequest):
            return feast_store.get_online_features(
                features=[*SESSION_FEATURE_REFS, EMBEDDING_REF],
                entity_rows=[{s.SESSION_KEY: request.session_id, s.ITEM_KEY: item} for item in request.items],
            ).to_dict()

        async def feast_server(request: FeatureRequest):
            response = await http.post(f"{url}/get-online-features", json={
                "features": [*SESSION_FEATURE_REFS, EMBEDDING_REF],
                "entities": {s.SESSION_KEY: [request.session_id] * len(request.items), s.ITEM_KEY: request.items},
            })
            response.raise_for_status()
            return response.json()

        readers = {"project": project, "feast_sdk": sdk, "feast_server": feast_server}
        canonical = {"project": canonical_project, "feast_sdk": canonical_columns,
                     "feast_server": lambda body: canonical_columns(server_columns(body))}
        paths = [path for path in PATHS if path != "feast_server" or url]
        for number, request in enumerate(requests):
            measured = number >= warmup
            results: dict[str, Canonical] = {}
            shift = number % len(paths)  # rotate the order, so no path always runs first
            for path in paths[shift:] + paths[:shift]:
                start = time.perf_counter()
                raw_result = await readers[path](request)
                elapsed = time.perf_counter() - start
                if measured:
                    timings[path].append(elapsed)
                results[path] = canonical[path](raw_result)
            if not measured:
                continue
            for path in mismatches:
                if path in results and results[path] != results["project"]:
                    mismatches[path] += 1
                    first_mismatch = first_mismatch or f"{path} differs on session {request.session_id!r}"
            session, embeddings = results["project"]
            counts["missing_sessions"] += all(v is None for v in session)
            counts["expired_sessions"] += request.session_id in expired_ids
            counts["missing_items"] += sum(v is None for v in embeddings)
            counts["present_items"] += sum(v is not None for v in embeddings)
    finally:
        await http.aclose()
        running.close()
        keys = [store.key(s.SESSION_FEATURES_VIEW, row.key) for row in session_rows]
        for start_at in range(0, len(keys), 1000):
            await store.client.delete(*keys[start_at:start_at + 1000])
        await store.close()
    return timings, mismatches, first_mismatch, counts


def run_features_bench(settings: Settings, requests: int = 2000, items: int = 50, warmup: int = 100,
                       sessions: int = 1000, server: bool = True, seed: int = 0) -> dict[str, Any]:
    """The figures of one run (latencies in ms, speedups of p50 and p99, mismatch counts)."""
    require_stack(settings)
    catalogue = _catalogue(settings)
    feast_store = _feature_store(settings)
    plan = _plan(settings, catalogue, f"bench-features-{uuid.uuid4().hex[:8]}", sessions, requests, warmup, items, seed)
    timings, mismatches, first_mismatch, counts = asyncio.run(
        _measure(settings, feast_store, catalogue, plan, warmup, server))

    result: dict[str, Any] = {"requests": requests, "items_per_request": items}
    for path in PATHS:  # p50_ms → <path>_ms_p50; None for a path not measured
        summary = latency_summary(timings[path]) if timings[path] else {}
        result.update({f"{path}_ms_{q}": summary.get(f"{q}_ms") for q in ("p50", "p95", "p99", "max")})
    for baseline, name in (("feast_sdk", "sdk"), ("feast_server", "server")):
        for q, suffix in (("p50", ""), ("p99", "_p99")):
            ours, theirs = result[f"project_ms_{q}"], result[f"{baseline}_ms_{q}"]
            result[f"speedup_vs_{name}{suffix}"] = round(theirs / ours, 2) if ours and theirs else None
    return {**result, "mismatches": sum(mismatches.values()), "mismatches_sdk": mismatches["feast_sdk"],
            "mismatches_server": mismatches["feast_server"] if server else None, "first_mismatch": first_mismatch,
            **counts}


def render(result: dict[str, Any]) -> None:
    print_table(f"online feature read: 1 session + {result['items_per_request']} item embeddings, "
                f"{result['requests']} requests", [
                    {"path": path, **{q: result[f"{path}_ms_{q}"] for q in ("p50", "p95", "p99", "max")},
                     "× project (p50)": (round(result[f"{path}_ms_p50"] / result["project_ms_p50"], 2)
                                         if result[f"{path}_ms_p50"] else None)}
                    for path in PATHS])
    console.print(f"mismatches: {result['mismatches']} (sdk {result['mismatches_sdk']}, server "
                  f"{result['mismatches_server']}); values compared: {result['present_items']} present and "
                  f"{result['missing_items']} missing item embeddings, {result['missing_sessions']} missing and "
                  f"{result['expired_sessions']} expired sessions")
    if result["first_mismatch"]:
        console.print(f"[red]first mismatch:[/red] {result['first_mismatch']}")


@bench_app.command("features")
def features(
    as_json: JsonFlag = False,
    requests: Annotated[int, typer.Option(min=1, help="Measured requests (each read by all three paths).")] = 2000,
    items: Annotated[int, typer.Option(min=1, max=500, help="Item embeddings read per request.")] = 50,
    warmup: Annotated[int, typer.Option(min=0, help="Unmeasured requests first, per path.")] = 100,
    sessions: Annotated[int, typer.Option(min=1, help="Synthetic sessions written before reading.")] = 1000,
    server: Annotated[bool, typer.Option(help="Also measure `feast serve` over HTTP.")] = True,
    seed: Seed = 0,
) -> None:
    """Online feature read of one request (session features + item embeddings): streamrec vs Feast SDK vs `feast serve`."""
    run_command(lambda: run_features_bench(get_settings(), requests, items, warmup, sessions, server, seed), render,
                as_json)
