"""Shared output of every benchmark: latency summaries, a readable table, and one JSON last line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def latency_summary(seconds: Sequence[float], prefix: str = "") -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (rounded to µs) of per-operation durations in seconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    if len(values) == 0:
        return {f"{prefix}p50_ms": float("nan"), f"{prefix}p95_ms": float("nan"),
                f"{prefix}p99_ms": float("nan"), f"{prefix}max_ms": float("nan")}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {f"{prefix}p50_ms": round(float(p50), 3), f"{prefix}p95_ms": round(float(p95), 3),
            f"{prefix}p99_ms": round(float(p99), 3), f"{prefix}max_ms": round(float(values.max()), 3)}


def print_table(title: str, rows: Sequence[dict[str, object]]) -> None:
    """Rows of dicts as a rich table on stderr (stdout is kept for the JSON line)."""
    if not rows:
        return
    table = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(table)


@contextmanager
def wide_console(width: int) -> Iterator[None]:
    """Tables at least `width` columns wide: pipes and logs default to 80, too narrow to read."""
    saved = console.width
    console.width = max(saved, width)
    try:
        yield
    finally:
        console.width = saved


def emit_json(result: dict[str, object]) -> None:
    """The benchmark's result as one JSON object on the last line of stdout."""
    sys.stdout.write(json.dumps(result, default=float) + "\n")
    sys.stdout.flush()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return "" if value is None else str(value)
