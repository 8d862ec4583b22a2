"""A live stack for integration tests: real Kafka (KRaft) and Redis on free loopback ports, a small
synthetic model applied and materialized through the Feast CLI, and — on request — the worker and
the API started exactly as a user starts them (`streamrec stream`, `streamrec serve`)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from streamrec import feature_schema as s
from infra import process, stack
from infra.kafka import free_port
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings

CLI = [sys.executable, "-m", "cli"]


def make_settings(data_dir, **overrides) -> Settings:
    tag = uuid.uuid4().hex[:6]
    values = dict(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        data_dir=data_dir,
        kafka_libs_dir=Settings().kafka_libs,  # share the jar cache with the developer's stack
        clicks_topic=f"clicks-{tag}",
        dead_letter_topic=f"clicks-dlq-{tag}",
        impressions_topic=f"impressions-{tag}",
        worker_id=f"streamrec-test-{tag}",
        worker_web_port=free_port(),
        api_port=free_port(),
        start_timeout_s=90,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def live_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Kafka + Redis up, topics created, a synthetic model trained, applied and materialized."""
    from training.feast_ops import apply_and_materialize
    from training.pipeline import train

    settings = make_settings(tmp_path_factory.mktemp("live"))
    try:
        stack.up(settings)
        stack.ensure_topics(settings)
        train(settings, None, progress=False, n_sessions=4000, n_items=800, n_topics=20, seed=3)
        apply_and_materialize(settings)
        yield settings
    finally:
        stack.down(settings)


def read_session(settings: Settings, session_id: str) -> dict | None:
    async def read() -> dict | None:
        store = OnlineStore.from_url(settings.redis_url)
        try:
            return (await store.read(s.SESSION_FEATURES_VIEW, [session_id]))[0]
        finally:
            await store.close()

    return asyncio.run(read())


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def start_worker(settings: Settings) -> int:
    pid = process.start_detached("worker", [*CLI, "stream"], settings, env=settings.to_env())
    return pid


@pytest.fixture(scope="session")
def worker(live_settings: Settings) -> Iterator[int]:
    pid = start_worker(live_settings)
    yield pid
    process.stop("worker", live_settings)


def start_api(name: str, settings: Settings, *args: str, healthy_status: tuple[int, ...] = (200,),
              timeout_s: float = 120) -> str:
    """`streamrec serve *args` on settings.api_port, started under pid name `name`; its base url once
    /health answers with one of `healthy_status` (the log tail if it dies or never does)."""
    process.start_detached(name, [*CLI, "serve", *args], settings, env=settings.to_env())
    base = f"http://127.0.0.1:{settings.api_port}"

    def up() -> bool:
        if process.is_running(name, settings) is None:
            raise AssertionError(f"the API died:\n{process.log_tail(name, settings)}")
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code in healthy_status
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout_s, f"{name} to answer /health")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{process.log_tail(name, settings)}") from None
    return base


@pytest.fixture(scope="session")
def api(live_settings: Settings) -> Iterator[str]:
    yield start_api("api", live_settings)
    process.stop("api", live_settings)
