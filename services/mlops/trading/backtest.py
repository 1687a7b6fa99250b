"""``mlops backtest``: the live strategy walked forward over the prepared history, with costs.

The model (``champion``, a registered version, or ``naive``: tomorrow's close = today's)
predicts every session's close from that session's feature rows (features are causal),
then :func:`mlops.trading.simulation.simulate` trades them with the live strategy and
risk code, filling at the next session's open with slippage and commission. Three
columns side by side: the model, the naive forecast as the model (the same strategy on
"no change" forecasts), and buy-and-hold of the same universe.

The data: the newest published dataset whose rows reach ``--to`` (the newest of all
without it); none is refused, naming the ``mlops data-prep`` to run. The window: by
default from the session after the model's training data ends (its lineage ``as_of``) to
``--to``, only out-of-sample days (for ``naive``, the last year). A ``--from`` inside the
training data is refused unless ``--allow-in-sample``; then every output counts the
sessions in sample and the chart shades them.

Outputs: ``backtests/<key>/summary.json`` (figures, table, notes), ``equity.html`` (the
equity curves and the table), ``curves.parquet`` and ``trades.parquet`` (every fill of
every column, :func:`trades_frame`) in the store, a row in ``backtest_runs`` (the
dashboard lists them), and with a registered model the summary and chart as artifacts
of its MLflow run (``backtests/<key>/``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from mlops.context import Context
from mlops.contracts import datasets
from mlops.contracts.columns import WARMUP_COLUMN, is_classifier
from mlops.contracts.keys import walkforward_output_keys
from mlops.contracts.models import ModelRef, champion, load_registered, predict_scores
from mlops.contracts.predictions import on_rows
from mlops.db.schema import backtest_runs
from mlops.db.upsert import insert_new
from mlops.errors import ConfigError, DataError, ModelError
from mlops.runs import utcnow
from mlops.store import get_json, get_parquet, put_json, put_parquet
from mlops.trading import performance, report, strategy
from mlops.trading.order_types import MARKET
from mlops.trading.report import COLUMNS
from mlops.trading.risk import RiskLimits
from mlops.trading.simulation import (
    SESSIONS_PER_YEAR,
    Costs,
    Market,
    Reach,
    Rules,
    Simulation,
    buy_and_hold,
    reach,
    simulate,
)

log = logging.getLogger(__name__)

PREFIX = "backtests"
NAIVE = "naive"
TRADE_COLUMNS = (
    "simulation",
    "decided",
    "day",
    "symbol",
    "side",
    "quantity",
    "price",
    "cost",
    "entry_day",
    "realised_pnl",
)


@dataclass
class BacktestResult:
    run_key: str
    model: str
    model_version: str | None
    dataset_version: str
    start: date
    end: date
    sessions: int
    symbols: int
    in_sample_sessions: int
    trained_through: date | None  # the model's last training day (its lineage as_of)
    costs: dict[str, float]
    risk_free_rate: float
    figures: dict[str, dict[str, float | None]]
    summary_key: str
    chart_key: str
    trades_key: str
    mlflow_run_id: str | None
    seconds: float
    rule: str  # TRADE_RULE
    sell: str  # TRADE_SELL
    threshold: float  # TRADE_THRESHOLD (a classifier's: TRADE_PROBABILITY_THRESHOLD)
    # Set when no forecast of the model reached the threshold: the sentence that says so.
    threshold_not_reached: str | None
    notes: list[str] = field(default_factory=list)
    probability: bool = False  # the model is a direction classifier, traded on probabilities


@dataclass
class Comparison:
    """The three simulations of one window, their figures and the rules they ran under;
    ``reach``: how the model's forecasts stood against the threshold."""

    market: Market
    runs: dict[str, Simulation]
    figures: dict[str, dict[str, float | None]]
    rules: Rules
    reach: Reach | None = None


def run(
    ctx: Context,
    as_of: date | None = None,
    *,
    model: str = "champion",
    start: date | None = None,
    end: date | None = None,
    allow_in_sample: bool = False,
    walk_forward: str | None = None,
) -> BacktestResult:
    """Backtest ``model`` from ``start`` to ``end`` (see the module); ``walk_forward``
    (``KEY`` or ``KEY:MODEL``): the predictions that served in that walk-forward instead.
    """
    began = time.perf_counter()
    end = end or as_of
    served = None
    if walk_forward is not None:
        served = _walk_forward(ctx, walk_forward)
        start, end = _inside(served, start, end)
    if start is not None and end is not None and start > end:
        raise ConfigError(f"--from {start} is after --to {end}: the window holds no session.")
    version = _dataset(ctx, end)
    _, frame = datasets.load(ctx.store, version)
    ref, predictor = (None, None) if served is not None else _model(ctx, model)
    label = served.label if served is not None else (NAIVE if ref is None else f"v{ref.version}")
    trained = _trained_through(ref)
    first, last = _window(frame, trained, start, end, allow_in_sample, label)
    window = frame[(frame["date"] >= pd.Timestamp(first)) & (frame["date"] <= pd.Timestamp(last))]
    window = window.reset_index(drop=True)
    predicted = served.on(window) if served is not None else _predict(predictor, window)
    rules = rules_from(ctx.settings)
    comparison = compare(window, predicted, rules, probability=_is_classifier(predictor))
    key = _key(version, label, first, last, rules)
    days = comparison.market.days
    result = BacktestResult(
        run_key=key,
        model=model if served is None else f"walk-forward:{walk_forward}",
        model_version=None if ref is None else ref.version,
        dataset_version=version,
        start=days[0],
        end=days[-1],
        sessions=len(days),
        symbols=len(comparison.market.symbols),
        in_sample_sessions=report.in_sample_sessions(days, trained),
        trained_through=trained,
        costs=asdict(rules.costs),
        risk_free_rate=performance.RISK_FREE_RATE,
        figures=comparison.figures,
        summary_key=f"{PREFIX}/{key}/summary.json",
        chart_key=f"{PREFIX}/{key}/equity.html",
        trades_key=f"{PREFIX}/{key}/trades.parquet",
        mlflow_run_id=None if ref is None else (ref.run_id or None),
        seconds=0.0,
        **_rule_fields(comparison),
        notes=report.notes(comparison, trained),
    )
    _publish(ctx, result, comparison, label)
    result.seconds = round(time.perf_counter() - began, 2)
    _log(result, label, rules)
    return result


@dataclass(frozen=True)
class _Served:
    """The champions' predictions of one model in a walk-forward (each made by a version
    trained before the session it predicts: out of sample throughout).
    """

    label: str
    rows: pd.DataFrame  # day, symbol, prediction
    first: date
    last: date

    def on(self, window: pd.DataFrame) -> pd.Series:
        keyed = self.rows.set_index(["day", "symbol"])["prediction"]
        return pd.Series(on_rows(keyed, window), index=window.index)


def _walk_forward(ctx: Context, spec: str) -> _Served:
    """``KEY`` or ``KEY:MODEL``: that model's served champion predictions (the trading
    model, ``MODEL_NAME``, without one).
    """
    key, _, name = spec.partition(":")
    name = name or ctx.settings.model_name
    keys = walkforward_output_keys(key)
    if not ctx.store.exists(keys["predictions"]):
        raise ConfigError(
            f"No finished walk-forward {key!r} in the store (no {keys['predictions']}): "
            "run `mlops walk-forward`, and pass the run_key it printed."
        )
    plan = get_json(ctx.store, keys["plan"])
    served = get_parquet(ctx.store, keys["predictions"])
    models = sorted(served["model"].unique())
    if name not in plan["models"]:
        raise ConfigError(
            f"Walk-forward {key} did not train {name!r}; it trained {', '.join(plan['models'])}."
        )
    if name not in models:
        raise DataError(f"In walk-forward {key}, {name} never had a champion: nothing to trade.")
    rows = served[(served["model"] == name) & (served["role"] == "champion")]
    first, last = date.fromisoformat(plan["start"]), date.fromisoformat(plan["end"])
    return _Served(f"wf-{name}", rows[["day", "symbol", "prediction"]], first, last)


def _inside(served: _Served, start: date | None, end: date | None) -> tuple[date, date]:
    """The window within the walk-forward's sessions (all of them by default)."""
    start, end = start or served.first, end or served.last
    if start < served.first or end > served.last:
        raise ConfigError(
            f"The walk-forward predicted sessions {served.first} to {served.last}; the window "
            f"{start} to {end} reaches outside them."
        )
    return start, end


def rules_from(settings: Any) -> Rules:
    return Rules(
        threshold=settings.trade_threshold,
        max_position_value=settings.trade_max_position_value,
        limits=RiskLimits.from_settings(settings),
        initial_cash=settings.paper_initial_cash,
        costs=Costs(settings.backtest_slippage_bps, settings.backtest_commission_per_share),
        rule=settings.trade_rule,
        sell=settings.trade_sell,
        probability_threshold=settings.trade_probability_threshold,
        order_type=settings.trade_order_type,
        limit_buffer_bps=settings.trade_limit_buffer_bps,
        time_in_force=settings.trade_time_in_force,
    )


def _rule_fields(comparison: Comparison) -> dict[str, Any]:
    """The rule the window was traded by, and whether its forecasts reached the threshold."""
    rules = comparison.rules
    return {
        "rule": rules.rule,
        "sell": rules.sell,
        "threshold": rules.level(comparison.market),
        "threshold_not_reached": report.threshold_note(comparison),
        "probability": comparison.market.probability,
    }


def compare(
    frame: pd.DataFrame, predicted: pd.Series, rules: Rules, *, probability: bool = False
) -> Comparison:
    """The model, the naive forecast and buy-and-hold over the sessions of ``frame``.

    The model's and the naive forecast's figures also say how their forecasts stood
    against the threshold (:meth:`Reach.figures`: sessions with a forecast at or past it,
    the largest expected change). ``probability``: the model's forecasts are a direction
    classifier's probabilities of a rise, traded against TRADE_PROBABILITY_THRESHOLD.
    """
    market = Market.from_frame(frame, predicted, probability=probability)
    naive = replace(market, predicted=market.close, probability=False)
    runs = {
        "model": simulate(market, rules),
        "naive": simulate(naive, rules),
        "buy_and_hold": buy_and_hold(market, rules.initial_cash, rules.costs),
    }
    figures = {name: performance.figures(sim, rules.initial_cash) for name, sim in runs.items()}
    reached = reach(market, rules.level(market))
    figures["model"].update(reached.figures())
    figures["naive"].update(reach(naive, rules.level(naive)).figures())
    return Comparison(market=market, runs=runs, figures=figures, rules=rules, reach=reached)


def compare_rules(
    frame: pd.DataFrame, predicted: pd.Series, rules: Rules, *, probability: bool = False
) -> dict[str, Comparison]:
    """:func:`compare` once per trading rule (``threshold``, ``rotation``), every other
    setting of ``rules`` kept: the same forecasts traded by each rule, side by side."""
    return {
        rule: compare(
            frame,
            predicted,
            replace(rules, rule=cast(strategy.Rule, rule)),
            probability=probability,
        )
        for rule in strategy.RULES
    }


def trades_frame(comparison: Comparison) -> pd.DataFrame:
    """Every fill of every simulation, one row each (:data:`TRADE_COLUMNS`).

    ``entry_day`` and ``realised_pnl`` (proceeds minus the cost basis sold: the round
    trip's profit, costs included) are set on sells and NaT/NaN on buys.
    """
    rows = [
        (name, *(getattr(f, column) for column in TRADE_COLUMNS[1:]))
        for name, sim in comparison.runs.items()
        for f in sim.fills
    ]
    frame = pd.DataFrame(rows, columns=list(TRADE_COLUMNS))
    for column in ("decided", "day", "entry_day"):
        frame[column] = pd.to_datetime(frame[column])
    for column in ("quantity", "price", "cost", "realised_pnl"):
        frame[column] = frame[column].astype("float64")
    return frame.astype({"simulation": "object", "symbol": "object", "side": "object"})


def _dataset(ctx: Context, end: date | None) -> str:
    """The newest dataset whose rows reach ``end`` (the newest of all without it)."""
    return datasets.covering_version(ctx.engine, end)


def _model(ctx: Context, model: str) -> tuple[ModelRef | None, Any]:
    """The registered model to backtest (None and None for the naive forecast)."""
    settings = ctx.settings
    if model == NAIVE:
        return None, None
    if model == "champion":
        ref = champion(ctx.mlflow, settings.model_name, settings.champion_alias)
        if ref is None:
            raise ModelError(
                f"Model {settings.model_name!r} has no {settings.champion_alias!r} yet: "
                "train one, or backtest `--model naive`."
            )
    elif model.isdigit():
        ref = _version(ctx, model)
    else:
        raise ConfigError(f"--model must be champion, a version number or naive, got {model!r}.")
    return ref, load_registered(ctx.mlflow, ref)


def _version(ctx: Context, version: str) -> ModelRef:
    from mlflow.exceptions import MlflowException

    name = ctx.settings.model_name
    try:
        mv = ctx.mlflow.get_model_version(name, version)
    except MlflowException:
        raise ModelError(f"Model {name!r} has no version {version}.") from None
    return ModelRef(name=name, version=str(mv.version), run_id=mv.run_id, tags=dict(mv.tags))


def _trained_through(ref: ModelRef | None) -> date | None:
    """The model's last training day (its lineage ``as_of``); None for naive or no lineage."""
    lineage = ref.lineage if ref is not None else None
    return date.fromisoformat(lineage.as_of) if lineage and lineage.as_of else None


def _window(
    frame: pd.DataFrame,
    trained: date | None,
    start: date | None,
    end: date | None,
    allow_in_sample: bool,
    label: str,
) -> tuple[date, date]:
    """The first and last session of the window (see the module)."""
    days = sorted(pd.DatetimeIndex(frame["date"].unique()).date)
    last = min(end, days[-1]) if end else days[-1]
    unseen = [d for d in days if trained is not None and d > trained]
    if start is None:
        later = [d for d in unseen if d <= last]
        earlier = [d for d in days if d <= last]
        start = later[0] if later else earlier[max(len(earlier) - SESSIONS_PER_YEAR, 0)]
    inside = [d for d in days if start <= d <= last]
    if len(inside) < 2:
        raise ConfigError(
            f"The window {start} to {last} holds {len(inside)} session(s) of prepared data; "
            "a backtest needs at least two (data from "
            f"{days[0]} to {days[-1]} is prepared)."
        )
    if trained is not None and inside[0] <= trained and not allow_in_sample:
        first_unseen = (
            f"the first out-of-sample session is {unseen[0]}"
            if unseen
            else f"no prepared session is out of sample yet (the data ends {days[-1]})"
        )
        raise ConfigError(
            f"The window from {inside[0]} reaches into model {label}'s training data (its last "
            f"training day is {trained}): {first_unseen}; start after it, or pass "
            "--allow-in-sample to backtest in sample."
        )
    return inside[0], inside[-1]


def _predict(predictor: Any, window: pd.DataFrame) -> pd.Series:
    """Each row's predicted next close, a classifier's probability of a rise (NaN while
    indicators warm up); naive: the close."""
    if predictor is None:
        return window["close"].astype("float64")
    usable = ~window[WARMUP_COLUMN].astype(bool) if WARMUP_COLUMN in window else window["close"] > 0
    values = pd.Series(np.nan, index=window.index, dtype="float64")
    if usable.any():
        values[usable] = predict_scores(predictor, window[usable]).predicted_or_score()
    return values


def _is_classifier(predictor: Any) -> bool:
    """Whether the model's forecasts are a direction classifier's probabilities (naive, or
    a stand-in without a target: predicted closes)."""
    return is_classifier(str(getattr(predictor, "target", "")))


def _key(version: str, label: str, first: date, last: date, rules: Rules) -> str:
    fields = asdict(rules)
    if rules.order_type == MARKET:  # market orders: the keys they had before limit orders
        for name in ("order_type", "limit_buffer_bps", "time_in_force"):
            fields.pop(name)
    text = json.dumps([version, label, str(first), str(last), fields], default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{last:%Y%m%d}-{label}-{digest}"


def _title(result: BacktestResult, label: str) -> str:
    title = f"Backtest {label}, {result.start} to {result.end}, {result.symbols} symbols"
    if result.in_sample_sessions:
        title += f", {result.in_sample_sessions} of {result.sessions} sessions in sample"
    return title


def _publish(ctx: Context, result: BacktestResult, comparison: Comparison, label: str) -> None:
    """Summary, chart, curves and trades to the store, a row in the database, artifacts to
    MLflow."""
    rows = report.table(result.figures, label, result.in_sample_sessions)
    notes = [*result.notes, report.conditions(comparison.rules, comparison.market.probability)]
    summary = json.loads(json.dumps({**asdict(result), "notes": notes, "table": rows}, default=str))
    put_json(ctx.store, result.summary_key, summary)
    chart = report.report_html(
        comparison,
        label,
        _title(result, label),
        trained_through=result.trained_through,
        notes=result.notes,
    )
    ctx.store.put_bytes(result.chart_key, chart.encode(), "text/html")
    curves = pd.DataFrame(
        {"date": pd.to_datetime(comparison.market.days)}
        | {name: sim.equity for name, sim in comparison.runs.items()}
    )
    put_parquet(ctx.store, f"{PREFIX}/{result.run_key}/curves.parquet", curves)
    put_parquet(ctx.store, result.trades_key, trades_frame(comparison))
    with ctx.engine.begin() as conn:
        insert_new(conn, backtest_runs, [_row(result, summary)], keys=["run_key"])
    if result.mlflow_run_id is not None:
        client = ctx.mlflow
        folder = f"{PREFIX}/{result.run_key}"
        client.log_dict(result.mlflow_run_id, summary, f"{folder}/summary.json")
        with tempfile.TemporaryDirectory(prefix="mlops-backtest-") as tmp:
            path = Path(tmp) / "equity.html"
            path.write_text(chart)
            client.log_artifact(result.mlflow_run_id, str(path), folder)


# What the dashboard reads from a run's row (its ``summary`` column).
ROW_SUMMARY = (
    "table",
    "figures",
    "notes",
    "sessions",
    "in_sample_sessions",
    "trained_through",
    "costs",
    "risk_free_rate",
    "trades_key",
)


def _row(result: BacktestResult, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_key": result.run_key,
        "model": result.model,
        "model_version": result.model_version,
        "start_date": result.start,
        "end_date": result.end,
        "symbols": result.symbols,
        "summary": json.dumps({k: summary[k] for k in ROW_SUMMARY}),
        "table_key": result.summary_key,
        "chart_key": result.chart_key,
        "mlflow_run_id": result.mlflow_run_id,
        "created_at": utcnow(),
    }


def _log(result: BacktestResult, label: str, rules: Rules) -> None:
    if result.threshold_not_reached:
        log.warning("%s", result.threshold_not_reached)
    model, naive, hold = (result.figures[c] for c in COLUMNS)
    sharpe = performance.formatted(model["sharpe"], "ratio")
    interval = performance.cell(model, "sharpe_ci", "interval")
    log.info(
        "Backtest %s %s..%s, %d symbols, %d sessions: model %+.2f%% "
        "(Sharpe %s, 95 %% %s; %d trades), naive %+.2f%% (%d trades), buy-and-hold %+.2f%% "
        "(%d trades). %s%s (%.1f s)",
        label,
        result.start,
        result.end,
        result.symbols,
        result.sessions,
        100 * (model["total_return"] or 0.0),
        sharpe,
        interval,
        int(model["trades"] or 0),
        100 * (naive["total_return"] or 0.0),
        int(naive["trades"] or 0),
        100 * (hold["total_return"] or 0.0),
        int(hold["trades"] or 0),
        report.conditions(rules, result.probability),
        "".join(f" {n}" for n in result.notes),
        result.seconds,
    )
