"""``mlops demo``: replay the bundled sample as if live, on embedded defaults.

Train every model of the catalog on the data up to the day before the replay, then for
each replayed trading day run the daily pipeline of ``mlops.pipeline`` as that day (its
stages in order, then, when the retrain rule says so, a training of every catalog model
that is not paused: ``mlops models pause`` holds one back). Every stage is the same
function its Kubernetes Job runs; the stages are called in process instead of as Jobs.
The summary ends with one line per model: its champion and challenger, the champion's
holdout MAPE against the naive forecast's, its Diebold-Mariano p-values and its live MAPE;
for the direction classifier (``stock-direction``), its log loss, accuracy and AUC
against the base-rate classifier's, on its holdout and live. The classifier is scored in
shadow whatever its first gate decided: when it neither became its model's champion nor
the challenger (a daily direction rarely beats the base rate), the demo promotes it with
``mlops models promote --force``'s code, actor ``demo``, the reason in the audit table;
it never trades (only ``MODEL_NAME``'s champion does).

The summary's backtest table trades the trading champion's forecasts of the replay (the
ones that fed ``mlops trade``) by each rule, ``threshold`` and ``rotation``
(``TRADE_SELL`` and every other setting as the replay's), side by side with the naive
forecast and buy-and-hold: ``mlops backtest``'s simulation
(:func:`mlops.trading.backtest.compare_rules`: fills at the next session's open, with its
costs), and the sentence saying so when no forecast reached the buy threshold.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from mlops import log as mlops_log
from mlops.context import Context, open_context
from mlops.contracts import keys, strategies
from mlops.contracts.catalog import model_names
from mlops.data_prep.sources import load_sample
from mlops.db import migrate
from mlops.db.engine import make_engine
from mlops.db.schema import equity_snapshots, orders, predictions, retrain_requests
from mlops.errors import ConfigError, ModelError
from mlops.pipeline import TRAIN_STAGE, plan_retraining, scheduled_models, stage_parts
from mlops.runs import run_stage
from mlops.settings import load_settings

log = logging.getLogger(__name__)

DEFAULT_START = date(2017, 6, 1)  # YHOO stops trading on 2017-06-16, inside the replay
# The default model's forecasts are cautious (daily moves of a few tenths of a percent),
# so the demo trades at 0.1 %; the pipeline's default stays the original project's 0.5 %.
DEMO_THRESHOLD = 0.001


@dataclass
class DemoSummary:
    start: str
    end: str
    days: int
    seconds: float
    champion_version: str | None
    trainings: list[dict[str, Any]]
    replay_metrics: dict[str, float]
    predictions: int
    orders: dict[str, int]
    equity: float | None
    benchmark_equity: float | None
    initial_cash: float
    threshold: float
    last_drift_share: float | None
    retrain_requests: int
    models: list[dict[str, Any]]
    backtest: dict[str, Any]  # the replay's forecasts traded by each rule (rule_backtests)
    reports: list[str]
    home: str
    database_url: str
    mlflow_tracking_uri: str


def replay_days(start: date, days: int) -> tuple[date, list[date]]:
    """The training cutoff (the trading day before ``start``) and the replayed days."""
    calendar = sorted(load_sample()["date"].dt.date.unique())
    before = [d for d in calendar if d < start]
    replay = [d for d in calendar if d >= start][:days]
    if len(before) < 250:
        raise ConfigError(f"--start {start} leaves under a year of history to train on.")
    if len(replay) < days:
        raise ConfigError(
            f"The sample has only {len(replay)} trading days from {start}; use an earlier --start."
        )
    return before[-1], replay


def run(
    *,
    days: int = 20,
    epochs: int | None = None,
    home: Path = Path("var/demo"),
    fresh: bool = True,
    start: date = DEFAULT_START,
    threshold: float = DEMO_THRESHOLD,
    quiet: bool = False,
) -> DemoSummary:
    """Run the replay and print its summary; returns the summary."""
    from rich.console import Console

    console = Console(quiet=quiet)
    cutoff, replay = replay_days(start, days)
    if fresh and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {
        "MLOPS_HOME": str(home),
        "STORE_BACKEND": "local",
        "STORE_LOCAL_ROOT": None,
        "DATABASE_URL": None,
        "MLFLOW_TRACKING_URI": None,
        "DATA_SOURCE": "sample",
        "BROKER": "paper",
        "SYMBOLS": "",
        "TRADE_THRESHOLD": threshold,
    }
    if epochs is not None:
        overrides["TRAIN_EPOCHS"] = epochs
    settings = load_settings(**overrides)
    mlops_log.configure(settings.log_format, "WARNING")
    migrate.upgrade(make_engine(settings.db_url))
    ctx = open_context(settings)

    stages = stage_functions()
    began = time.monotonic()
    trainings: list[dict[str, Any]] = []
    reports: list[str] = []
    last_drift: float | None = None

    # The trade stage once per strategy of STRATEGIES_FILE, as the daily run does.
    specs = strategies.load(settings) if settings.strategies_file else None
    chosen = {s.name: s for s in strategies.select(settings)}

    def stage(name: str, day: date, strategy: str | None = None) -> Any:
        if strategy is None:
            return run_stage(ctx, name, stages[name], day)
        one = chosen[strategy]
        return run_stage(ctx, name, stages[name], day, lease=one.lease, strategy=one)

    def train(day: date) -> Callable[[str], Any]:
        return lambda model: run_stage(
            ctx, TRAIN_STAGE, stages[TRAIN_STAGE], day, lease=model, model=model
        )

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"training on data to {cutoff}", total=len(replay))
        stage("data-prep", cutoff)
        initial = {name: train(cutoff)(name) for name in model_names(settings, ctx.store)}
        trainings.extend(_training_row(cutoff, result) for result in initial.values())
        shadow_classifiers(ctx, initial.values())
        first = initial[settings.model_name]
        if not first.promoted:
            raise ModelError(
                f"The first model did not become champion ({first.reason}); "
                "try another --start or model config."
            )
        for day in replay:
            progress.update(task, description=f"replaying {day}")
            results = {p.stage: stage(p.stage, day, p.strategy) for p in stage_parts(specs)}
            watched = results["monitor"]
            last_drift = watched.drift_share if watched.drift_share is not None else last_drift
            reports.extend(watched.reports.values())
            if plan_retraining(ctx.engine, day, settings.retrain_cooldown_days).retrain:
                progress.update(task, description=f"retraining on {day}")
                for _, result in scheduled_training(ctx, train(day)):
                    trainings.append(_training_row(day, result))
            progress.advance(task)

    summary = _summarize(ctx, settings, cutoff, replay, began, trainings, reports, last_drift)
    (home / "summary.json").write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    print_summary(console, summary)
    return summary


def shadow_classifiers(ctx: Context, results: Any) -> None:
    """Every direction classifier the demo trained gets scored in shadow: one with neither
    the champion nor the challenger alias is made its model's champion (forced, recorded
    in ``model_actions`` with its reason), so the summary can show its live figures.
    """
    from mlops.model_admin import promote

    for result in results:
        if "log_loss" not in result.holdout or result.promoted or result.challenger:
            continue
        promote(
            ctx.mlflow,
            ctx.engine,
            result.model_name,
            result.model_version,
            alias=ctx.settings.champion_alias,
            reason="demo: scored in shadow to show its live accuracy and AUC against the "
            f"base rate, although its gate said: {result.reason}",
            actor="demo",
            force=True,
        )
        log.warning(
            "Demo: %s v%s scored in shadow although it does not beat the base rate.",
            result.model_name,
            result.model_version,
        )


def stage_functions() -> dict[str, Callable[..., Any]]:
    """Each stage's ``run(ctx, as_of=...)``, by its name in ``mlops.pipeline``."""
    from mlops.data_prep.stage import run as data_prep
    from mlops.inference.stage import run as batch_infer
    from mlops.monitoring.stage import run as monitor
    from mlops.trading.stage import run as trade
    from mlops.training.stage import run as train

    return {
        "data-prep": data_prep,
        "batch-infer": batch_infer,
        "trade": trade,
        "monitor": monitor,
        TRAIN_STAGE: train,
    }


def scheduled_training(ctx: Context, train: Callable[[str], Any]) -> list[tuple[str, Any]]:
    """Train every catalog model that is not paused (the pipeline's rule), in catalog order."""
    names = scheduled_models(ctx.mlflow, ctx.settings, ctx.store)
    held = [n for n in model_names(ctx.settings, ctx.store) if n not in names]
    if held:
        log.warning("Paused, not retrained: %s", ", ".join(held))
    return [(name, train(name)) for name in names]


def _training_row(day: date, result: Any) -> dict[str, Any]:
    """A training's figures: MAPE against the naive forecast's, or a direction classifier's
    log loss (its gate's metric), accuracy and AUC against the base rate's.
    """
    holdout, baseline = result.holdout, result.baseline
    champion = result.champion_holdout or {}
    return {
        "model": result.model_name,
        "as_of": day.isoformat(),
        "version": result.model_version,
        "promoted": result.promoted,
        "holdout_mape": holdout.get("mape"),
        "baseline_mape": baseline.get("mape"),
        "champion_mape": champion.get("mape"),
        "holdout_log_loss": holdout.get("log_loss"),
        "baseline_log_loss": baseline.get("log_loss"),
        "champion_log_loss": champion.get("log_loss"),
        "holdout_accuracy": holdout.get("accuracy"),
        "baseline_accuracy": baseline.get("accuracy"),
        "holdout_auc": holdout.get("auc"),
        "reason": result.reason,
    }


def _summarize(
    ctx: Context,
    settings: Any,
    cutoff: date,
    replay: list[date],
    began: float,
    trainings: list[dict[str, Any]],
    reports: list[str],
    last_drift: float | None,
) -> DemoSummary:
    from mlops.contracts import datasets
    from mlops.contracts.models import champion
    from mlops.contracts.predictions import realized
    from mlops.metrics import regression_metrics

    _, bars = datasets.load(ctx.store, datasets.latest_version(ctx.engine, replay[-1]))
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(select(predictions), conn)
        order_counts: dict[str, int] = {
            str(status): int(count)
            for status, count in conn.execute(
                select(orders.c.status, func.count())
                .where(orders.c.broker == settings.broker)
                .group_by(orders.c.status)
            ).all()
        }
        last = latest_equity(conn, settings.broker)
        requests = conn.execute(select(func.count()).select_from(retrain_requests)).scalar_one()
    # The trading model's champion predictions: the ones that fed trading (not the shadow).
    traded = preds[(preds["model_name"] == settings.model_name) & (preds["role"] == "champion")]
    joined = realized(traded, bars) if not traded.empty else pd.DataFrame()
    replay_metrics: dict[str, float] = {}
    if not joined.empty:
        model = regression_metrics(joined["actual_close"], joined["predicted_close"])
        naive = regression_metrics(joined["actual_close"], joined["last_close"])
        replay_metrics = {
            "model_mae": model["mae"],
            "model_mape": model["mape"],
            "naive_mae": naive["mae"],
            "naive_mape": naive["mape"],
            "scored": float(len(joined)),
        }
    current = champion(ctx.mlflow, settings.model_name, settings.champion_alias)
    models = model_table(ctx)
    backtest = rule_backtests(settings, traded, bars)
    return DemoSummary(
        start=replay[0].isoformat(),
        end=replay[-1].isoformat(),
        days=len(replay),
        seconds=round(time.monotonic() - began, 1),
        champion_version=current.version if current else None,
        trainings=trainings,
        replay_metrics=replay_metrics,
        predictions=len(preds),
        orders={str(k): int(v) for k, v in order_counts.items()},
        equity=None if last is None else float(last[0]),
        benchmark_equity=None if last is None or last[1] is None else float(last[1]),
        initial_cash=settings.paper_initial_cash,
        threshold=settings.trade_threshold,
        last_drift_share=last_drift,
        retrain_requests=int(requests),
        models=models,
        backtest=backtest,
        reports=reports,
        home=str(settings.mlops_home.resolve()),
        database_url=settings.db_url,
        mlflow_tracking_uri=settings.tracking_uri,
    )


def rule_backtests(settings: Any, traded: pd.DataFrame, bars: pd.DataFrame) -> dict[str, Any]:
    """The trading champion's forecasts of the replay (``traded``: its prediction rows)
    traded by each rule with ``mlops backtest``'s simulation: each rule's figures, the
    naive forecast's and buy-and-hold's, the threshold, and the sentence saying that no
    forecast reached it (None when one did); empty without forecasts.
    """
    from mlops.contracts.columns import PROBABILITY
    from mlops.contracts.predictions import on_rows
    from mlops.trading.backtest import compare_rules, rules_from
    from mlops.trading.report import threshold_note

    if traded.empty:
        return {}
    # A day scored by two champion versions (a promotion and a rerun): the newer one's.
    rows = traded.assign(_version=pd.to_numeric(traded["model_version"], errors="coerce"))
    rows = rows.sort_values("_version").drop_duplicates(["prediction_date", "symbol"], keep="last")
    probability = bool((rows["score_kind"] == PROBABILITY).all())
    value = rows["score"] if probability else rows["predicted_close"]
    days = pd.to_datetime(rows["prediction_date"])
    keyed = pd.Series(
        value.to_numpy(dtype="float64"),
        index=pd.MultiIndex.from_arrays([days.to_numpy(), rows["symbol"].to_numpy()]),
    )
    window = bars[bars["date"].isin(days.unique())].reset_index(drop=True)
    predicted = pd.Series(on_rows(keyed, window), index=window.index)
    runs = compare_rules(window, predicted, rules_from(settings), probability=probability)
    first = next(iter(runs.values()))
    return {
        "sessions": len(first.market.days),
        "sell": settings.trade_sell,
        "probability": probability,
        "threshold": first.rules.level(first.market),
        "rules": {rule: comparison.figures["model"] for rule, comparison in runs.items()},
        "naive": first.figures["naive"],
        "buy_and_hold": first.figures["buy_and_hold"],
        "threshold_not_reached": threshold_note(first),
    }


def model_table(ctx: Context) -> list[dict[str, Any]]:
    """One row per catalog model: its champion's and challenger's versions, the champion's
    holdout MAPE and the naive forecast's, its p-values and its latest live MAPE.
    """
    from mlops.model_admin import inventory

    rows = inventory(
        ctx.mlflow,
        ctx.engine,
        model_names(ctx.settings, ctx.store),
        alias=ctx.settings.champion_alias,
    )
    table: list[dict[str, Any]] = []
    for name in model_names(ctx.settings, ctx.store):
        versions = [r for r in rows if r.name == name]
        best = next((r for r in versions if r.status == "champion"), None)
        challenger = next((r for r in versions if r.status == "challenger"), None)
        shown = best or (versions[0] if versions and versions[0].version else None)
        table.append(
            {
                "model": name,
                "champion": best.version if best else None,
                "challenger": challenger.version if challenger else None,
                "versions": sum(1 for r in versions if r.version),
                "paused": bool(versions and versions[0].paused),
                "holdout_mape": shown.holdout.get("holdout_mape") if shown else None,
                "naive_mape": shown.holdout.get("baseline_holdout_mape") if shown else None,
                "dm_p_naive": shown.holdout.get("dm_p_value_naive") if shown else None,
                "dm_p_champion": shown.holdout.get("dm_p_value_champion") if shown else None,
                **_live(shown.live if shown else {}),
                **_classifier_cells(shown),
            }
        )
    return table


def _live(live: dict[str, Any]) -> dict[str, Any]:
    """A version's latest live figures (mlops.contracts.live_figures): its trailing
    window's, with the window's length, and its latest session's own MAPE."""
    window, day = live.get("window", {}), live.get("session", {})
    return {
        "live_window_days": live.get("window_days"),
        "live_mape": window.get("mape"),
        "live_naive_mape": window.get("naive_mape"),
        "live_dm_p_naive": window.get("dm_p_naive"),
        "live_day_mape": day.get("mape"),
    }


def _classifier_cells(shown: Any) -> dict[str, float | None]:
    """A direction classifier's accuracy and AUC (and log loss) against the base rate's,
    on its holdout and live (None for a regressor, or where there is no such figure).
    """
    holdout = shown.holdout if shown else {}
    live = (shown.live if shown else {}).get("window", {})
    return {
        "holdout_log_loss": holdout.get("holdout_log_loss"),
        "naive_log_loss": holdout.get("baseline_holdout_log_loss"),
        "holdout_accuracy": holdout.get("holdout_accuracy"),
        "holdout_auc": holdout.get("holdout_auc"),
        "live_accuracy": live.get("accuracy"),
        "live_naive_accuracy": live.get("naive_accuracy"),
        "live_auc": live.get("auc"),
        "live_log_loss": live.get("log_loss"),
        "live_naive_log_loss": live.get("naive_log_loss"),
    }


def latest_equity(conn: Any, broker: str) -> Any:
    """The newest equity snapshot of one broker: (equity, benchmark), or None."""
    return conn.execute(
        select(equity_snapshots.c.equity, equity_snapshots.c.benchmark_equity)
        .where(equity_snapshots.c.broker == broker)
        .order_by(equity_snapshots.c.snapshot_date.desc())
        .limit(1)
    ).first()


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.4%}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def models_table(models: list[dict[str, Any]]) -> Any:
    """The per-model table, one column per model: champion and challenger, the champion's
    holdout MAPE against the naive forecast's with its Diebold-Mariano p-values, and its
    latest live MAPE against the naive forecast's.
    """
    from rich.table import Table

    days = next((m["live_window_days"] for m in models if m["live_window_days"]), None)
    table = Table(
        title=f"Models (each champion's figures; window: the last monitored {days or 'N'}-"
        "session window; p: Diebold-Mariano, one-sided)"
    )
    table.add_column("model")
    for m in models:
        name = m["model"] + (" (paused)" if m["paused"] else "")
        table.add_column(name, justify="right", overflow="fold")
    lines: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("champion", lambda m: m["champion"] or "-"),
        ("challenger", lambda m: m["challenger"] or "-"),
        ("holdout MAPE", lambda m: _percent(m["holdout_mape"])),
        ("naive", lambda m: _percent(m["naive_mape"])),
        ("p vs naive", lambda m: _p(m["dm_p_naive"])),
        ("p vs champion", lambda m: _p(m["dm_p_champion"])),
        ("window MAPE", lambda m: _percent(m["live_mape"])),
        ("window naive", lambda m: _percent(m["live_naive_mape"])),
        ("window p(naive)", lambda m: _p(m["live_dm_p_naive"])),
    ]
    if any(m.get("holdout_log_loss") is not None for m in models):
        lines += [
            ("holdout log loss (classifier)", lambda m: _loss(m, "holdout_log_loss")),
            ("base rate's log loss", lambda m: _loss(m, "naive_log_loss")),
            ("holdout accuracy / AUC", lambda m: _pair(m, "holdout_accuracy", "holdout_auc")),
            ("live accuracy / AUC", lambda m: _pair(m, "live_accuracy", "live_auc")),
            ("base rate's live accuracy", lambda m: _share(m.get("live_naive_accuracy"))),
        ]
    for label, cell in lines:
        table.add_row(label, *(cell(m) for m in models))
    return table


def backtest_table(backtest: dict[str, Any]) -> Any:
    """The replay's forecasts traded by each rule (one column per rule), beside the naive
    forecast and buy-and-hold: ``mlops backtest``'s figures (:func:`rule_backtests`)."""
    from rich.table import Table

    from mlops.trading import performance

    level = (
        f"probability {backtest['threshold']:.3f}"
        if backtest["probability"]
        else f"{backtest['threshold']:+.2%}"
    )
    table = Table(
        title=f"Backtest of the replay: the traded champion's forecasts by each rule (buy "
        f"threshold {level}, TRADE_SELL {backtest['sell']}; fills at the next open, with "
        "costs)"
    )
    table.add_column("figure")
    columns = [
        *(f"rule {rule}" for rule in backtest["rules"]),
        "naive forecast",
        "buy-and-hold",
    ]
    figures = [*backtest["rules"].values(), backtest["naive"], backtest["buy_and_hold"]]
    for title in columns:
        table.add_column(title, justify="right")
    for key, label, kind in performance.FIGURES:
        table.add_row(
            performance.flagged(label, key, backtest["sessions"]),
            *(performance.cell(f, key, kind) for f in figures),
        )
    return table


def _loss(m: dict[str, Any], key: str) -> str:
    value = m.get(key)
    return "-" if value is None else f"{value:.4f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pair(m: dict[str, Any], accuracy: str, auc: str) -> str:
    if m.get(accuracy) is None and m.get(auc) is None:
        return "-"
    return f"{_share(m.get(accuracy))} / {_p(m.get(auc))}"


def print_summary(console: Any, s: DemoSummary) -> None:
    from rich.table import Table

    table = Table(title=f"Replay {s.start} to {s.end} ({s.days} trading days, {s.seconds} s)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("against", justify="right")
    for t in s.trainings:
        outcome = " -> champion" if t["promoted"] else " -> kept old"
        if t.get("holdout_log_loss") is not None:  # the direction classifier
            champion = t.get("champion_log_loss")
            table.add_row(
                f"{t['model']} v{t['version']} trained to {t['as_of']}",
                f"holdout log loss {t['holdout_log_loss']:.4f}, accuracy "
                f"{_share(t.get('holdout_accuracy'))}, AUC {_p(t.get('holdout_auc'))}",
                f"base rate {t['baseline_log_loss']:.4f}, accuracy "
                f"{_share(t.get('baseline_accuracy'))}"
                + ("" if champion is None else f", champion {champion:.4f}")
                + outcome,
            )
            continue
        table.add_row(
            f"{t['model']} v{t['version']} trained to {t['as_of']}",
            f"holdout MAPE {t['holdout_mape']:.4%}",
            f"naive {t['baseline_mape']:.4%}"
            + ("" if t["champion_mape"] is None else f", champion {t['champion_mape']:.4%}")
            + outcome,
        )
    m = s.replay_metrics
    if m:
        table.add_row(
            "live MAPE over the replay (traded)",
            f"{m['model_mape']:.4%}",
            f"naive {m['naive_mape']:.4%}",
        )
        table.add_row(
            "live MAE over the replay", f"{m['model_mae']:.3f}", f"naive {m['naive_mae']:.3f}"
        )
    table.add_row("champion version", str(s.champion_version), "")
    table.add_row(
        "predictions made (all models)",
        str(s.predictions),
        f"{int(m.get('scored', 0))} traded ones scored",
    )
    table.add_row(
        f"orders (threshold {s.threshold:.2%})",
        str(sum(s.orders.values())),
        ", ".join(f"{k} {v}" for k, v in sorted(s.orders.items())),
    )
    if s.equity is not None:
        bench = ""
        if s.benchmark_equity is not None:
            gain = s.benchmark_equity / s.initial_cash - 1
            bench = f"buy-and-hold {s.benchmark_equity:,.2f} ({gain:+.2%})"
        table.add_row("equity", f"{s.equity:,.2f} ({s.equity / s.initial_cash - 1:+.2%})", bench)
    if s.last_drift_share is not None:
        table.add_row(
            "drift share (last day)",
            f"{s.last_drift_share:.2f}",
            f"{s.retrain_requests} retrain requests",
        )
    console.print(table)
    if s.backtest:
        console.print(backtest_table(s.backtest))
        if s.backtest["threshold_not_reached"]:
            console.print(f"[bold red]{s.backtest['threshold_not_reached']}[/bold red]")
    console.print(models_table(s.models))
    folder = f"{s.home}/store/{keys.MONITORING_REPORTS_PREFIX}/"
    console.print(f"Reports: {len(s.reports)} HTML files under {folder}")
    if s.reports:
        console.print(f"  latest: {s.reports[-1]}")
    console.print(f"Database: {s.database_url}")
    console.print(f"MLflow:   mlflow ui --backend-store-uri {s.mlflow_tracking_uri}")
