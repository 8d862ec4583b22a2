"""`streamrec models`: list, promote, roll back, retire and route model versions, and write a
popularity baseline (the registry's CLI).

Every running API process polls the models folder (STREAMREC_MODEL_POLL_S) and swaps to what these
commands write in the background, without a restart.
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from streamrec.model_registry import POLICIES, ModelRegistry, RegistryError, routing_from_args
from streamrec.settings import get_settings

models_app = typer.Typer(
    help="Model versions: list them with their offline reports, promote, roll back, retire, route traffic.",
    no_args_is_help=True,
)
console = Console(stderr=True)


def _registry() -> ModelRegistry:
    return ModelRegistry(get_settings().models_dir)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code=2)


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gate(gate: dict | None, triggers: list | None) -> str:
    if not gate:
        return "-"
    verdict = "passed" if gate["passed"] else "rejected"
    return (f"{verdict}: {gate['metric']} {gate['candidate_score']:.2f} vs {gate['champion_score']:.2f} "
            f"({gate['cases']} cases; {', '.join(triggers or [])})")


@models_app.command("list")
def list_versions(as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object).")] = False) -> None:
    """Every version with its status (champion / arm / candidate / retired) and offline report."""
    registry = _registry()
    versions = registry.versions()
    if as_json:
        print(json.dumps({"champion": registry.champion(), "routing": registry.routing().to_dict(),
                          "versions": [v.to_dict() for v in versions]}))
        return
    if not versions:
        console.print(f"no model versions in {registry.models_dir}: run `streamrec train` first")
        return
    table = Table(title=f"model versions in {registry.models_dir}")
    for column in ("version", "status", "created", "dataset", "data window", "HR@20", "MRR@20", "training",
                   "made by", "gate (fresh hold-out)"):
        table.add_column(column, justify="right" if column in ("HR@20", "MRR@20", "training") else "left")
    for v in versions:
        window = f"{v.data_first[:10]} … {(v.data_last or '')[:10]}" if v.data_first else "-"
        if v.data_first and v.synthetic_clock:
            window += " (synthetic clock)"
        style = "bold green" if v.status == "champion" else "dim" if v.status == "retired" else None
        table.add_row(v.version, v.status, (v.created or "-")[:16].replace("T", " "), v.dataset or "-", window,
                      _number(v.hr_at_20), _number(v.mrr_at_20),
                      "-" if v.training_s is None else f"{v.training_s:.0f}s", v.extra.get("made_by", "-"),
                      _gate(v.extra.get("gate"), v.extra.get("triggers")), style=style)
    out = Console()
    (out if out.is_terminal else Console(width=160)).print(table)  # piped: do not squeeze it to 80 columns
    routing = registry.routing()
    if routing.policy != "single":
        shares = ", ".join(f"{name} {share:.0%}" for name, share in
                           zip([registry.champion(), *routing.arms], routing.shares)) if routing.policy == "ab" else ""
        console.print(f"routing: {routing.policy}, arms {', '.join(routing.arms)}" + (f" ({shares})" if shares else ""))


@models_app.command()
def promote(version: Annotated[str, typer.Argument(help="The version to serve (see `streamrec models list`).")]) -> None:
    """Make VERSION the champion; running APIs load it in the background and swap to it."""
    try:
        previous = _registry().promote(version)
    except RegistryError as exc:
        _fail(str(exc))
    if previous == version:
        console.print(f"{version} is already the champion")
    else:
        console.print(f"champion: [bold]{version}[/bold] (was {previous or 'none'}); "
                      "`streamrec models rollback` returns to the previous one")


@models_app.command()
def rollback() -> None:
    """Return to the previous champion (from the models folder's HISTORY)."""
    registry = _registry()
    current = registry.champion()
    try:
        target = registry.rollback()
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"champion: [bold]{target}[/bold] (rolled back from {current})")


@models_app.command()
def retire(version: Annotated[str, typer.Argument(help="A version that is neither the champion nor an arm.")]) -> None:
    """Mark VERSION retired: it can no longer be promoted or routed to (its files stay)."""
    try:
        _registry().retire(version)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"{version} retired")


@models_app.command()
def route(
    policy: Annotated[str, typer.Argument(help=f"One of {', '.join(POLICIES)}.")],
    arm: Annotated[Optional[list[str]], typer.Option(
        "--arm", help="A version besides the champion that takes part (repeat for several).")] = None,
    weight: Annotated[Optional[list[float]], typer.Option(
        "--weight", help="ab only: traffic weight per version, the champion's first, then each --arm's "
        "(default equal).")] = None,
) -> None:
    """Set the routing config every API process loads: single (the champion only), ab (fixed split), shadow (one arm scores off the hot path) or bandit (Thompson sampling over the arms' attributed reward)."""
    registry = _registry()
    try:
        config = registry.set_routing(routing_from_args(policy, arm or [], weight))
    except RegistryError as exc:
        _fail(str(exc))
    arms = f" with {', '.join(config.arms)}" if config.arms else ""
    console.print(f"routing: {config.policy} (champion {registry.champion()}{arms}), experiment {config.experiment}: "
                  "its arms' online counters start at zero")


@models_app.command()
def baseline(
    source: Annotated[Optional[str], typer.Option("--from", help="The version whose candidates it ranks "
                                                   "(default: the champion).")] = None,
) -> None:
    """Write a popularity baseline beside a version: the same candidates, ranked by training
    popularity alone (a control arm: `streamrec models route ab --arm <it>`)."""
    from candidates.bundle import derive_popularity_baseline

    registry = _registry()
    source = source or registry.champion()
    if source is None or not registry.exists(source):
        _fail(f"no version {source!r}: see `streamrec models list`")
    target = f"{source}-popularity"
    if registry.exists(target):
        _fail(f"{target} exists already")
    derive_popularity_baseline(registry.models_dir / source, registry.models_dir / target)
    console.print(f"model version [bold]{target}[/bold] written: route to it with "
                  f"`streamrec models route ab --arm {target}` or `... bandit --arm {target}`")
