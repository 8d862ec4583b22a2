"""`streamrec bench <name>`: one sub-command per benchmark module; heavy imports stay inside them."""

from __future__ import annotations

import typer

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks on this machine (loopback only); `--json` prints one JSON object as the last line.",
    no_args_is_help=True,
    add_completion=False,
)

# Each benchmark module registers its command on `bench_app` when imported (one line each):
# --- benchmark modules ---
from bench import features  # noqa: E402,F401
from bench import retrieval  # noqa: E402,F401
from bench import serve  # noqa: E402,F401
from bench import stream  # noqa: E402,F401
