"""Shared by the fault tests that run a worker of their own next to the session's stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from infra import process, stack
from infra.kafka import free_port
from serving.ops import parse
from streamrec.settings import Settings

WORKER_COUNTERS = ("streamrec_worker_events_total", "streamrec_worker_item_clicks_total",
                   "streamrec_worker_sessions_evicted_total")


def worker_metrics(settings: Settings) -> dict[str, float]:
    """The running worker's counters (zero in every new process) as `events.<outcome>`,
    `item_clicks.<outcome>` and `sessions_evicted`; {} while its web server does not answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for name, samples in parse(text).items():
        if name in WORKER_COUNTERS:
            short = name.removeprefix("streamrec_worker_").removesuffix("_total")
            for labels, value in samples:
                key = ".".join([short, *labels.values()])
                out[key] = out.get(key, 0.0) + value
    return out


@contextmanager
def own_worker_settings(live: Settings, prefix: str, pid_name: str) -> Iterator[Settings]:
    """The live stack's Kafka and Redis with our own worker id, topics and web port; the worker
    started under `pid_name` is stopped at the end."""
    tag = uuid.uuid4().hex[:6]
    settings = Settings(**{
        **live.model_dump(),
        "worker_id": f"{prefix}-{tag}",
        "clicks_topic": f"clicks-{prefix}-{tag}",
        "dead_letter_topic": f"clicks-dlq-{prefix}-{tag}",
        "worker_web_port": free_port(),
    })
    stack.ensure_topics(settings)
    try:
        yield settings
    finally:
        process.stop(pid_name, settings)
