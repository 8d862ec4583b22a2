"""`streamrec up/down/status`: the local stack (Kafka, Redis) plus the worker/API pid files.

`up` reuses whatever already answers at the configured addresses and starts only what is missing;
`down` stops only processes streamrec itself started (pid files in run_dir), never someone else's.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra import kafka, process, redis_server
from streamrec.settings import Settings

log = logging.getLogger(__name__)

APPS = ("api", "worker")  # stopped first by `down`: they depend on Kafka and Redis


@dataclass(frozen=True)
class ServiceStatus:
    """One service as seen now: where it is, whether it answers, and whether it is ours."""

    name: str
    address: str
    reachable: bool
    managed_by_us: bool
    pid: int | None = None
    log: Path | None = None
    started: bool = False  # started by the call that produced this status


@dataclass(frozen=True)
class StackStatus:
    kafka: ServiceStatus
    redis: ServiceStatus
    apps: tuple[ServiceStatus, ...] = field(default_factory=tuple)

    @property
    def services(self) -> list[ServiceStatus]:
        return [self.kafka, self.redis, *self.apps]

    @property
    def ready(self) -> bool:
        """Kafka and Redis both answer."""
        return self.kafka.reachable and self.redis.reachable

    def to_dict(self) -> dict[str, Any]:
        def one(s: ServiceStatus) -> dict[str, Any]:
            d = asdict(s)
            d["log"] = str(s.log) if s.log else None
            return d

        return {s.name: one(s) for s in self.services}


def _log_if_ours(name: str, settings: Settings, pid: int | None) -> Path | None:
    return process.log_path(name, settings) if pid is not None else None


def _kafka_status(settings: Settings, started: bool = False) -> ServiceStatus:
    pid = kafka.managed_pid(settings)
    return ServiceStatus("kafka", settings.kafka_bootstrap, kafka.broker_answers(settings.kafka_bootstrap),
                         pid is not None, pid, _log_if_ours("kafka", settings, pid), started)


def _redis_status(settings: Settings, started: bool = False) -> ServiceStatus:
    pid = redis_server.managed_pid(settings)
    return ServiceStatus("redis", settings.redis_address, redis_server.answers(settings.redis_url),
                         pid is not None, pid, _log_if_ours("redis", settings, pid), started)


def _app_status(settings: Settings) -> tuple[ServiceStatus, ...]:
    """Worker and API: reachable = their port accepts connections; ours = a live pid file."""
    api_host = "127.0.0.1" if settings.api_host in {"0.0.0.0", "::", ""} else settings.api_host  # noqa: S104
    ports = {"worker": ("127.0.0.1", settings.worker_web_port), "api": (api_host, settings.api_port)}
    out = []
    for name, (host, port) in ports.items():
        pid = process.is_running(name, settings)
        out.append(ServiceStatus(name, f"{host}:{port}", kafka.port_open(host, port, 0.3), pid is not None,
                                 pid, _log_if_ours(name, settings, pid)))
    return tuple(out)


def status(settings: Settings) -> StackStatus:
    """Current state, without starting or stopping anything."""
    return StackStatus(_kafka_status(settings), _redis_status(settings), _app_status(settings))


def up(settings: Settings) -> StackStatus:
    """Make Kafka and Redis answer: reuse reachable ones, start ours otherwise. Idempotent.

    Raises kafka.KafkaSetupError / redis_server.RedisSetupError with what to install or fix.
    """
    redis_started = False
    if not redis_server.answers(settings.redis_url):
        if redis_server.managed_pid(settings) is None:
            redis_server.start(settings)
            redis_started = True
        else:  # ours, still starting: give it the same bounded wait
            process.wait_until(lambda: redis_server.answers(settings.redis_url, 0.5),
                               min(settings.start_timeout_s, 30.0), f"Redis at {settings.redis_address}")
    kafka_started = False
    if not kafka.broker_answers(settings.kafka_bootstrap):
        pid = kafka.managed_pid(settings)
        if pid is None:
            kafka.start(settings)
            kafka_started = True
        else:
            kafka.wait_ready(settings, pid)
    return StackStatus(_kafka_status(settings, kafka_started), _redis_status(settings, redis_started),
                       _app_status(settings))


def down(settings: Settings) -> list[str]:
    """Stop every process streamrec started (API, worker, others, then Kafka, then Redis).

    Only live processes recorded in run_dir pid files are signalled; stale pid files are removed.
    """
    expect = {"kafka": kafka.MAIN_CLASS, "redis": redis_server.EXPECT}
    names = process.pid_names(settings)
    order = [n for n in APPS if n in names]
    order += [n for n in names if n not in order and n not in expect]
    order += [n for n in ("kafka", "redis") if n in names]
    stopped = []
    for name in order:
        timeout = 30.0 if name == "kafka" else 15.0
        if process.stop(name, settings, timeout_s=timeout, expect=expect.get(name)):
            stopped.append(name)
    return stopped


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create the clicks and dead-letter topics if missing; returns {topic: partitions}."""
    return kafka.ensure_topics(settings)


def render(state: StackStatus):  # -> rich.table.Table
    """A rich table of the stack, for the CLI."""
    from rich.table import Table

    table = Table(title="streamrec stack")
    for col in ("service", "address", "reachable", "started by", "pid", "log"):
        table.add_column(col)
    for s in state.services:
        table.add_row(
            s.name,
            s.address,
            "[green]yes[/green]" if s.reachable else "[red]no[/red]",
            "streamrec" + (" (just now)" if s.started else "") if s.managed_by_us else "-",
            str(s.pid) if s.pid else "-",
            str(s.log) if s.log else "-",
        )
    return table
