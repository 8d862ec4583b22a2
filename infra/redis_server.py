"""Redis for the Feast online store: reuse one that answers PING, else start a local `redis-server`.

Ours is a cache, not a database: no RDB snapshots, no AOF; Feast can re-materialize it any time.
"""

from __future__ import annotations

import logging
import shutil
from urllib.parse import urlparse

from infra import process
from infra.kafka import is_local, port_open
from streamrec.settings import Settings

log = logging.getLogger(__name__)

NAME = "redis"
EXPECT = "redis-server"


class RedisSetupError(RuntimeError):
    """Redis cannot be provided; the message says what to install or fix."""


def address(settings: Settings) -> tuple[str, int]:
    url = urlparse(settings.redis_url)
    return url.hostname or "127.0.0.1", url.port or 6379


def answers(redis_url: str, timeout_s: float = 1.0) -> bool:
    """True if a Redis at `redis_url` answers PING within ~timeout_s."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - connection refused, auth, timeouts: all mean "not usable"
        return False
    finally:
        client.close()


def managed_pid(settings: Settings) -> int | None:
    """Pid of the redis-server streamrec started, if it is alive."""
    return process.is_running(NAME, settings, expect=EXPECT)


def start(settings: Settings) -> int:
    """Start redis-server on the URL's loopback host/port; wait (bounded) for PING."""
    host, port = address(settings)
    if not is_local(host):
        raise RedisSetupError(
            f"no Redis answers at {settings.redis_url}, and {host} is not a local address streamrec "
            "could start one on; start that Redis or set STREAMREC_REDIS_URL=redis://127.0.0.1:6379/0"
        )
    if port_open(host, port):
        raise RedisSetupError(
            f"something listens at {host}:{port} but does not answer PING (wrong password in "
            "STREAMREC_REDIS_URL?); free the port or point STREAMREC_REDIS_URL elsewhere"
        )
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisSetupError(
            "`redis-server` not found on PATH: install it, e.g. `apt-get install -y redis-server` "
            "(Debian/Ubuntu) or `brew install redis` (macOS) — or set STREAMREC_REDIS_URL to a running Redis"
        )
    workdir = settings.data_dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    bind = "127.0.0.1" if host in {"localhost", "0.0.0.0"} else host  # noqa: S104
    argv = [binary, "--port", str(port), "--bind", bind, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(workdir), "--logfile", ""]
    password = urlparse(settings.redis_url).password
    if password:
        argv += ["--requirepass", password]
    pid = process.start_detached(NAME, argv, settings, cwd=workdir)

    def ready() -> bool:
        if process.exited(pid):
            raise RedisSetupError(
                f"redis-server exited during startup; last lines of {process.log_path(NAME, settings)}:\n"
                + process.log_tail(NAME, settings)
            )
        return answers(settings.redis_url, 0.5)

    try:
        process.wait_until(ready, min(settings.start_timeout_s, 30.0), f"Redis at {host}:{port}", 0.1)
    except TimeoutError as exc:
        raise RedisSetupError(f"{exc}; see {process.log_path(NAME, settings)}") from exc
    return pid
