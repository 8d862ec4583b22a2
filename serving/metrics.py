"""Prometheus metrics of the API, summed over its worker processes when `streamrec serve` runs several.

With several workers each process counts in its own files under PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, chosen at import time from that variable), and
`/metrics` merges the files of all of them, so a scrape answered by any worker sees the whole API.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUEST_SECONDS = Histogram(
    "streamrec_recommend_seconds", "Latency of POST /recommend by the stage that served it.", ["stage"],
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0),
)
DEGRADED = Counter("streamrec_recommend_degraded_total", "Recommendations served degraded.", ["reason"])
EVENTS = Counter("streamrec_api_events_total", "Click events received by POST /events.", ["outcome"])
IMPRESSIONS_LOGGED = Counter("streamrec_impressions_logged_total",
                             "Impression records (the inference log) Kafka acknowledged.")
IMPRESSIONS_DROPPED = Counter(
    "streamrec_impressions_dropped_total", "Impression records not logged: buffer_full (Kafka slower than the "
    "answers, or down), kafka (not acknowledged), shutdown (still buffered when the process stopped).", ["reason"])
SHADOW_SKIPPED = Counter("streamrec_shadow_skipped_total", "Shadow scorings not done: too many running, or "
                         "the challenger failed.")
MODEL_LOAD_FAILURES = Counter("streamrec_model_load_failures_total",
                              "Model versions an API process failed to load (it kept serving the versions it had).")
MODEL_SWAPS = Counter("streamrec_model_swaps_total", "Swaps to a new set of model versions (champion or routing arms).")
# 1 for the version an API process serves as champion, 0 for the one it served before (mostrecent:
# with several workers, each label's latest write of any of them; see DEPENDENCY_UP below).
MODEL_CHAMPION = Gauge("streamrec_model_champion", "1 for the champion version the API serves.", ["version"],
                       multiprocess_mode="mostrecent")
# Set every ~2 s by each API process (serving.ops.watch_dependencies). "mostrecent": with several
# workers the latest check of any of them is reported. Not max/min: nobody calls mark_process_dead,
# so a killed worker's file stays and its last value would win a max (hiding an outage) or a min
# (reporting one forever); its stale value is always older than the live workers' fresh ones.
DEPENDENCY_UP = Gauge("streamrec_dependency_up", "1 if the API reaches the dependency (redis, kafka), else 0.",
                      ["dependency"], multiprocess_mode="mostrecent")
GC_PAUSE = Histogram(
    "streamrec_api_gc_pause_seconds",
    "Pauses of the API process for its garbage collector's generation 1 and 2 collections: every request "
    "in flight waits them out (generation 0 collections are too short and frequent to time).",
    ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
LOOP_LAG = Histogram(
    "streamrec_api_loop_lag_seconds",
    "How late the API's event loop ran a 10 ms timer: a late loop delays every request in flight "
    "(the stack of a stall over 100 ms is logged by serving.loop_watch).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
_gc_started: list[float] = []


def _time_gc(phase: str, info: dict) -> None:
    if info["generation"] == 0:
        return
    if phase == "start":
        _gc_started[:] = [time.perf_counter()]
    elif _gc_started:
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _gc_started.pop())


def time_gc_pauses() -> None:
    """Time the collector's pauses in this process (idempotent): a stall no request log explains."""
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)


def use_multiprocess_dir(folder: Path) -> None:
    """Before the workers start: an empty folder for their metric files (a previous run's counts
    would otherwise be summed in), announced to the workers through the environment."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)


def multiprocess_mode() -> bool:
    """Whether this process keeps its metric values in files: prometheus_client decides once, when it
    is imported, from the environment. Not the variable now: `import feast` sets it later."""
    return values.ValueClass is not values.MutexValue


def exposition() -> bytes:
    """The Prometheus text of this process, or of all workers in multiprocess mode."""
    if not (multiprocess_mode() and os.environ.get(MULTIPROC_ENV)):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)
