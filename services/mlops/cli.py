"""The ``mlops`` command: one subcommand per stage, each exactly what its Kubernetes Job runs.

Each command only parses options, builds the settings and calls the stage's ``run``.
Heavy libraries (ludwig, torch, mlflow, evidently) are imported inside the stages.
"""

from __future__ import annotations

import hashlib
import json
import logging
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


AllowOlder = Annotated[
    bool,
    typer.Option(
        "--allow-older-dataset",
        help="With --as-of: use the newest dataset before that day when the day has none "
        "(default: fail, naming the day found).",
    ),
]


def _stage(
    name: str,
    fn: Callable[..., Any],
    output: Path | None,
    lease: Callable[[Any], str] | None = None,
    **kwargs: Any,
) -> Any:
    """Build settings and context, record the stage run, call the stage, report its result.

    The result goes to stdout as JSON, alone (logs go to stderr).
    """
    from mlops import log
    from mlops.context import open_context
    from mlops.runs import run_stage
    from mlops.settings import load_settings, parse_date

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    log.bind(stage=name)
    as_of: date | None = parse_date(kwargs.pop("as_of", None))
    ctx = open_context(settings)
    try:
        result = run_stage(ctx, name, fn, as_of, lease=lease(settings) if lease else "", **kwargs)
    except MlopsError as exc:
        # A stage that failed after doing its work (trade: orders not placed) attaches its
        # result: it is still printed, then the error ends the command.
        if getattr(exc, "result", None) is not None:
            _print_result(exc.result, output)  # type: ignore[attr-defined]
        raise
    _print_result(result, output)
    return result


def _print_result(result: Any, output: Path | None) -> None:
    payload = asdict(result) if is_dataclass(result) and not isinstance(result, type) else result
    text = json.dumps(payload, default=str, indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    typer.echo(text)


@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the application database schema to the newest version."""
    from mlops import log
    from mlops.context import database_engine
    from mlops.db import migrate
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    log.bind(stage="migrate")
    engine = database_engine(settings)
    before, after = migrate.upgrade_reporting(engine)
    from mlops.db import roles  # issue 12: the per-purpose roles and their grants

    roles.apply_from_environment(engine)
    roles.apply_mlflow_grants_from_environment()  # the backup reads MLflow's database too
    typer.echo(f"Database schema at revision {after} (was {before or 'empty'}).", err=True)
    typer.echo(json.dumps({"revision": after, "previous": before}, indent=2))


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

    def lease(settings: Any) -> str:  # shards of one day run side by side, each its own lease
        return (
            "finalize"
            if finalize
            else f"{settings.job_completion_index}-of-" + str(settings.data_prep_shards)
        )

    _stage("data-prep", run, output, lease=lease, as_of=as_of, finalize=finalize)


@app.command("train")
def train_cmd(
    as_of: AsOf = None,
    output: Output = None,
    allow_older: AllowOlder = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="The catalog model to train (MODEL_CONFIGS_DIR); default: MODEL_NAME."
        ),
    ] = None,
    all_models: Annotated[
        bool,
        typer.Option("--all", help="Train every catalog model that is not paused, one by one."),
    ] = False,
) -> None:
    """Train a Ludwig model, track it in MLflow, register it and promote it if it wins."""
    from mlops.errors import ConfigError
    from mlops.training.stage import run

    if model is not None and all_models:
        raise ConfigError("Give either --model NAME or --all to `mlops train`, not both.")
    if all_models:
        _stage("train", _train_all, output, as_of=as_of, allow_older_dataset=allow_older)
        return
    _stage("train", run, output, as_of=as_of, allow_older_dataset=allow_older, model=model)


def _train_all(ctx: Any, as_of: date | None = None, *, allow_older_dataset: bool = False) -> Any:
    """``mlops train --all``: every model's result under ``models``."""
    from mlops.training.stage import run_all

    results = run_all(ctx, as_of, allow_older_dataset=allow_older_dataset)
    return {"models": [asdict(r) for r in results]}


@app.command("batch-infer")
def batch_infer_cmd(
    as_of: AsOf = None, output: Output = None, allow_older: AllowOlder = False
) -> None:
    """Score every symbol's latest prepared day with the champion model."""
    from mlops.inference.stage import run

    _stage("batch-infer", run, output, as_of=as_of, allow_older_dataset=allow_older)


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
    from mlops.serving.server import serve
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    serve(settings, host=host, port=port)


@app.command("trade")
def trade_cmd(
    as_of: AsOf = None,
    output: Output = None,
    allow_older: AllowOlder = False,
    missed_day: Annotated[
        bool,
        typer.Option(
            "--missed-day",
            help="A past session run by `mlops daily --catch-up`: with a broker that has a "
            "clock (Alpaca), stale predictions are not traded and the run says so.",
        ),
    ] = False,
) -> None:
    """Turn the latest predictions into orders with the trading rule (TRADE_RULE)."""
    from mlops.trading.stage import run

    _stage(
        "trade", run, output, as_of=as_of, allow_older_dataset=allow_older, missed_day=missed_day
    )


trading_app = typer.Typer(
    help="The kill switch (halt, resume, status) and reconciliation with the broker.",
    no_args_is_help=True,
)
app.add_typer(trading_app, name="trading")


@trading_app.command("halt")
def trading_halt_cmd(
    reason: Annotated[str, typer.Option("--reason", help="Why; shown by every halted run.")] = "",
    flatten: Annotated[
        bool,
        typer.Option(
            "--flatten", help="Also close this system's positions with market sell orders."
        ),
    ] = False,
    record_only: Annotated[
        bool,
        typer.Option(
            "--record-only",
            help="Only record the halt (as the dashboard does, without broker credentials): "
            "the next `mlops trade` run cancels this system's open orders.",
        ),
    ] = False,
) -> None:
    """Halt trading: cancel this system's open orders at the broker (and with --flatten
    close its positions); `mlops trade` decides and sends nothing until `resume`."""
    from mlops.errors import ConfigError
    from mlops.model_admin import default_actor
    from mlops.trading.switch import set_halted

    if record_only and flatten:
        raise ConfigError("--flatten needs the broker: it cannot go with --record-only.")
    state = set_halted(
        _context(),
        True,
        reason,
        actor=default_actor("cli"),
        at_broker=not record_only,
        flatten=flatten,
    )
    typer.echo(json.dumps(state, indent=2, default=str))


@trading_app.command("resume")
def trading_resume_cmd(
    reason: Annotated[str, typer.Option("--reason", help="Why trading may go on.")] = "",
) -> None:
    """Resume trading after `mlops trading halt` (TRADING_HALTED=true still halts)."""
    from mlops.model_admin import default_actor
    from mlops.trading.switch import set_halted

    state = set_halted(_context(), False, reason, actor=default_actor("cli"))
    typer.echo(json.dumps(state, indent=2, default=str))


@trading_app.command("status")
def trading_status_cmd() -> None:
    """Whether trading is halted, by whom and why."""
    from mlops.trading.switch import status

    typer.echo(json.dumps(status(_context()), indent=2))


@trading_app.command("reconcile")
def trading_reconcile_cmd(output: Output = None) -> None:
    """Compare the book with the broker's positions and orders: adopt this system's orders
    the book lacks, list what it cannot explain (RECONCILE_STRICT=true: exit 5 then)."""
    from mlops.trading.brokers import make_broker
    from mlops.trading.reconcile import ReconciliationError, reconcile

    ctx = _context()
    broker = make_broker(ctx.settings, ctx.engine)
    account = broker.account_id()
    found = reconcile(ctx.engine, broker, account, ctx.settings)
    _print_result(found, output)
    if found.not_traded and ctx.settings.reconcile_strict:
        raise ReconciliationError(f"{found.sentence()} (RECONCILE_STRICT=true).")


def _context() -> Any:
    from mlops import log
    from mlops.context import open_context
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    return open_context(settings)


models_app = typer.Typer(
    help="The model registry: list the catalog's models and versions, promote, roll back, "
    "archive, pause or resume scheduled training, retrain now. Every action is audited.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
Reason = Annotated[str, typer.Option("--reason", help="Why; kept in the audit table.")]


def _admin(action: str, name: str, version: str = "") -> tuple[Any, Any, str]:
    """The context, the MLflow client and who acts: the signed-in user (``cli:<name>``)
    when DASHBOARD_USERS names users, else ``cli:<login>``."""
    from mlops.model_admin import signed_in_actor

    ctx = _context()
    actor = signed_in_actor(
        ctx.engine, ctx.settings, action, name, version, ask_password=_ask_password
    )
    return ctx, ctx.mlflow, actor


def _ask_password() -> str:
    """The password typed on a terminal (not echoed); none without a terminal."""
    if not sys.stdin.isatty():
        return ""
    return str(typer.prompt("Password", hide_input=True, err=True))


@models_app.command("list")
def models_list_cmd(
    output: Annotated[
        Path | None, typer.Option("--output", help="Also write the rows as JSON to this file.")
    ] = None,
    as_table: Annotated[
        bool, typer.Option("--table", help="Print a text table instead of the JSON rows.")
    ] = False,
) -> None:
    """Every version of every catalog model: status, lineage, holdout and live figures
    (JSON on stdout; --table for people)."""
    from mlops.contracts.catalog import model_names
    from mlops.model_admin import inventory, table

    ctx = _context()
    rows = inventory(
        ctx.mlflow, ctx.engine, model_names(ctx.settings), alias=ctx.settings.champion_alias
    )
    text = json.dumps([asdict(r) for r in rows], indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    typer.echo(table(rows) if as_table else text)


def _registry_action(action: str, name: str, version: str = "", **options: Any) -> None:
    """``mlops models ACTION``: the shared registry action; its audit row as JSON on
    stdout, its sentence on stderr."""
    from mlops.model_admin import perform

    ctx, client, actor = _admin(action, name, version)
    done = perform(client, ctx.engine, ctx.settings, action, name, version, actor=actor, **options)
    typer.echo(done.sentence(), err=True)
    typer.echo(json.dumps({**asdict(done), "sentence": done.sentence()}, default=str, indent=2))


@models_app.command("promote")
def models_promote_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; kept as a registry tag.")],
    force: Annotated[
        bool, typer.Option("--force", help="Promote even a version that loses to the naive.")
    ] = False,
) -> None:
    """Make VERSION the champion (refused when it loses to the naive forecast, unless --force)."""
    _registry_action("promote", name, version, reason=reason, force=force)


@models_app.command("rollback")
def models_rollback_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")], reason: Reason = ""
) -> None:
    """Point the champion alias back at the previous champion (the history is kept)."""
    _registry_action("rollback", name, reason=reason)


@models_app.command("archive")
def models_archive_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to archive (never the champion).")],
    reason: Reason = "",
) -> None:
    """Archive VERSION: never scored, promoted or rolled back to again."""
    _registry_action("archive", name, version, reason=reason)


@models_app.command("pause")
def models_pause_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")], reason: Reason = ""
) -> None:
    """Pause the model's scheduled training (`mlops daily`, the weekly CronJob, the demo)."""
    _registry_action("pause", name, reason=reason)


@models_app.command("resume")
def models_resume_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")], reason: Reason = ""
) -> None:
    """Resume the model's scheduled training."""
    _registry_action("resume", name, reason=reason)


@models_app.command("retrain")
def models_retrain_cmd(
    name: Annotated[str, typer.Argument(help="Catalog model name.")],
    as_of: AsOf = None,
    reason: Reason = "",
) -> None:
    """Train the model now: in the cluster a training Job, on a laptop here (TRAINING_RUNNER)."""
    from mlops.model_admin import REFUSALS, audited, record_refusal
    from mlops.orchestration import retrain_model
    from mlops.settings import parse_date

    ctx, _, actor = _admin("retrain", name)
    try:
        outcome = retrain_model(ctx, name, actor=actor, as_of=parse_date(as_of), reason=reason)
    except REFUSALS as exc:
        if not audited(exc):
            record_refusal(ctx.engine, "retrain", name, None, actor=actor, reason=str(exc))
        raise
    typer.echo(outcome.sentence(), err=True)
    payload = asdict(outcome) if is_dataclass(outcome) else {}
    typer.echo(json.dumps({**payload, "sentence": outcome.sentence()}, default=str, indent=2))


@app.command("backtest")
def backtest_cmd(
    model: Annotated[
        str,
        typer.Option(
            "--model", help="champion, a registered version number, or naive (tomorrow = today)."
        ),
    ] = "champion",
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="First decision day (YYYY-MM-DD); default: the session after the model's "
            "training data ends (for naive, a year of sessions before --to).",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Last day (YYYY-MM-DD), read from the newest dataset that reaches it; "
            "default: the newest dataset's last day.",
        ),
    ] = None,
    allow_in_sample: Annotated[
        bool,
        typer.Option(
            "--allow-in-sample",
            help="Let --from reach into the model's training data (default: refused); every "
            "output then counts the sessions in sample.",
        ),
    ] = False,
    walk_forward: Annotated[
        str | None,
        typer.Option(
            "--walk-forward",
            help="KEY or KEY:MODEL: trade the champions' predictions of that walk-forward "
            "(its run_key; default model MODEL_NAME) instead of --model, over its sessions.",
        ),
    ] = None,
    output: Output = None,
) -> None:
    """Walk the strategy forward over the prepared history, with costs, against benchmarks."""
    from mlops.settings import parse_date
    from mlops.trading.backtest import run

    first, last = parse_date(start, "--from"), parse_date(end, "--to")
    _stage(
        "backtest",
        run,
        output,
        model=model,
        walk_forward=walk_forward,
        start=first,
        end=last,
        allow_in_sample=allow_in_sample,
    )


@app.command("walk-forward")
def walk_forward_cmd(
    start: Annotated[str, typer.Option("--from", help="First decision session (YYYY-MM-DD).")],
    retrain_every: Annotated[
        int, typer.Option("--retrain-every", min=1, help="Sessions between retrain points.")
    ],
    end: Annotated[
        str | None,
        typer.Option("--to", help="Last session (YYYY-MM-DD); default: the dataset's last."),
    ] = None,
    window: Annotated[
        str,
        typer.Option(
            "--window", help="Training history: expanding, or rolling:SESSIONS (the last N)."
        ),
    ] = "expanding",
    models: Annotated[
        str | None,
        typer.Option("--models", help="Catalog models, comma-separated; default: all of them."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Retrain points trained side by side.")
    ] = 1,
    point: Annotated[
        int | None,
        typer.Option(
            "--point",
            min=0,
            help="Train only this retrain point (an Indexed Job's JOB_COMPLETION_INDEX); "
            "the pod that completes the set finalizes.",
        ),
    ] = None,
    finalize: Annotated[
        bool, typer.Option("--finalize", help="Combine the trained points; train nothing.")
    ] = False,
    plan_only: Annotated[
        bool,
        typer.Option(
            "--plan", help="Print the plan (its retrain points: the Indexed Job's completions)."
        ),
    ] = False,
    output: Output = None,
) -> None:
    """Replay the live system over history: retrain every N sessions as `mlops train`
    does, pick each period's champion with the promotion gate, trade the champions'
    predictions with the live strategy and costs, against naive and buy-and-hold."""
    from mlops.errors import ConfigError
    from mlops.settings import parse_date
    from mlops.walkforward.run import run

    first, last = parse_date(start, "--from"), parse_date(end, "--to")
    if point is not None and finalize:
        raise ConfigError("Give either --point or --finalize to `mlops walk-forward`, not both.")
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    # One lease per walk-forward (its options) and part: two walk-forwards never block
    # each other's points.
    options = hashlib.sha256(f"{start}|{end}|{retrain_every}|{window}|{models}".encode())
    part = "finalize" if finalize else ("local" if point is None else f"point-{point}")
    lease = f"{options.hexdigest()[:12]}:{part}"
    _stage(
        "walk-forward",
        run,
        output,
        lease=lambda _: lease,
        start=first,
        end=last,
        retrain_every=retrain_every,
        window=window,
        models=names,
        workers=workers,
        point=point,
        finalize=finalize,
        plan_only=plan_only,
    )


@app.command("monitor")
def monitor_cmd(as_of: AsOf = None, output: Output = None, allow_older: AllowOlder = False) -> None:
    """Score past predictions against what came true, check drift, flag retraining."""
    from mlops.monitoring.stage import run

    _stage("monitor", run, output, as_of=as_of, allow_older_dataset=allow_older)


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
    catch_up: Annotated[
        bool,
        typer.Option(
            "--catch-up",
            help="Run every session missed since the last complete day, in order, up to "
            "the day (at most DAILY_CATCH_UP_MAX_SESSIONS).",
        ),
    ] = False,
) -> None:
    """Run the day's stages as Kubernetes Jobs in order, then train if the retrain rule says so."""
    from mlops import log
    from mlops.context import database_engine
    from mlops.db.migrate import require_current
    from mlops.orchestration import market_today, record_scheduled_training, run_catch_up
    from mlops.pipeline import missed_sessions, plan_retraining
    from mlops.settings import load_settings, parse_date

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    log.bind(stage="daily")
    engine = database_engine(settings)
    require_current(engine)
    day = parse_date(as_of) or market_today()
    days = [day]
    if catch_up:
        days = missed_sessions(engine, day, settings.daily_catch_up_max_sessions)
        logging.getLogger("mlops.daily").info(
            "Catch-up: %d session(s) to run: %s",
            len(days),
            ", ".join(d.isoformat() for d in days) or "none",
        )
    runs = run_catch_up(
        days,
        namespace=namespace,
        templates_dir=templates_dir,
        rerun_failed=rerun_failed,
        poll_seconds=poll_seconds,
        retrain=lambda day: plan_retraining(engine, day, settings.retrain_cooldown_days),
        on_training=lambda job, reason: record_scheduled_training(engine, job, reason),
    )
    typer.echo(json.dumps([asdict(r) for r in runs], indent=2))


@app.command("backup")
def backup_cmd(
    dump_files: Annotated[
        list[str] | None,
        typer.Option(
            "--dump-file",
            help="Upload this dump (pg_dump --format=custom) of DATABASE_URL's database "
            "instead of running pg_dump; NAME=FILE (repeatable): another database's dump, "
            "kept under backups/NAME/ (MLflow's).",
        ),
    ] = None,
) -> None:
    """Back up the database to the object store (backups/), keeping BACKUP_RETENTION."""
    from mlops import log
    from mlops.backups import backup
    from mlops.context import database_engine
    from mlops.errors import ConfigError
    from mlops.settings import load_settings
    from mlops.store import open_store

    own: list[Path] = []
    others: dict[str, Path] = {}
    for item in dump_files or []:
        name, sep, file = item.partition("=")
        if not sep:
            own.append(Path(item))
        elif not name.strip() or "/" in name or not file:
            raise ConfigError(f"--dump-file {item!r} is neither FILE nor DATABASE=FILE.")
        else:
            others[name.strip()] = Path(file)
    if len(own) > 1:
        raise ConfigError("--dump-file names DATABASE_URL's dump more than once.")
    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    log.bind(stage="backup")
    engine = database_engine(settings)
    result = backup(settings, open_store(settings), engine, own[0] if own else None, others)
    _print_result(result, None)


@app.command("restore")
def restore_cmd(
    backup: Annotated[
        str, typer.Option("--backup", help="The backup's stamp (as in its key) or latest.")
    ] = "latest",
    database: Annotated[
        str | None,
        typer.Option(help="Whose backups: the database name (default: DATABASE_URL's)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Only fetch and check the dump into this file."),
    ] = None,
) -> None:
    """Restore a backup into the empty database of DATABASE_URL, then migrate it."""
    from mlops import log
    from mlops.backups import restore
    from mlops.context import database_engine
    from mlops.settings import load_settings
    from mlops.store import open_store

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    log.bind(stage="restore")
    engine = database_engine(settings, wait=output is None)
    result = restore(settings, open_store(settings), engine, backup, output, database)
    _print_result(result, None)


@app.command("dashboard")
def dashboard_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8050,
) -> None:
    """Serve the control plane: models, quality, drift, equity and runs over time, and
    buttons to promote, roll back, archive, pause, resume, retrain and halt trading
    (actions need a signed-in user of DASHBOARD_USERS, or the older DASHBOARD_TOKEN)."""
    from mlops.access import directory
    from mlops.dashboard.server import serve

    ctx = _context()
    directory(ctx.settings)  # unusable users or token stop here, with their sentence
    serve(ctx, host, port)


users_app = typer.Typer(
    help="The dashboard's and `mlops models`' named users (DASHBOARD_USERS).",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")


@users_app.command("hash")
def users_hash_cmd(
    name: Annotated[str, typer.Argument(help="The user's name (letters, digits, ._@-).")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")],
) -> None:
    """Make a DASHBOARD_USERS entry (name:role:hash) from a password read on stdin (one
    line) or typed on a terminal; the password itself is never printed."""
    from mlops.access import hash_entry

    if sys.stdin.isatty():
        password = str(
            typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
        )
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    entry = hash_entry(name, role, password)
    typer.echo(json.dumps({"name": name, "role": role, "entry": entry}, indent=2))


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure ends with one sentence on stderr and its exit code.

    ``MlopsError`` carries its sentence and exit code (see ``mlops.errors``); raw library
    errors are classified (database, object store, tracking server, disk full, permission
    denied); anything else is "unexpected" (exit 1) with its traceback saved to a file
    whose path the sentence gives. SIGTERM exits 143, Ctrl-C 130. Nothing prints a bare
    traceback on the terminal.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), "")
    try:
        code = app(args, prog_name="mlops", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:  # the one place that turns any failure into a sentence
        code = _report(exc, command)
    sys.exit(code if isinstance(code, int) else 0)


def _report(exc: BaseException, command: str) -> int:
    """Print the failure's sentence on stderr; its exit code."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    from mlops.errors import Terminated, classify, clause
    from mlops.log import save_traceback

    if isinstance(exc, NoArgsIsHelpError):
        return exc.exit_code  # the help was printed
    if isinstance(exc, ClickException):
        context = getattr(exc, "ctx", None)
        where = getattr(context, "command_path", "") or "mlops"
        message = exc.format_message().rstrip(".")
        typer.echo(f"error: {message} (see `{where} --help`).", err=True)
        return exc.exit_code
    if isinstance(exc, Terminated):
        typer.echo(
            f"error: mlops {command} was {exc}; the run is recorded as failed, rerun it.",
            err=True,
        )
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt | typer.Abort):
        typer.echo(f"error: mlops {command} was interrupted (SIGINT).", err=True)
        return 130
    error = classify(exc)
    if error is not None:  # a known class: its sentence says what to do, no traceback
        if error is not exc:
            logging.getLogger("mlops").debug("mlops %s failed", command, exc_info=exc)
        typer.echo(f"error: {error}", err=True)
        return error.exit_code
    saved = save_traceback(exc, command)
    where = f"the traceback is in {saved}" if saved else "the traceback could not be saved"
    first = clause(str(exc), 200)
    typer.echo(
        f"error: mlops {command} failed unexpectedly ({type(exc).__name__}: {first}); {where}.",
        err=True,
    )
    return 1


if __name__ == "__main__":
    main()
