"""`streamrec report`: reports on the running system (`online`: the model versions' live figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamrec.settings import get_settings

report_app = typer.Typer(help="Reports on the running system: `online` for the model versions' live figures.",
                         no_args_is_help=True)
console = Console(stderr=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@report_app.command()
def online(
    experiment: Annotated[Optional[str], typer.Option(
        help="The experiment (routing config) to report on; default: the experiment of the newest impression.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for the plots; default: <data dir>/reports/online-<experiment>/.")] = None,
    session_prefix: Annotated[str, typer.Option(
        help="Only the sessions whose id starts with this (e.g. one simulation run's).")] = "",
    buckets: Annotated[int, typer.Option(min=1, max=1000, help="Traffic share over time: this many buckets of "
                                         "equal numbers of impressions.")] = 20,
    timeout: Annotated[float, typer.Option(min=1, help="Stop reading the impressions topic after this many "
                                           "seconds (the report then says it is incomplete).")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object (the last line "
                                          "of stdout).")] = False,
) -> None:
    """Each model version's live figures from the impressions topic and the worker's reward log.

    Per arm: served impressions, clicked impressions, CTR with its Wilson 95% interval, MRR of the
    clicked ranks, traffic share, and IPS / SNIPS estimates of its CTR had it served every request
    (from the logged propensities); shadow arms apart (their lists' hits, beside the champion's CTR
    on the same requests). Writes traffic_share.png, ctr.png and cumulative_reward.png to --out.
    """
    from evaluation.online_report import ReportError, run

    settings = get_settings()
    with Progress(TextColumn("reading impressions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("read", total=None)
        try:
            report = run(settings, experiment=experiment, out=out, session_prefix=session_prefix, buckets=buckets,
                         timeout_s=timeout, progress=lambda done, total: progress.update(task, completed=done,
                                                                                         total=total))
        except ReportError as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(code=1) from None
    if not report["read"]["complete"]:
        console.print(f"[yellow]warning:[/yellow] stopped reading {report['read']['topic']} after {timeout:.0f} s "
                      f"({report['read']['records']} records): the figures cover only those; raise --timeout")
    if as_json:
        print(json.dumps(report))
        return
    render(report)


def render(report: dict) -> None:
    out = Console()
    out = out if out.is_terminal else Console(width=160)  # piped: do not squeeze the table to 80 columns
    title = (f"experiment {report['experiment']} ({', '.join(report['policies'])}): {report['impressions']} served "
             f"impressions, {report['clicked']} clicked, CTR {_pct(report['ctr'])}")
    table = Table(title=title)
    for column in ("arm", "share", "impressions", "clicked", "CTR", "95% interval", "MRR", "IPS", "SNIPS"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm, figures in report["arms"].items():
        interval = "-" if figures["ctr_low"] is None else f"{_pct(figures['ctr_low'])} … {_pct(figures['ctr_high'])}"
        table.add_row(arm, _pct(figures["share"]), str(figures["impressions"]), str(figures["clicked"]),
                      _pct(figures["ctr"]), interval, _num(figures["mrr"]), _pct(figures["ips"]), _pct(figures["snips"]))
    out.print(table)
    if report["shadow"]:
        shadow = Table(title="shadow arms (logged, not shown): hits = lists that held the clicked item")
        for column in ("arm", "lists", "hits", "hit rate", "95% interval", "served on the same requests: CTR"):
            shadow.add_column(column, justify="left" if column == "arm" else "right")
        for arm, figures in report["shadow"].items():
            same = figures["served_on_same_requests"]
            interval = "-" if figures["ctr_low"] is None else f"{_pct(figures['ctr_low'])} … {_pct(figures['ctr_high'])}"
            shadow.add_row(arm, str(figures["impressions"]), str(figures["hits"]), _pct(figures["ctr"]), interval,
                           f"{_pct(same['ctr'])} ({same['clicked']}/{same['impressions']}, {', '.join(same['versions'])})")
        out.print(shadow)
    others = {e: n for e, n in report["experiments"].items() if e != report["experiment"]}
    if others:
        console.print("other experiments in the log (--experiment): "
                      + ", ".join(f"{e} ({n} records)" for e, n in others.items()))
    if report["plots"]:
        console.print(f"plots in {report['out']}: " + ", ".join(Path(p).name for p in report["plots"].values()))
