"""`streamrec up/down/status` against a real KRaft broker and redis-server on free loopback ports.

Uses its own data dir (never the developer's 9092/6379 services) but the main data dir's jar cache,
so Maven fetches Kafka's jars at most once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import process, stack
from infra.kafka import broker_answers, free_port
from infra.redis_server import answers as redis_answers
from streamrec.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 3  # differs from the broker's num.partitions=4, so auto-created topics would show


def _settings(data_dir: Path, kafka_port: int, redis_port: int) -> Settings:
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        data_dir=data_dir,
        kafka_libs_dir=Settings().kafka_libs,  # shared jar cache
        clicks_topic="test-clicks",
        dead_letter_topic="test-clicks-dlq",
        clicks_partitions=PARTITIONS,
        worker_web_port=free_port(),
        api_port=free_port(),
        start_timeout_s=90,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):
    s = _settings(tmp_path_factory.mktemp("stack"), free_port(), free_port())
    yield s
    stack.down(s)  # whatever a failing test left behind


def test_up_starts_kafka_and_redis(settings: Settings) -> None:
    state = stack.up(settings)
    for svc in (state.kafka, state.redis):
        assert svc.reachable and svc.managed_by_us and svc.started, svc
        assert svc.pid and svc.log and svc.log.exists()
        assert process.pid_path(svc.name, settings).read_text().strip() == str(svc.pid)
    assert state.ready
    assert {s.name for s in state.services} == {"kafka", "redis", "worker", "api"}
    now = stack.status(settings)
    assert now.kafka.reachable and now.kafka.managed_by_us and now.redis.reachable and now.redis.managed_by_us


def test_second_up_starts_nothing(settings: Settings) -> None:
    before = stack.status(settings)
    again = stack.up(settings)
    assert not again.kafka.started and not again.redis.started
    assert (again.kafka.pid, again.redis.pid) == (before.kafka.pid, before.redis.pid)


def test_ensure_topics_is_idempotent(settings: Settings) -> None:
    from streaming.topics import ITEM_TABLE, SESSION_TABLE, by_item_topic, changelog_topic

    expected = {settings.clicks_topic: PARTITIONS, settings.dead_letter_topic: 1, settings.impressions_topic: PARTITIONS,
                by_item_topic(settings): PARTITIONS,
                changelog_topic(settings, SESSION_TABLE): PARTITIONS, changelog_topic(settings, ITEM_TABLE): PARTITIONS}
    assert stack.ensure_topics(settings) == expected
    assert stack.ensure_topics(settings) == expected


def test_up_reuses_reachable_services_without_managing_them(settings: Settings, tmp_path: Path) -> None:
    kafka_port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    redis_port = int(settings.redis_url.rsplit(":", 1)[1].split("/")[0])
    other = _settings(tmp_path / "other", kafka_port, redis_port)
    state = stack.up(other)
    for svc in (state.kafka, state.redis):
        assert svc.reachable and not svc.managed_by_us and not svc.started and svc.pid is None, svc
    assert not (other.run_dir / "kafka.pid").exists()
    assert stack.down(other) == []
    assert broker_answers(settings.kafka_bootstrap) and redis_answers(settings.redis_url)


def test_down_stops_ours_and_drops_stale_pid_files(settings: Settings) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    process.pid_path("ghost", settings).write_text(f"{gone.pid}\n")

    assert sorted(stack.down(settings)) == ["kafka", "redis"]
    state = stack.status(settings)
    for svc in (state.kafka, state.redis):
        assert not svc.reachable and not svc.managed_by_us and svc.pid is None, svc
    assert list(settings.run_dir.glob("*.pid")) == []
    assert stack.down(settings) == []


def test_restart_reuses_formatted_storage(settings: Settings) -> None:
    state = stack.up(settings)  # storage already formatted; controller gets a new free port
    try:
        assert state.kafka.started and state.kafka.reachable
        assert stack.ensure_topics(settings)[settings.clicks_topic] == PARTITIONS
    finally:
        assert sorted(stack.down(settings)) == ["kafka", "redis"]


def test_process_helpers(settings: Settings) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    pid = process.start_detached("sleeper", argv, settings, env={"STREAMREC_TEST": "1"})
    try:
        assert process.is_running("sleeper", settings) == pid
        assert process.start_detached("sleeper", argv, settings) == pid  # already running: no second one
        assert process.is_running("sleeper", settings, expect="kafka.Kafka") is None
        path = process.pid_path("sleeper", settings)
        mtime = path.stat().st_mtime
        os.utime(path, (1_000_000, 1_000_000))  # pid file older than the process: a reused pid
        assert process.is_running("sleeper", settings) is None
        os.utime(path, (mtime, mtime))
        assert process.stop("sleeper", settings, timeout_s=10) is True
        assert process.is_running("sleeper", settings) is None and not path.exists()
        assert process.stop("sleeper", settings) is False
    finally:
        if process.is_running("sleeper", settings):
            os.kill(pid, 9)
    with pytest.raises(TimeoutError, match="waiting for nothing"):
        process.wait_until(lambda: False, 0.3, "nothing", 0.05)


def test_missing_tools_give_install_hints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infra import kafka, redis_server

    s = _settings(tmp_path, free_port(), free_port())
    monkeypatch.setattr(redis_server.shutil, "which", lambda _name: None)
    with pytest.raises(redis_server.RedisSetupError, match="apt-get install -y redis-server"):
        redis_server.start(s)
    monkeypatch.setattr(kafka.shutil, "which", lambda _name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(kafka.KafkaSetupError, match="openjdk-17-jre-headless maven"):
        kafka.start(s)
    assert not s.run_dir.exists() or not list(s.run_dir.glob("*.pid"))
