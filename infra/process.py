"""Detached processes tracked by pid files in `settings.run_dir`, so `streamrec down` stops only what
streamrec started.

`<run_dir>/<name>.pid` holds just the pid (so `kill $(cat run/kafka.pid)` works) and
`<run_dir>/<name>.log` the process's stdout+stderr. A pid file only counts as ours while that pid is
alive and was created before the pid file was written: a reused pid (the process died, the OS handed
its number to something else) is newer than the file and is never signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from streamrec.settings import Settings

log = logging.getLogger(__name__)

_CLOCK_SLACK_S = 2.0  # tolerance between process start time and pid-file mtime


def pid_path(name: str, settings: Settings) -> Path:
    return settings.run_dir / f"{name}.pid"


def log_path(name: str, settings: Settings) -> Path:
    return settings.run_dir / f"{name}.log"


def pid_names(settings: Settings) -> list[str]:
    """Names of all pid files in run_dir (live or stale)."""
    if not settings.run_dir.is_dir():
        return []
    return sorted(p.stem for p in settings.run_dir.glob("*.pid"))


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.25
) -> None:
    """Poll `predicate` until true; raise TimeoutError naming `what` so nothing ever hangs silently.

    The predicate may raise to abort early (e.g. the process it waits for died).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def _reap(pid: int) -> None:
    """Collect our own exited child, so a zombie does not look alive."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def exited(pid: int) -> bool:
    """True once `pid`, a child this process started, has exited.

    Startup checks use this rather than `is_running`: a server may rewrite its command line (redis
    sets its process title by clearing and refilling argv), and a read of /proc in between would
    look like a death that never happened.
    """
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or already reaped): fall back to /proc
        return _proc_info(pid) is None
    return done == pid


def _proc_info(pid: int) -> tuple[float, str] | None:
    """(creation time as epoch seconds, command line) of a live, non-zombie process, else None."""
    _reap(pid)
    try:
        import psutil  # optional: portable, used when present

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time(), " ".join(proc.cmdline())
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - NoSuchProcess, AccessDenied, ...
        return None
    try:  # Linux without psutil
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            return None
        ticks = int(fields[19])
        btime = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        started = btime + ticks / os.sysconf("SC_CLK_TCK")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return started, cmdline.strip()
    except (OSError, ValueError, StopIteration):
        return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_running(name: str, settings: Settings, expect: str | None = None) -> int | None:
    """Pid of the live process streamrec started as `name`, else None.

    `expect`, if given, must occur in the process's command line (e.g. "kafka.Kafka").
    """
    path = pid_path(name, settings)
    pid = _read_pid(path)
    if pid is None or pid <= 0:
        return None
    info = _proc_info(pid)
    if info is None:
        return None
    created, cmdline = info
    try:
        written = path.stat().st_mtime
    except OSError:
        return None
    if created > written + _CLOCK_SLACK_S:
        return None  # pid was reused by a process started after our pid file
    # An empty command line is a process rewriting its title right now (redis does at startup):
    # the creation-time check above already rules out a reused pid.
    if expect is not None and cmdline and expect not in cmdline:
        return None
    return pid


# `import feast` (0.67, feast/metrics.py) points both at a temp dir of its own, process-wide. A child
# inheriting them would keep its Prometheus metrics in files that every other child (API, worker)
# shares, and /metrics would sum them all. `streamrec serve --workers N` sets its own dir.
NOT_INHERITED = frozenset({"PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"})


def start_detached(
    name: str,
    argv: Sequence[str],
    settings: Settings,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start `argv` in its own session (survives this process, Ctrl-C here does not reach it).

    Output goes to `<run_dir>/<name>.log` (appended), the pid to `<run_dir>/<name>.pid`. If `name`
    is already running, returns its pid and starts nothing.
    """
    existing = is_running(name, settings)
    if existing is not None:
        log.info("%s already running (pid %d)", name, existing)
        return existing
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    inherited = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    full_env = {**inherited, **(env or {})}
    with open(log_path(name, settings), "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(  # noqa: S603 - argv built by streamrec
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
        )
    path = pid_path(name, settings)
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(path)
    log.info("started %s (pid %d), log %s", name, proc.pid, log_path(name, settings))
    return proc.pid


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the whole process group when `pid` leads one (children, e.g. server workers, too)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(name: str, settings: Settings, timeout_s: float = 20.0, expect: str | None = None) -> bool:
    """SIGTERM the process streamrec started as `name`, SIGKILL after `timeout_s`; remove its pid file.

    Returns True if a live process was stopped; a stale pid file is removed quietly (False).
    """
    path = pid_path(name, settings)
    pid = is_running(name, settings, expect=expect)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    _signal(pid, signal.SIGTERM)
    try:
        wait_until(lambda: _proc_info(pid) is None, timeout_s, f"{name} (pid {pid}) to exit", 0.1)
    except TimeoutError:
        log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", name, pid, timeout_s)
        _signal(pid, signal.SIGKILL)
        try:
            wait_until(lambda: _proc_info(pid) is None, 5.0, f"{name} (pid {pid}) to die", 0.1)
        except TimeoutError:
            log.error("%s (pid %d) survived SIGKILL", name, pid)
    path.unlink(missing_ok=True)
    return True


def log_tail(name: str, settings: Settings, lines: int = 30) -> str:
    """Last lines of `<run_dir>/<name>.log` since its latest start, errors first, for error messages."""
    try:
        with open(log_path(name, settings), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256_000))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    text = text[text.rfind("\n=== ") + 1 :] if "\n=== " in text else text
    all_lines = text.splitlines()
    errors = [ln for ln in all_lines if " ERROR " in ln or " FATAL " in ln or ln.startswith("Exception")]
    tail = all_lines[-lines:]
    head = [ln for ln in errors[-3:] if ln not in tail]
    return "\n".join([*head, *(["..."] if head else []), *tail])
