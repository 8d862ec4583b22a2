"""Shared by the fault tests that run a worker of their own next to the session's stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from infra import process, stack
from infra.kafka import free_port
from streamrec.settings import Settings


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
