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


StrategyName = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        help="One strategy of STRATEGIES_FILE by name; default: every strategy, each in turn "
        "(without the file, the one strategy is default).",
    ),
]


# The orchestrator's commands (mlops daily, mlops requests process): where Jobs go and
# the templates they are made from.
Namespace = Annotated[
    str | None,
    typer.Option(envvar="POD_NAMESPACE", help="Namespace; default: the pod's own."),
]
TemplatesDir = Annotated[
    Path | None,
    typer.Option(
        envvar="JOB_TEMPLATES_DIR",
        help="Folder of the job-<stage>.yaml templates; default: /etc/mlops/jobs.",
    ),
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
    strategy: StrategyName = None,
) -> None:
    """Turn the latest predictions into orders with each strategy's rule (TRADE_RULE), on
    its own account; the result of several strategies is under ``strategies``."""
    from mlops.contracts import strategies
    from mlops.settings import load_settings
    from mlops.trading.stage import run

    chosen = strategies.select(load_settings(), strategy)  # all checked before any trades
    options = {"as_of": as_of, "allow_older_dataset": allow_older, "missed_day": missed_day}
    if len(chosen) == 1:
        one = chosen[0]
        _stage("trade", run, output, lease=lambda _: one.lease, strategy=one, **options)
        return
    _trade_each(chosen, output, **options)


def _trade_each(chosen: list[Any], output: Path | None, **options: Any) -> None:
    """``mlops trade`` for several strategies, each in turn, each its own stage run: one
    failing does not stop the others; the command then ends with the first failure's exit
    code and a sentence naming each failure."""
    from mlops import log
    from mlops.context import open_context
    from mlops.runs import run_stage
    from mlops.settings import load_settings, parse_date
    from mlops.trading.stage import run

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    as_of: date | None = parse_date(options.pop("as_of", None))
    ctx = open_context(settings)
    results: dict[str, Any] = {}
    failed: list[tuple[str, MlopsError]] = []
    for one in chosen:
        log.bind(stage=f"trade/{one.name}")
        try:
            results[one.name] = run_stage(
                ctx, "trade", run, as_of, lease=one.lease, strategy=one, **options
            )
        except MlopsError as exc:
            found = getattr(exc, "result", None)
            results[one.name] = {
                **(asdict(found) if is_dataclass(found) and not isinstance(found, type) else {}),
                "error": str(exc),
                "exit_code": exc.exit_code,
            }
            failed.append((one.name, exc))
    _print_result({"strategies": {k: _plain(v) for k, v in results.items()}}, output)
    if failed:
        error = MlopsError(
            f"{len(failed)} of {len(chosen)} strategies failed ("
            + "; ".join(f"{name}: {str(exc).rstrip('.')}" for name, exc in failed)
            + "); the others traded"
        )
        error.exit_code = failed[0][1].exit_code
        raise error


def _plain(result: Any) -> Any:
    return asdict(result) if is_dataclass(result) and not isinstance(result, type) else result


trading_app = typer.Typer(
    help="The kill switch (halt, resume, status), reconciliation with the broker and the "
    "strategies' leaderboard.",
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
    strategy: StrategyName = None,
    record_only: Annotated[
        bool,
        typer.Option(
            "--record-only",
            help="Only record the halt (as the dashboard does, without broker credentials): "
            "the next `mlops trade` run cancels this system's open orders.",
        ),
    ] = False,
) -> None:
    """Halt trading (of one strategy, or of all): cancel its open orders at the broker (and
    with --flatten close its positions); `mlops trade` decides and sends nothing until
    `resume`."""
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
        strategy=strategy,
    )
    typer.echo(json.dumps(state, indent=2, default=str))


@trading_app.command("resume")
def trading_resume_cmd(
    reason: Annotated[str, typer.Option("--reason", help="Why trading may go on.")] = "",
    strategy: StrategyName = None,
) -> None:
    """Resume trading (of one strategy, or of all) after `mlops trading halt`
    (TRADING_HALTED=true still halts)."""
    from mlops.model_admin import default_actor
    from mlops.trading.switch import set_halted

    state = set_halted(_context(), False, reason, actor=default_actor("cli"), strategy=strategy)
    typer.echo(json.dumps(state, indent=2, default=str))


@trading_app.command("status")
def trading_status_cmd(strategy: StrategyName = None) -> None:
    """Whether trading is halted (for one strategy, or for any), by whom and why."""
    from mlops.contracts import strategies
    from mlops.trading.switch import status

    ctx = _context()
    if strategy is not None:
        strategies.named(ctx.settings, strategy)
    typer.echo(json.dumps(status(ctx, strategy), indent=2, default=str))


@trading_app.command("reconcile")
def trading_reconcile_cmd(output: Output = None, strategy: StrategyName = None) -> None:
    """Compare each strategy's book with its broker's positions and orders: adopt its
    orders the book lacks, list what it cannot explain (RECONCILE_STRICT=true: exit 5
    then); several strategies' results are under ``strategies``."""
    from mlops.contracts import strategies
    from mlops.trading.brokers import make_broker
    from mlops.trading.reconcile import ReconciliationError, reconcile

    ctx = _context()
    found, strict = {}, []
    for one in strategies.select(ctx.settings, strategy):
        broker = make_broker(one.settings, ctx.engine, one.name)
        checked = reconcile(ctx.engine, broker, broker.account_id(), one.settings)
        found[one.name] = checked
        if checked.not_traded and one.settings.reconcile_strict:
            strict.append(checked.sentence())
    if len(found) == 1:
        _print_result(next(iter(found.values())), output)
    else:
        _print_result({"strategies": {k: asdict(v) for k, v in found.items()}}, output)
    if strict:
        raise ReconciliationError(f"{'; '.join(strict)} (RECONCILE_STRICT=true).")


@trading_app.command("leaderboard")
def trading_leaderboard_cmd(output: Output = None) -> None:
    """Each strategy's equity against buy-and-hold, total return, Sharpe ratio, max
    drawdown, trades and mean fill slippage against the decision's close (JSON on stdout,
    a table on stderr)."""
    from mlops.trading import leaderboard

    board = leaderboard.compute(_context().engine)
    typer.echo(leaderboard.text_table(board), err=True)
    _print_result({"strategies": [asdict(row) for row in board]}, output)


def _context() -> Any:
    from mlops import log
    from mlops.context import open_context
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    return open_context(settings)


models_app = typer.Typer(
    help="The model registry: list the catalog's models and versions, create a model from a "
    "Ludwig YAML, promote, roll back, archive, delete, pause or resume scheduled training, "
    "retrain now. Every action is audited.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
Reason = Annotated[str, typer.Option("--reason", help="Why; kept in the audit table.")]


def _admin(action: str, name: str, version: str = "") -> tuple[Any, Any, str]:
    """The context, the MLflow client and who acts: the signed-in user (``cli:<name>``)
    when DASHBOARD_USERS names users, else ``cli:<login>``."""
    ctx, actor = _signed_in(action, name, version)
    return ctx, ctx.mlflow, actor


def _signed_in(action: str, name: str, version: str = "") -> tuple[Any, str]:
    """The context (MLflow not connected yet) and who acts."""
    from mlops.model_admin import signed_in_actor

    ctx = _context()
    actor = signed_in_actor(
        ctx.engine, ctx.settings, action, name, version, ask_password=_ask_password
    )
    return ctx, actor


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
        ctx.mlflow,
        ctx.engine,
        model_names(ctx.settings, ctx.store),
        alias=ctx.settings.champion_alias,
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
    _print_action(done)


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


@models_app.command("create")
def models_create_cmd(
    name: Annotated[str, typer.Argument(help="The new model's name (its registry name).")],
    config: Annotated[
        Path, typer.Option("--config", help="The model's Ludwig YAML (checked, then stored).")
    ],
    reason: Reason = "",
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the stored config of that name.")
    ] = False,
) -> None:
    """Add a model to the stored catalog (object store; no ConfigMap edit): its Ludwig
    YAML is checked first (Ludwig's schema, the pipeline's rules, the portable export),
    then `mlops train --model NAME` and `train --all` train it."""
    from mlops.errors import ConfigError
    from mlops.model_catalog import create

    try:
        text = config.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {config} cannot be read ({exc}).") from None
    ctx, client, actor = _admin("create", name)
    done = create(
        ctx.engine, ctx.store, ctx.settings, name, text,
        reason=reason, actor=actor, replace=replace, client=client,
    )  # fmt: skip
    _print_action(done)


@models_app.command("delete")
def models_delete_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[
        str | None,
        typer.Option("--version", help="Delete this version (never the champion); default: all."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: deleting cannot be undone.")] = False,
    reason: Reason = "",
) -> None:
    """Delete a version that is not the champion, or (without --version) a whole model that
    has no champion: from the registry and the stored catalog (the audit keeps its rows)."""
    from mlops.errors import ConfigError
    from mlops.model_catalog import delete

    what = f"version {version} of {name}" if version else f"model {name} (every version)"
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"Deleting {what} cannot be undone: add --yes to confirm.")
        if not typer.confirm(f"Delete {what}? This cannot be undone.", err=True):
            raise ConfigError(f"Not confirmed: {what} was not deleted.")
    ctx, client, actor = _admin("delete", name, version or "")
    done = delete(
        client, ctx.engine, ctx.store, ctx.settings, name, version or "", reason=reason, actor=actor
    )
    _print_action(done)


def _print_action(done: Any) -> None:
    """An action's audit row as JSON on stdout, its sentence on stderr."""
    typer.echo(done.sentence(), err=True)
    typer.echo(json.dumps({**asdict(done), "sentence": done.sentence()}, default=str, indent=2))


@models_app.command("retrain")
def models_retrain_cmd(
    name: Annotated[str, typer.Argument(help="Catalog model name.")],
    as_of: AsOf = None,
    reason: Reason = "",
) -> None:
    """Train the model now: in the cluster a request the controller turns into a Job, on a
    laptop here (TRAINING_RUNNER)."""
    from mlops.model_admin import REFUSALS, audited, record_refusal
    from mlops.orchestration import retrain_model
    from mlops.settings import parse_date

    ctx, actor = _signed_in("retrain", name)  # MLflow only if it trains here
    try:
        outcome = retrain_model(ctx, name, actor=actor, as_of=parse_date(as_of), reason=reason)
    except REFUSALS as exc:
        if not audited(exc):
            record_refusal(ctx.engine, "retrain", name, None, actor=actor, reason=str(exc))
        raise
    typer.echo(outcome.sentence(), err=True)
    payload = asdict(outcome) if is_dataclass(outcome) else {}
    typer.echo(json.dumps({**payload, "sentence": outcome.sentence()}, default=str, indent=2))


requests_app = typer.Typer(
    help="Requests for work (retrain a model, run monitoring now) that the dashboard "
    "records: list them; run one here (on one machine); turn queued ones into Jobs (the "
    "cluster's controller).",
    no_args_is_help=True,
)
app.add_typer(requests_app, name="requests")


def _requests_engine() -> tuple[Any, Any]:
    from mlops import log
    from mlops.context import database_engine
    from mlops.db.migrate import require_current
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    log.bind(stage="requests")
    engine = database_engine(settings)
    require_current(engine)
    return settings, engine


@requests_app.command("list")
def requests_list_cmd(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
) -> None:
    """The newest requests with their status, exit code and sentence (JSON)."""
    from mlops.action_requests import recent

    _, engine = _requests_engine()
    typer.echo(json.dumps([asdict(r) for r in recent(engine, limit)], default=str, indent=2))


@requests_app.command("run")
def requests_run_cmd(
    request_id: Annotated[int, typer.Argument(help="The request's id.")],
) -> None:
    """Run a queued request of this machine (what the dashboard starts in the background):
    its command as a child process, its end recorded on the request."""
    from mlops.action_requests import FAILED, run_local

    settings, engine = _requests_engine()
    done = run_local(engine, settings.mlops_home, request_id)
    typer.echo(json.dumps(asdict(done), default=str, indent=2))
    if done.status == FAILED:
        raise typer.Exit(done.exit_code or 1)


@requests_app.command("process")
def requests_process_cmd(
    namespace: Namespace = None,
    templates_dir: TemplatesDir = None,
) -> None:
    """The cluster's controller, one pass: queued requests become Jobs from their fixed
    template; running ones' Jobs are read and their end recorded."""
    from mlops.orchestration import process_requests

    _, engine = _requests_engine()
    done = process_requests(engine, namespace=namespace, templates_dir=templates_dir)
    typer.echo(json.dumps([asdict(r) for r in done], default=str, indent=2))


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
    namespace: Namespace = None,
    templates_dir: TemplatesDir = None,
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
    from mlops.contracts import strategies
    from mlops.db.migrate import require_current
    from mlops.orchestration import market_today, record_scheduled_training, run_catch_up
    from mlops.pipeline import missed_sessions, plan_retraining
    from mlops.runs import alert_failure
    from mlops.settings import load_settings, parse_date

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    log.bind(stage="daily")
    # One trade Job per strategy of the file (checked before any Job is made); none: one.
    specs = strategies.load(settings) if settings.strategies_file else None
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
    try:
        runs = run_catch_up(
            days,
            namespace=namespace,
            templates_dir=templates_dir,
            rerun_failed=rerun_failed,
            poll_seconds=poll_seconds,
            retrain=lambda day: plan_retraining(engine, day, settings.retrain_cooldown_days),
            on_training=lambda job, reason: record_scheduled_training(engine, job, reason),
            strategies=specs,
        )
    except BaseException as exc:
        # A stage Job that failed without its own alert (killed: out of memory, its
        # deadline) is known here: the day's run says which, and what did not start.
        alert_failure(settings, "daily", day, exc)
        raise
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
