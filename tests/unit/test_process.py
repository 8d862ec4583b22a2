"""Startup liveness of detached children: exact for our own children, /proc for others."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from infra import process


def test_a_running_child_has_not_exited_and_a_finished_one_has() -> None:
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: S603
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while not process.exited(dead.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.exited(dead.pid)
        assert process.exited(dead.pid), "a reaped child must stay exited"
        assert not process.exited(alive.pid)
    finally:
        alive.kill()
        alive.wait()


def test_a_process_that_is_not_our_child_is_judged_by_proc() -> None:
    assert not process.exited(os.getppid())


def test_redis_is_ours_while_it_rewrites_its_title(tmp_path) -> None:
    """redis-server clears and refills argv at startup; /proc then shows an empty command line."""
    import shutil

    import pytest

    from streamrec.settings import Settings

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    settings = Settings(data_dir=tmp_path)
    from infra.kafka import free_port

    argv = [binary, "--port", str(free_port()), "--bind", "127.0.0.1", "--save", "", "--logfile", ""]
    pid = process.start_detached("redis", argv, settings, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # a few thousand reads across the rewrite
            assert not process.exited(pid)
            assert process.is_running("redis", settings, expect="redis-server") == pid
    finally:
        assert process.stop("redis", settings, expect="redis-server")


def test_children_do_not_inherit_a_prometheus_multiprocess_dir(tmp_path, monkeypatch) -> None:
    """`import feast` sets these process-wide; an API and a worker started from such a process
    would otherwise share one metrics folder and sum each other's metrics."""
    from streamrec.settings import Settings

    settings = Settings(data_dir=tmp_path)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "feast"))
    monkeypatch.setenv("PROMETHEUS_MULTIPROCESS_DIR", str(tmp_path / "feast"))
    out = tmp_path / "env.txt"
    code = ("import os, sys; open(sys.argv[1], 'w').write(repr([os.environ.get('PROMETHEUS_MULTIPROC_DIR'), "
            "os.environ.get('PROMETHEUS_MULTIPROCESS_DIR'), os.environ.get('KEPT')]))")
    process.start_detached("envprobe", [sys.executable, "-c", code, str(out)], settings, env={"KEPT": "yes"})
    deadline = time.monotonic() + 20
    while (not out.exists() or not out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text() == repr([None, None, "yes"])


def test_free_port_never_hands_out_the_same_port_twice():
    # CI once started a broker with PLAINTEXT and CONTROLLER on one port: two calls, same answer.
    from infra.kafka import free_port

    ports = [free_port(low=20_000, high=20_999) for _ in range(100)]  # 99 % collide without the guard
    assert len(set(ports)) == len(ports)
