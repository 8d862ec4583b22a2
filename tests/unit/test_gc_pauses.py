"""The API times its garbage collector's full collections: a stall that no request log explains
shows in `streamrec_api_gc_pause_seconds`."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from serving import metrics


def _sample(suffix: str, generation: str) -> float:
    return REGISTRY.get_sample_value(f"streamrec_api_gc_pause_seconds_{suffix}", {"generation": generation}) or 0.0


def test_a_full_collection_is_timed_once_and_generation_0_not_at_all() -> None:
    metrics.time_gc_pauses()
    hooks = len(gc.callbacks)
    metrics.time_gc_pauses()  # idempotent: still one callback
    assert len(gc.callbacks) == hooks
    garbage = [[i] for i in range(200_000)]  # something for the collector to walk
    full_before, paused_before = _sample("count", "2"), _sample("sum", "2")
    gc.collect(2)
    gc.collect(0)
    assert _sample("count", "2") - full_before == 1
    assert _sample("sum", "2") > paused_before
    assert _sample("count", "0") == 0
    del garbage
