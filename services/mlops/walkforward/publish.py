"""The walk-forward's finalize step and its outputs, immutable under ``walkforward/<key>/``:

* ``predictions.parquet``: every prediction that served (day, symbol, model, point,
  trained_to, prediction, role: champion or challenger);
* ``champions.parquet``: the timeline, one row per model and retrain period (who served,
  the gate's decision and figures, the period's forecast and trading figures);
* ``trades.parquet``: every fill with its costs, and each round trip's P&L, per model;
* ``curves.parquet``: equity per session of each model, the naive forecast and
  buy-and-hold; ``ic.parquet``: each session's IC and Rank IC per model;
* ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from mlops.context import Context
from mlops.contracts.keys import walkforward_output_keys
from mlops.store import ObjectStore, put_json, put_parquet
from mlops.trading import backtest
from mlops.trading.simulation import Rules
from mlops.walkforward import figures, points, report
from mlops.walkforward.plan import Plan
from mlops.walkforward.timeline import (
    CHAMPION,
    Period,
    champion_timeline,
    served_predictions,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finalized:
    """What finalize published: the summary, the keys, the gate's periods, the page."""

    summary: dict[str, Any]
    keys: dict[str, str]
    periods: list[Period]
    report: str


def write_plan(store: ObjectStore, plan: Plan) -> None:
    put_json(store, walkforward_output_keys(plan.key)["plan"], plan.to_dict())


def finalize(
    ctx: Context, plan: Plan, frame: pd.DataFrame, rules: Rules, timings: dict[str, float]
) -> Finalized:
    """Gate, figures and outputs of a walk-forward whose points are all trained."""
    began = time.perf_counter()
    results = {p.index: points.load_result(ctx.store, plan, p.index) for p in plan.points}
    # A point's candidate, and each model's champion and challenger of the time.
    predictions = points.PointPredictions(ctx.store, plan, keep=2 * len(plan.models) + 1)
    periods = champion_timeline(ctx.settings, plan, frame, results, predictions)
    served = served_predictions(plan, periods, predictions)
    timings["gate"] = round(time.perf_counter() - began, 2)
    began = time.perf_counter()
    window = figures.window_rows(frame, plan.start, plan.end)
    per_model, champions, curves, ics = {}, [], None, []
    trades: dict[str, pd.DataFrame] = {}
    comparisons = {}
    for model in plan.models:
        predicted = figures.aligned(window, served, model, CHAMPION)
        comparison = backtest.compare(window, predicted, rules)
        comparisons[model] = comparison
        mine = [p for p in periods if p.model == model]
        rows = figures.period_figures(
            mine, window, predicted, comparison, rules.initial_cash, plan.end
        )
        champions.extend(rows)
        per_model[model] = {
            "forecast": figures.forecast_figures(window, predicted.to_numpy(), plan.end),
            "trading": comparison.figures["model"],
            "sessions_without_champion": sum(p.sessions for p in mine if p.champion is None),
            "promotions": sum(p.promoted for p in mine),
        }
        trades[model] = backtest.trades_frame(comparison)
        ics.append(
            figures.daily_ic_rows(window, predicted.to_numpy(), plan.end).assign(model=model)
        )
        curve = pd.DataFrame(
            {"date": pd.to_datetime(comparison.market.days), model: comparison.runs["model"].equity}
        )
        curves = curve if curves is None else curves.merge(curve, on="date")
    first = comparisons[plan.models[0]]
    assert curves is not None
    curves["naive"] = first.runs["naive"].equity
    curves["buy_and_hold"] = first.runs["buy_and_hold"].equity
    timings["simulate"] = round(time.perf_counter() - began, 2)
    summary = _summary(ctx, plan, window, served, per_model, first, rules, timings)
    keys = walkforward_output_keys(plan.key)
    put_parquet(ctx.store, keys["predictions"], served)
    put_parquet(ctx.store, keys["champions"], _table(champions))
    every = [frame_.assign(model=model) for model, frame_ in trades.items()]
    put_parquet(ctx.store, keys["trades"], pd.concat(every, ignore_index=True))
    put_parquet(ctx.store, keys["curves"], curves)
    put_parquet(ctx.store, keys["ic"], pd.concat(ics, ignore_index=True))
    page = report.render(plan, summary, periods, champions, curves, trades)
    ctx.store.put_bytes(keys["report"], page.encode(), "text/html")
    put_json(ctx.store, keys["summary"], summary)  # last: the run's outputs are complete
    return Finalized(summary, keys, periods, page)


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for name in ("trained_to", "first", "last", "champion_trained_to"):
        table[name] = pd.to_datetime(table[name])
    for name in ("champion", "challenger"):
        table[name] = table[name].astype("Int64")
    return table


def _summary(
    ctx: Context,
    plan: Plan,
    window: pd.DataFrame,
    served: pd.DataFrame,
    per_model: dict[str, Any],
    first: backtest.Comparison,
    rules: Rules,
    timings: dict[str, float],
) -> dict[str, Any]:
    champion_rows = served[served["role"] == CHAMPION]
    in_sample = int((champion_rows["trained_to"] >= champion_rows["day"]).sum())
    summary = {
        "run_key": plan.key,
        "dataset_version": plan.dataset_version,
        "from": plan.start,
        "to": plan.end,
        "sessions": len(first.market.days),
        "symbols": len(first.market.symbols),
        "retrain_every": plan.retrain_every,
        "window": plan.window,
        "retrain_points": [
            {"index": p.index, "trained_to": p.trained_to, "first": p.first, "last": p.last}
            for p in plan.points
        ],
        "models": per_model,
        "benchmarks": {
            "naive": first.figures["naive"],
            "buy_and_hold": first.figures["buy_and_hold"],
        },
        # Predictions made by a version trained on the session they predict or later:
        # none, by construction (each point's versions serve only after trained_to).
        "in_sample_sessions": in_sample,
        "risk_free_rate": 0.0,
        "threshold": rules.threshold,
        "costs": {
            "slippage_bps": rules.costs.slippage_bps,
            "commission_per_share": rules.costs.commission_per_share,
        },
        "fills": "next session's open",
        "promotion_max_p_value": ctx.settings.promotion_max_p_value,
        "timings": dict(timings),
    }
    return json.loads(json.dumps(summary, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def log_summary(summary: dict[str, Any]) -> None:
    hold = summary["benchmarks"]["buy_and_hold"]
    for model, figures_ in summary["models"].items():
        forecast, trading = figures_["forecast"], figures_["trading"]
        log.info(
            "Walk-forward %s, %s..%s (%d sessions, 0 in sample), %s: IC %s, Rank IC %s, "
            "MAPE %s vs naive %s; return %+.2f%%, Sharpe %s, %d trades; buy-and-hold %+.2f%%",
            summary["run_key"],
            summary["from"],
            summary["to"],
            summary["sessions"],
            model,
            _fmt(forecast.get("ic_mean"), ".4f"),
            _fmt(forecast.get("rank_ic_mean"), ".4f"),
            _fmt(forecast.get("mape"), ".4%"),
            _fmt(forecast.get("naive_mape"), ".4%"),
            100 * (trading.get("total_return") or 0.0),
            _fmt(trading.get("sharpe"), ".2f"),
            int(trading.get("trades") or 0),
            100 * (hold.get("total_return") or 0.0),
        )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
