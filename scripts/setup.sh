#!/usr/bin/env bash
# Install what streamrec needs on a fresh Debian/Ubuntu machine (idempotent, quick when done):
# redis-server, Java 17 + Maven (to fetch and run the Kafka broker), wrk (HTTP load generator for
# `streamrec bench serve`), and the Python package.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)  # load generator of `streamrec bench serve`
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing ${need_apt[*]} with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} — install them with your package manager (macOS: brew install redis openjdk@17 maven)" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import streamrec, pytest" >/dev/null 2>&1 || [ pyproject.toml -nt .streamrec/.installed ]; then
  echo "installing streamrec (pip install -e '.[dev]')" >&2
  "$PYTHON" -m pip install -q --disable-pip-version-check -e ".[dev]"
  mkdir -p .streamrec && touch .streamrec/.installed
fi
