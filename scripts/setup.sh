#!/usr/bin/env bash
# Install what streamrec needs on a fresh Debian/Ubuntu machine (idempotent, quick when done).
#
# System packages (apt-get, only those missing): redis-server, Java 17 + Maven (fetch and run the
# Kafka broker), wrk (load generator of `streamrec bench serve`), promtool (validates the monitoring
# config), Chromium + chromedriver (the browser test of the live page), python3-venv when the
# interpreter cannot make virtual environments (Debian and Ubuntu split it out).
#
# Python packages go into a project virtual environment, never into the interpreter's own
# site-packages: Debian's and Ubuntu's python3 are "externally managed" (PEP 668) and refuse pip.
#
#   PYTHON=python3.12 bash scripts/setup.sh    # which interpreter creates the venv (default python3)
#   STREAMREC_VENV=/path/to/venv ...           # where (default .venv in the repo)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${STREAMREC_VENV:-.venv}
STAMP="$VENV/.streamrec-installed"

say() { echo "setup: $*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  say "no '$PYTHON' on PATH: install Python 3.10 or newer (Debian/Ubuntu: apt-get install python3 python3-venv)"
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  say "$("$PYTHON" -V 2>&1) is too old: streamrec needs Python 3.10 or newer (PYTHON=python3.11 make ...)"
  exit 1
fi

# --- system packages ---------------------------------------------------------------------------
os_id=""
[ -r /etc/os-release ] && os_id=$(. /etc/os-release && echo "${ID:-}")
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ "$os_id" = debian ]; then
  # Debian packages Chromium itself; Ubuntu only ships it as a snap (see README: Tests).
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
fi
if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  # Debian/Ubuntu: the venv module's pip bootstrap is a separate package for the distribution's python3.
  need_apt+=("python3-venv")
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    say "installing ${need_apt[*]} with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    say "missing: ${need_apt[*]} — install them with your package manager (macOS: brew install redis openjdk@17 maven wrk prometheus)"
    exit 1
  fi
fi

# --- the project's virtual environment ---------------------------------------------------------
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  say "$VENV is broken (its interpreter moved or was removed): recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV with $("$PYTHON" -V 2>&1) ($(command -v "$PYTHON"))"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || ! "$VENV/bin/python" -c "import streamrec, pytest" >/dev/null 2>&1; then
  # uv (Astral's pip-compatible installer, itself a wheel from PyPI) downloads and installs in
  # parallel and caches unpacked wheels: a cold install takes a third of pip's time, a warm one
  # seconds. pip does the same job where uv cannot be installed.
  if "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv>=0.5" >/dev/null 2>&1; then
    say "installing streamrec and its dependencies into $VENV (uv pip install -e '.[dev]'; a minute or two the first time)"
    "$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python" -e ".[dev]"
  else
    say "installing streamrec and its dependencies into $VENV (pip install -e '.[dev]'; a few minutes the first time)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
  fi
  touch "$STAMP"
fi
say "ready: $("$VENV/bin/python" -V) in $VENV ($VENV/bin/streamrec --help)"
