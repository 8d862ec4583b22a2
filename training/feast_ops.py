"""Drive the Feast CLI on streamrec's feature repo (apply, materialize) with streamrec's settings.

Feast stays visible: these run `feast -c feature_repo ...` as a subprocess, exactly the command a
user could type after `eval "$(streamrec env)"`, and print it first.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone

from streamrec.settings import Settings


def feast_argv(settings: Settings, args: list[str]) -> list[str]:
    """`streamrec feast materialize` → materialize-incremental up to now; anything else verbatim."""
    if args[:1] == ["materialize"] and len(args) == 1:
        args = ["materialize-incremental", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")]
    executable = os.path.join(os.path.dirname(sys.executable), "feast")
    if not os.path.exists(executable):
        executable = "feast"
    return [executable, "-c", str(settings.feature_repo), *args]


def feast_command(settings: Settings, args: list[str], *, check: bool = False, to_stderr: bool = False) -> int:
    """Run the Feast CLI with the settings' environment; `to_stderr` when called as a step of a
    command whose stdout is reserved (e.g. a --json line)."""
    argv = feast_argv(settings, args or ["--help"])
    env = {**os.environ, **settings.feast_env()}
    print("$ " + " ".join(f"{k}={v}" for k, v in settings.feast_env().items()) + " "
          + shlex.join(["feast", *argv[1:]]), file=sys.stderr, flush=True)
    completed = subprocess.run(argv, env=env, check=False, stdout=sys.stderr if to_stderr else None)
    if check and completed.returncode != 0:
        raise RuntimeError(f"feast {' '.join(args)} failed with exit code {completed.returncode}")
    return completed.returncode


def apply_and_materialize(settings: Settings, *, apply: bool = True) -> None:
    """Register the repo's definitions and load the batch features into the online store;
    `apply=False` when this model's training already ran `feast apply` (each CLI run costs the
    ~5 s of importing Feast)."""
    if apply:
        feast_command(settings, ["apply"], check=True, to_stderr=True)
    feast_command(settings, ["materialize"], check=True, to_stderr=True)
