"""``mlops backtest``: the live strategy walked forward over the prepared history, with costs.

The model (``champion``, a registered version, or ``naive``: tomorrow's close = today's)
predicts every session's close from that session's feature rows (features are causal),
then :func:`mlops.trading.simulation.simulate` trades them with the live strategy and
risk code, filling at the next session's open with slippage and commission. Three
columns side by side: the model, the naive forecast as the model (the same strategy on
"no change" forecasts), and buy-and-hold of the same universe.

Outputs: ``backtests/<key>/summary.json`` (figures and table), ``equity.html`` (the
equity curves) and ``curves.parquet`` in the store, a row in ``backtest_runs`` (the
dashboard lists them), and with a registered model the summary and chart as artifacts
of its MLflow run (``backtests/<key>/``).

By default the window starts the session after the model's training data ends (its
lineage ``as_of``): only out-of-sample days; ``--from`` may reach into the training
window, and the summary counts those in-sample days.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.context import Context
from mlops.contracts import datasets
from mlops.contracts.columns import WARMUP_COLUMN
from mlops.contracts.models import ModelRef, champion, load_registered, predict_close
from mlops.db.schema import backtest_runs
from mlops.db.upsert import insert_new
from mlops.errors import ConfigError, ModelError
from mlops.runs import utcnow
from mlops.store import put_json, put_parquet
from mlops.trading import performance
from mlops.trading.risk import RiskLimits
from mlops.trading.simulation import (
    SESSIONS_PER_YEAR,
    Costs,
    Market,
    Rules,
    Simulation,
    buy_and_hold,
    simulate,
)

log = logging.getLogger(__name__)

PREFIX = "backtests"
NAIVE = "naive"
COLUMNS = ("model", "naive", "buy_and_hold")


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
    costs: dict[str, float]
    figures: dict[str, dict[str, float | None]]
    summary_key: str
    chart_key: str
    mlflow_run_id: str | None
    seconds: float


@dataclass
class Comparison:
    """The three simulations of one window and their figures."""

    market: Market
    runs: dict[str, Simulation]
    figures: dict[str, dict[str, float | None]]


def run(
    ctx: Context,
    as_of: date | None = None,
    *,
    model: str = "champion",
    start: date | None = None,
    end: date | None = None,
) -> BacktestResult:
    """Backtest ``model`` from ``start`` to ``end`` (see the module)."""
    began = time.perf_counter()
    end = end or as_of
    version = datasets.latest_version(ctx.engine, end)
    _, frame = datasets.load(ctx.store, version)
    ref, predictor = _model(ctx, model)
    first, last = _window(frame, ref, start, end)
    window = frame[(frame["date"] >= pd.Timestamp(first)) & (frame["date"] <= pd.Timestamp(last))]
    window = window.reset_index(drop=True)
    predicted = _predict(predictor, window)
    rules = rules_from(ctx.settings)
    comparison = compare(window, predicted, rules)
    label = NAIVE if ref is None else f"v{ref.version}"
    key = _key(version, label, first, last, rules)
    result = BacktestResult(
        run_key=key,
        model=model,
        model_version=None if ref is None else ref.version,
        dataset_version=version,
        start=comparison.market.days[0],
        end=comparison.market.days[-1],
        sessions=len(comparison.market.days),
        symbols=len(comparison.market.symbols),
        in_sample_sessions=_in_sample(comparison.market.days, ref),
        costs=asdict(rules.costs),
        figures=comparison.figures,
        summary_key=f"{PREFIX}/{key}/summary.json",
        chart_key=f"{PREFIX}/{key}/equity.html",
        mlflow_run_id=None if ref is None else ref.run_id,
        seconds=0.0,
    )
    _publish(ctx, result, comparison, label)
    result.seconds = round(time.perf_counter() - began, 2)
    _log(result, label)
    return result


def rules_from(settings: Any) -> Rules:
    return Rules(
        threshold=settings.trade_threshold,
        max_position_value=settings.trade_max_position_value,
        limits=RiskLimits.from_settings(settings),
        initial_cash=settings.paper_initial_cash,
        costs=Costs(settings.backtest_slippage_bps, settings.backtest_commission_per_share),
    )


def compare(frame: pd.DataFrame, predicted: pd.Series, rules: Rules) -> Comparison:
    """The model, the naive forecast and buy-and-hold over the sessions of ``frame``."""
    market = Market.from_frame(frame, predicted)
    naive = Market(
        market.days, market.symbols, market.open, market.close, market.last_close, market.close
    )
    runs = {
        "model": simulate(market, rules),
        "naive": simulate(naive, rules),
        "buy_and_hold": buy_and_hold(market, rules.initial_cash, rules.costs),
    }
    figures = {name: performance.figures(sim, rules.initial_cash) for name, sim in runs.items()}
    return Comparison(market=market, runs=runs, figures=figures)


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


def _window(
    frame: pd.DataFrame, ref: ModelRef | None, start: date | None, end: date | None
) -> tuple[date, date]:
    days = sorted(pd.DatetimeIndex(frame["date"].unique()).date)
    last = min(end, days[-1]) if end else days[-1]
    if start is None:
        trained = ref.lineage.as_of if ref is not None and ref.lineage else ""
        later = [d for d in days if trained and d > date.fromisoformat(trained) and d <= last]
        earlier = [d for d in days if d <= last]
        start = later[0] if later else earlier[max(len(earlier) - SESSIONS_PER_YEAR, 0)]
    inside = [d for d in days if start <= d <= last]
    if len(inside) < 2:
        raise ConfigError(
            f"The window {start} to {last} holds {len(inside)} session(s) of prepared data; "
            "a backtest needs at least two (data from "
            f"{days[0]} to {days[-1]} is prepared)."
        )
    return inside[0], inside[-1]


def _predict(predictor: Any, window: pd.DataFrame) -> pd.Series:
    """Each row's predicted next close (NaN while indicators warm up); naive: the close."""
    if predictor is None:
        return window["close"].astype("float64")
    usable = ~window[WARMUP_COLUMN].astype(bool) if WARMUP_COLUMN in window else window["close"] > 0
    values = pd.Series(np.nan, index=window.index, dtype="float64")
    if usable.any():
        values[usable] = predict_close(predictor, window[usable])
    return values


def _in_sample(days: list[date], ref: ModelRef | None) -> int:
    trained = ref.lineage.as_of if ref is not None and ref.lineage else ""
    return sum(d <= date.fromisoformat(trained) for d in days) if trained else 0


def _key(version: str, label: str, first: date, last: date, rules: Rules) -> str:
    text = json.dumps([version, label, str(first), str(last), asdict(rules)], default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{last:%Y%m%d}-{label}-{digest}"


def table(figures: dict[str, dict[str, float | None]], label: str) -> list[dict[str, str]]:
    """The figures as rows: one per figure, one column per simulation."""
    names = {"model": f"model {label}", "naive": "naive forecast", "buy_and_hold": "buy-and-hold"}
    return [
        {"figure": title, **{names[c]: performance.formatted(figures[c][k], kind) for c in COLUMNS}}
        for k, title, kind in performance.FIGURES
    ]


def _publish(ctx: Context, result: BacktestResult, comparison: Comparison, label: str) -> None:
    """Summary, chart and curves to the store, a row in the database, artifacts to MLflow."""
    rows = table(result.figures, label)
    summary = {**asdict(result), "table": rows}
    put_json(ctx.store, result.summary_key, json.loads(json.dumps(summary, default=str)))
    chart = equity_html(comparison, label, result)
    ctx.store.put_bytes(result.chart_key, chart.encode(), "text/html")
    curves = pd.DataFrame(
        {"date": pd.to_datetime(comparison.market.days)}
        | {name: sim.equity for name, sim in comparison.runs.items()}
    )
    put_parquet(ctx.store, f"{PREFIX}/{result.run_key}/curves.parquet", curves)
    with ctx.engine.begin() as conn:
        insert_new(conn, backtest_runs, [_row(result, rows)], keys=["run_key"])
    if result.mlflow_run_id is not None:
        client = ctx.mlflow
        folder = f"{PREFIX}/{result.run_key}"
        payload = json.loads(json.dumps(summary, default=str))
        client.log_dict(result.mlflow_run_id, payload, f"{folder}/summary.json")
        with tempfile.TemporaryDirectory(prefix="mlops-backtest-") as tmp:
            path = Path(tmp) / "equity.html"
            path.write_text(chart)
            client.log_artifact(result.mlflow_run_id, str(path), folder)


def _row(result: BacktestResult, rows: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "run_key": result.run_key,
        "model": result.model,
        "model_version": result.model_version,
        "start_date": result.start,
        "end_date": result.end,
        "symbols": result.symbols,
        "summary": json.dumps({"table": rows, "figures": result.figures}),
        "table_key": result.summary_key,
        "chart_key": result.chart_key,
        "mlflow_run_id": result.mlflow_run_id,
        "created_at": utcnow(),
    }


def equity_html(comparison: Comparison, label: str, result: BacktestResult) -> str:
    """The three equity curves as a self-contained HTML page (inline SVG, no script)."""
    width, height, pad = 900, 360, 50
    days = comparison.market.days
    series = {
        f"model {label}": comparison.runs["model"].equity,
        "naive forecast": comparison.runs["naive"].equity,
        "buy-and-hold": comparison.runs["buy_and_hold"].equity,
    }
    low = min(float(np.min(v)) for v in series.values())
    high = max(float(np.max(v)) for v in series.values())
    span = (high - low) or 1.0
    step = max(len(days) // 600, 1)  # at most ~600 points a line
    colors = ["#1f77b4", "#7f7f7f", "#d62728"]
    lines = []
    for n, (name, values) in enumerate(series.items()):
        points = " ".join(
            f"{pad + i * (width - 2 * pad) / max(len(days) - 1, 1):.1f},"
            f"{height - pad - (float(values[i]) - low) * (height - 2 * pad) / span:.1f}"
            for i in [*range(0, len(days), step), len(days) - 1]
        )
        lines.append(
            f'<polyline fill="none" stroke="{colors[n]}" stroke-width="1.5" points="{points}"/>'
            f'<text x="{pad + n * 220}" y="16" fill="{colors[n]}">{html.escape(name)}</text>'
        )
    rows = table(result.figures, label)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    title = f"Backtest {label}, {days[0]} to {days[-1]}, {len(comparison.market.symbols)} symbols"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:3px 8px}table{border-collapse:collapse}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<svg width="{width}" height="{height}" font-size="12" role="img">{"".join(lines)}'
        f'<text x="{pad}" y="{height - 15}">{days[0]}</text>'
        f'<text x="{width - pad - 70}" y="{height - 15}">{days[-1]}</text>'
        f'<text x="2" y="{pad}">{high:,.0f}</text><text x="2" y="{height - pad}">{low:,.0f}</text>'
        f"</svg><table><tr>{head}</tr>{body}</table>"
        f"<p>Costs: {result.costs['slippage_bps']:g} bp slippage, "
        f"{result.costs['commission_per_share']:g} per share; fills at the next open.</p>"
        "</body></html>"
    )


def _log(result: BacktestResult, label: str) -> None:
    model, naive, hold = (result.figures[c] for c in COLUMNS)
    log.info(
        "Backtest %s %s..%s, %d symbols: model %+.2f%% (Sharpe %s, %d trades), naive %+.2f%%, "
        "buy-and-hold %+.2f%%; %.1f s",
        label,
        result.start,
        result.end,
        result.symbols,
        100 * (model["total_return"] or 0.0),
        performance.formatted(model["sharpe"], "ratio"),
        int(model["trades"] or 0),
        100 * (naive["total_return"] or 0.0),
        100 * (hold["total_return"] or 0.0),
        result.seconds,
    )
