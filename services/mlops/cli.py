"""The ``mlops`` command: one subcommand per stage, each exactly what its Kubernetes Job runs.

Each command only parses options, builds the settings and calls the stage's ``run``.
Heavy libraries (ludwig, torch, mlflow, evidently) are imported inside the stages.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from mlops.errors import MlopsError

app = typer.Typer(
    name="mlops",
    help="Daily stock prediction and paper trading: data prep, training, inference, "
    "serving, trading and monitoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

AsOf = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Run as of this trading day (YYYY-MM-DD); default: the latest day in the data.",
    ),
]
Output = Annotated[
    Path | None,
    typer.Option("--output", help="Also write the stage's result as JSON to this file."),
]


def _stage(name: str, fn: Callable[..., Any], output: Path | None, **kwargs: Any) -> Any:
    """Build settings and context, record the stage run, call the stage, report its result."""
    from mlops import log
    from mlops.context import open_context
    from mlops.runs import run_stage
    from mlops.settings import load_settings, parse_date

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    as_of: date | None = parse_date(kwargs.pop("as_of", None))
    ctx = open_context(settings)
    result = run_stage(ctx, name, fn, as_of, **kwargs)
    payload = asdict(result) if is_dataclass(result) and not isinstance(result, type) else result
    text = json.dumps(payload, default=str, indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    typer.echo(text)
    return result


@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the application database schema to the newest version."""
    from mlops import log
    from mlops.db import migrate
    from mlops.db.engine import make_engine, wait_for_database
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    engine = make_engine(settings.db_url)
    wait_for_database(engine, settings.database_connect_attempts)
    before = migrate.current_revision(engine)
    after = migrate.upgrade(engine)
    from mlops.db import roles  # issue 12: the per-purpose roles and their grants

    roles.apply_from_environment(engine)
    typer.echo(f"Database schema at revision {after} (was {before or 'empty'}).")


@app.command("data-prep")
def data_prep_cmd(
    as_of: AsOf = None,
    output: Output = None,
    finalize: Annotated[
        bool,
        typer.Option(
            "--finalize",
            help="Combine the parts of all DATA_PREP_SHARDS shards for --as-of into one dataset.",
        ),
    ] = False,
) -> None:
    """Load daily bars, check them, compute features and publish a versioned dataset."""
    from mlops.data_prep.stage import run

    _stage("data-prep", run, output, as_of=as_of, finalize=finalize)


@app.command("train")
def train_cmd(as_of: AsOf = None, output: Output = None) -> None:
    """Train the Ludwig model, track it in MLflow, register it and promote it if it wins."""
    from mlops.training.stage import run

    _stage("train", run, output, as_of=as_of)


@app.command("batch-infer")
def batch_infer_cmd(as_of: AsOf = None, output: Output = None) -> None:
    """Score every symbol's latest prepared day with the champion model."""
    from mlops.inference.stage import run

    _stage("batch-infer", run, output, as_of=as_of)


@app.command("serve")
def serve_cmd(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: SERVE_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: SERVE_PORT).")
    ] = None,
) -> None:
    """Serve the champion model over HTTP, swapping in a new champion when the alias moves."""
    from mlops import log
    from mlops.serving.app import serve
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    serve(settings, host=host, port=port)


@app.command("trade")
def trade_cmd(as_of: AsOf = None, output: Output = None) -> None:
    """Turn the latest predictions into orders with the threshold strategy."""
    from mlops.trading.stage import run

    _stage("trade", run, output, as_of=as_of)


@app.command("monitor")
def monitor_cmd(as_of: AsOf = None, output: Output = None) -> None:
    """Score past predictions against what came true, check drift, flag retraining."""
    from mlops.monitoring.stage import run

    _stage("monitor", run, output, as_of=as_of)


@app.command("demo")
def demo_cmd(
    days: Annotated[int, typer.Option(min=1, max=250, help="Trading days to replay.")] = 20,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Override the model config's epochs.")
    ] = None,
    home: Annotated[
        Path, typer.Option(help="Folder for the demo's store, databases and MLflow.")
    ] = Path("var/demo"),
    fresh: Annotated[bool, typer.Option(help="Start from an empty demo folder.")] = True,
    start: Annotated[
        str, typer.Option(help="First replayed trading day (YYYY-MM-DD).")
    ] = "2017-06-01",
    threshold: Annotated[
        float,
        typer.Option(min=0.0001, max=0.5, help="Trading threshold on the expected change."),
    ] = 0.001,
) -> None:
    """Replay the bundled sample as if live: train, then run the daily loop day by day."""
    from mlops.demo import run
    from mlops.settings import parse_date

    first = parse_date(start, "--start")
    assert first is not None
    run(days=days, epochs=epochs, home=home, fresh=fresh, start=first, threshold=threshold)


@app.command("daily")
def daily_cmd(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            envvar="DAILY_AS_OF",
            help="Trading day (YYYY-MM-DD); default: today in New York.",
        ),
    ] = None,
    rerun_failed: Annotated[
        bool, typer.Option("--rerun-failed", help="Delete and rerun a stage Job that failed.")
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option(envvar="POD_NAMESPACE", help="Namespace; default: the pod's own."),
    ] = None,
    templates_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="JOB_TEMPLATES_DIR",
            help="Folder of the job-<stage>.yaml templates; default: /etc/mlops/jobs.",
        ),
    ] = None,
    poll_seconds: Annotated[
        float,
        typer.Option(
            min=0.01, envvar="DAILY_POLL_SECONDS", help="Seconds between Job status checks."
        ),
    ] = 10.0,
) -> None:
    """Run the day's stages as Kubernetes Jobs in order, then train if the retrain rule says so."""
    from mlops import log
    from mlops.db.engine import make_engine, wait_for_database
    from mlops.db.migrate import require_current
    from mlops.orchestration import run_daily
    from mlops.pipeline import plan_retraining
    from mlops.settings import load_settings, parse_date

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    log.bind(stage="daily")
    engine = make_engine(settings.db_url)
    wait_for_database(engine, settings.database_connect_attempts)
    require_current(engine)
    runs = run_daily(
        parse_date(as_of),
        namespace=namespace,
        templates_dir=templates_dir,
        rerun_failed=rerun_failed,
        poll_seconds=poll_seconds,
        retrain=lambda day: plan_retraining(engine, day, settings.retrain_cooldown_days),
    )
    typer.echo(json.dumps([asdict(r) for r in runs], indent=2))


@app.command("dashboard")
def dashboard_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8050,
) -> None:
    """Serve the monitoring dashboard: quality, drift, equity and stage runs over time."""
    import uvicorn

    from mlops import log
    from mlops.context import open_context
    from mlops.dashboard import create_app
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    ctx = open_context(settings)
    uvicorn.run(create_app(ctx), host=host, port=port, log_config=None, access_log=False)


def main() -> None:
    """Entry point: MlopsError ends the command with one sentence and a non-zero exit."""
    try:
        app()
    except MlopsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
