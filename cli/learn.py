"""`streamrec learn` (continual learning from the stream) and `streamrec experiment continual` (its proof)."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from streamrec.settings import get_settings

console = Console(stderr=True)
experiment_app = typer.Typer(help="Experiments that prove a claim end to end, with figures and plots.",
                             no_args_is_help=True)


def learn(
    once: Annotated[bool, typer.Option(help="One check (and the version it triggers), then exit.")] = False,
    max_seconds: Annotated[Optional[float], typer.Option(min=1, help="Stop after this long (default: run until "
                                                          "SIGTERM/SIGINT).")] = None,
) -> None:
    """Produce new model versions from the archived stream by themselves: triggers (schedule, volume,
    drift, new items), warm-started training, a gate on the freshest clicks, promotion through the registry."""
    import time

    from prometheus_client import start_http_server

    from streamrec.archive import read_archived_clicks
    from training.drift_metrics import DriftGauges
    from training.learn import ArmRewards, DriftMonitor, Learner

    settings = get_settings()

    def read(since: float | None):
        clicks = read_archived_clicks(settings, since=datetime.fromtimestamp(since, timezone.utc) if since else None)
        return clicks if since is None else clicks.subset_rows(clicks.timestamps > since)

    if settings.learn_metrics_port:
        start_http_server(settings.learn_metrics_port, addr=settings.worker_web_host)  # compose: 0.0.0.0
    learner = Learner(settings, read, drift=DriftMonitor(ArmRewards(settings), DriftGauges()),
                      log=lambda line: console.print(line, markup=False, highlight=False))
    stopping = {"now": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.update(now=True))
    deadline = time.monotonic() + max_seconds if max_seconds else None
    console.print(f"learn: checking {settings.archive_path} every {settings.learn_check_s:g}s "
                  f"(models in {settings.models_dir})")
    learner.run(max_checks=1 if once else None,
                stop=lambda: stopping["now"] or (deadline is not None and time.monotonic() > deadline))


@experiment_app.command()
def continual(
    dataset: Annotated[Path, typer.Option(help="A dataset whose training sessions are in time order "
                                          "(e.g. ../shared/data/diginetica_srgnn).")],
    initial_share: Annotated[float, typer.Option(min=0.05, max=0.95, help="Share of sessions the first version "
                                                  "trains on.")] = 0.4,
    slices: Annotated[int, typer.Option(min=1, help="Consecutive slices the rest is cut into.")] = 3,
    checks_per_slice: Annotated[int, typer.Option(min=1, help="Learner checks while a slice streams in.")] = 10,
    slice_cases: Annotated[int, typer.Option(min=100, help="Next-item cases scored per slice.")] = 5000,
    test_cases: Annotated[Optional[int], typer.Option(min=1, help="Only the first N test cases (default all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the figures.")] = False,
) -> None:
    """Frozen first model vs continual learning vs full retraining on the same slices and test set (HR@20 per
    slice plotted; the learner runs on for its new-items delay after the stream, before the test), CPU
    time, drift on a shift and on a stationary replay, new items' delay, and what item exploration
    costs and adds on the test set (the continual champion with and without its slot)."""
    from evaluation.continual import run

    report = run(get_settings(), dataset, initial_share=initial_share, slices=slices,
                 checks_per_slice=checks_per_slice, slice_cases=slice_cases, test_cases=test_cases,
                 log=lambda line: console.print(line, markup=False, highlight=False))
    console.print(f"plot: {report['plot']}")
    if as_json:
        report.pop("checks", None)
        print(json.dumps(report))
