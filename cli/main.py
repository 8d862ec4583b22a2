"""The `streamrec` command: thin entry points; the work lives in each role's package.

Heavy imports (feast, faiss, implicit, faust) happen inside the commands that need them, so
`streamrec --help` and `streamrec status` answer at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from streamrec.settings import Settings, get_settings

app = typer.Typer(
    name="streamrec",
    help="Real-time, session-aware recommendations on Kafka, Redis and Feast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)

from bench.cli import bench_app  # noqa: E402 - sub-commands import their heavy modules lazily

app.add_typer(bench_app, name="bench")
from cli.models import models_app  # noqa: E402

app.add_typer(models_app, name="models")
from cli.report import report_app  # noqa: E402

app.add_typer(report_app, name="report")
from cli.simulate import simulate  # noqa: E402

app.command()(simulate)
from cli.learn import experiment_app, learn  # noqa: E402

app.command()(learn)
app.add_typer(experiment_app, name="experiment")


def _settings() -> Settings:
    return get_settings()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@app.command()
def up() -> None:
    """Start the local stack (Kafka broker in KRaft mode, Redis) on 127.0.0.1, or reuse running ones."""
    from infra import stack

    settings = _settings()
    try:
        status = stack.up(settings)
        stack.ensure_topics(settings)
    except Exception as exc:  # noqa: BLE001 - the message says what to fix
        _fail(str(exc))
    console.print(stack.render(status))


@app.command()
def down() -> None:
    """Stop what `streamrec up` (and the demo) started; leave everything else alone."""
    from infra import stack

    stopped = stack.down(_settings())
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing (nothing of ours was running)"))


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show whether Kafka, Redis, the worker and the API are reachable and who started them."""
    from infra import stack

    current = stack.status(_settings())
    if as_json:
        print(json.dumps(current.to_dict()))
    else:
        console.print(stack.render(current))


@app.command()
def env() -> None:
    """Print the exports the Feast CLI needs: `eval "$(streamrec env)"` then `feast -c feature_repo ...`."""
    for key, value in _settings().feast_env().items():
        print(f"export {key}={value}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def feast(ctx: typer.Context) -> None:
    """Run the Feast CLI on the feature repo with streamrec's settings: `streamrec feast apply`.

    `streamrec feast materialize` materializes everything up to now (materialize-incremental).
    Any other arguments go to `feast -c feature_repo` unchanged.
    """
    from training.feast_ops import feast_command

    sys.exit(feast_command(_settings(), list(ctx.args)))


@app.command()
def train(
    dataset: Annotated[Optional[Path], typer.Option(help="Dataset folder or file; synthetic sessions if omitted.")] = None,
    apply: Annotated[bool, typer.Option(help="Also run feast apply + materialize afterwards.")] = True,
    promote: Annotated[bool, typer.Option(help="Make the new version the champion (--no-promote: write it beside "
                                          "the champion, leave the batch sources and Feast alone).")] = True,
) -> None:
    """Train item embeddings, fallbacks and the FAISS index; write Feast batch sources."""
    from training.feast_ops import apply_and_materialize
    from training.pipeline import train as run_training

    settings = _settings()
    artifacts = run_training(settings, dataset, promote=promote)
    if not promote:
        console.print(f"model version [bold]{artifacts.version}[/bold] written beside the champion; serve it with "
                      f"`streamrec models promote {artifacts.version}` (or route to it: `streamrec models route ab "
                      f"--arm {artifacts.version}`)")
        return
    if apply:
        apply_and_materialize(settings)
    console.print(f"model version [bold]{artifacts.version}[/bold] is current")


@app.command()
def evaluate(
    dataset: Annotated[Path, typer.Option(help="SR-GNN folder (train_sessions + test_pairs) or YooChoose-style folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the figures.")] = False,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N test cases (default: all).")] = None,
    exclude_seen: Annotated[Optional[bool], typer.Option(
        "--exclude-seen/--keep-seen",
        help="Leave out / keep the prefix's items; default: what the API does by default (both are reported).")] = None,
    retrain: Annotated[bool, typer.Option(help="Train from scratch first (else reuse the last evaluation model).")] = True,
    explore_strength: Annotated[Optional[float], typer.Option(
        min=0, max=1, help="Exploration slot's probability (default: STREAMREC_EXPLORE_STRENGTH); when not 0 the "
        "model also runs without it on the same cases, and the report's `exploration` compares them.")] = None,
) -> None:
    """Train on the training data, then HR/MRR/NDCG@20 over every test case, against baselines, with plots."""
    from evaluation.evaluate import evaluate as run_evaluation

    report = run_evaluation(_settings(), dataset, limit=limit, exclude_seen=exclude_seen, train_model=retrain,
                            explore_strength=explore_strength)
    if as_json:
        report.pop("curves", None)
        print(json.dumps(report))


@app.command()
def index(
    target_recall: Annotated[float, typer.Option(help="recall@100 against exact search to reach.")] = 0.95,
) -> None:
    """(Re)build the FAISS index of the current model version and report its measured recall."""
    from candidates.index import build_index, save_index
    from streamrec.artifacts import load_current

    artifacts = load_current(_settings().models_dir)
    built, info = build_index(artifacts.item_embeddings, artifacts.item_ids, target_recall=target_recall)
    save_index(built, info, artifacts.path)
    console.print(info)


@app.command()
def stream(
    loglevel: Annotated[str, typer.Option(help="Worker log level.")] = "WARNING",
) -> None:
    """Run the Faust worker: clicks topic → streaming features in the Feast online store."""
    from streaming.app import run_worker

    sys.argv = [sys.argv[0], "worker"]  # Faust parses argv itself
    run_worker(_settings(), loglevel=loglevel)


@app.command()
def archive(
    max_seconds: Annotated[Optional[float], typer.Option(
        min=0, help="Stop after this long (default: run until SIGTERM / Ctrl-C).")] = None,
) -> None:
    """Archive the clicks and impressions topics into the offline store: parquet under
    STREAMREC_ARCHIVE_DIR (default data_dir/archive)/<clicks|impressions>/date=YYYY-MM-DD/hour=HH/,
    files named by partition and offset range, read by Feast (`archived_clicks` view) and training.

    Exactly once in effect: a restart resumes after the highest archived offset of each partition
    (no Kafka commits), so a kill neither loses nor duplicates rows. Malformed records are skipped
    and counted. Run one archiver per archive folder (a lock enforces it).
    """
    from streaming.archive import run_archiver

    try:
        run_archiver(_settings(), max_seconds=max_seconds)
    except RuntimeError as exc:
        _fail(str(exc))


@app.command()
def produce(
    dataset: Annotated[Optional[Path], typer.Option(help="Dataset to replay; synthetic sessions if omitted.")] = None,
    events: Annotated[int, typer.Option(min=1, help="How many events to send.")] = 10_000,
    rate: Annotated[Optional[float], typer.Option(help="Events per second (default: as fast as possible).")] = None,
    speedup: Annotated[Optional[float], typer.Option(help="Replay at the dataset's own pace times this.")] = None,
    session_prefix: Annotated[str, typer.Option(help="Prefix for session ids, to keep runs apart.")] = "",
    bad_fraction: Annotated[float, typer.Option(min=0, max=1, help="Share of deliberately malformed events.")] = 0.0,
) -> None:
    """Replay a dataset's sessions (re-timed to now) or synthetic sessions into the clicks topic."""
    from streaming.producer import ReplayOptions, replay

    try:
        result = replay(_settings(), ReplayOptions(dataset=dataset, events=events, rate=rate, speedup=speedup,
                                                   session_prefix=session_prefix, bad_fraction=bad_fraction))
    except RuntimeError as exc:
        _fail(str(exc))
    console.print(f"sent {result.sent} events ({result.malformed} malformed) in {result.seconds:.1f}s")


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default STREAMREC_API_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default STREAMREC_API_PORT).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        min=1, help="Worker processes, one per core to use (default STREAMREC_API_WORKERS).")] = None,
) -> None:
    """Run the REST API (POST /recommend, POST /events, GET /items, /health, /metrics, /ops/summary) and the live page (GET /)."""
    import uvicorn

    settings = _settings()
    host, port, workers = host or settings.api_host, port or settings.api_port, workers or settings.api_workers
    if workers > 1:
        from serving.metrics import use_multiprocess_dir

        use_multiprocess_dir(settings.run_dir / f"api-metrics-{port}")
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, loop="uvloop")


@app.command()
def demo(
    dataset: Annotated[Optional[Path], typer.Option(help="Dataset folder; synthetic sessions if omitted.")] = None,
    events: Annotated[int, typer.Option(min=100, help="Events to replay through Kafka.")] = 5000,
    rate: Annotated[float, typer.Option(help="Replay rate, events per second.")] = 1000.0,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the figures.")] = False,
    warmup_events: Annotated[int, typer.Option(min=0, help="Unmeasured events first (reported apart).")] = 2000,
    keep_running: Annotated[bool, typer.Option(help="Leave the stack, worker and API running afterwards.")] = False,
) -> None:
    """The whole system end to end: up (while a small model trains), feast materialize, worker, API,
    a first live recommendation, replay through Kafka, report."""
    from cli.demo import DemoOptions, run_demo

    report = run_demo(_settings(), DemoOptions(dataset=dataset, events=events, rate=rate,
                                                    warmup_events=warmup_events, keep_running=keep_running))
    if as_json:
        print(json.dumps(report))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
