"""What the dashboard shows from the database, as data frames read fresh per request."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from mlops.db.schema import (
    backtest_runs,
    equity_snapshots,
    model_actions,
    monitoring_metrics,
    retrain_requests,
    stage_runs,
)

# The quality figures of the headline chart (monitoring_metrics, symbol ALL).
QUALITY_METRICS = ("mape", "wmape", "mae", "rmse", "directional_accuracy", "ic", "rank_ic")
# Figures of single sessions (window_days 1, dated each session), not of a monitored day's
# window: they do not say which days were monitored.
SESSION_METRICS = ("ic", "rank_ic")
# The monitor's retrain triggers, one 0/1 row per monitored day each.
TRIGGERS = ("trigger_mape", "trigger_naive_ratio", "trigger_drift")
DRIFT_METRICS = ("drift_share", "drift_threshold")


@dataclass
class Figures:
    """Everything the page shows from the database."""

    metrics: pd.DataFrame  # long: metric_date, model_name, model_version, metric, value
    equity: pd.DataFrame
    backtests: pd.DataFrame
    runs: pd.DataFrame
    retrains: pd.DataFrame
    actions: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)


def load_figures(engine: Engine, broker: str | None = None) -> Figures:
    """Read every table the page shows (equity of one broker when ``broker`` is given)."""
    equity_query = select(equity_snapshots).order_by(
        equity_snapshots.c.snapshot_date, equity_snapshots.c.id
    )
    if broker:
        equity_query = equity_query.where(equity_snapshots.c.broker == broker)
    metric_columns = [
        monitoring_metrics.c.metric_date,
        monitoring_metrics.c.model_name,
        monitoring_metrics.c.model_version,
        monitoring_metrics.c.metric,
        monitoring_metrics.c.value,
    ]
    with engine.connect() as conn:
        metrics = pd.read_sql(
            select(*metric_columns)
            .where(monitoring_metrics.c.symbol == "ALL")
            .order_by(monitoring_metrics.c.metric_date),
            conn,
        )
        equity = pd.read_sql(equity_query, conn)
        backtests = pd.read_sql(
            select(backtest_runs).order_by(backtest_runs.c.id.desc()).limit(10), conn
        )
        runs = pd.read_sql(
            select(stage_runs).order_by(stage_runs.c.started_at.desc()).limit(30), conn
        )
        retrains = pd.read_sql(
            select(retrain_requests).order_by(retrain_requests.c.requested_date.desc()).limit(20),
            conn,
        )
        actions = pd.read_sql(
            select(model_actions).order_by(model_actions.c.id.desc()).limit(20), conn
        )
    if not metrics.empty:
        metrics["metric_date"] = pd.to_datetime(metrics["metric_date"])
        metrics["model_version"] = metrics["model_version"].astype(str)
    return Figures(metrics, equity, backtests, runs, retrains, actions)


def series_label(model_name: str, model_version: str) -> str:
    return f"{model_name}:{model_version}"


def quality(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per day and model version for ``metric``, with the naive forecast's
    figure of the same day beside it (``naive``; NaN when the metric has none).
    """
    columns = ["metric_date", "model_name", "model_version", "value", "naive"]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    mine = metrics[metrics["metric"] == metric]
    naive = metrics[metrics["metric"] == f"naive_{metric}"]
    keys = ["metric_date", "model_name", "model_version"]
    merged = mine[[*keys, "value"]].merge(
        naive[[*keys, "value"]].rename(columns={"value": "naive"}), on=keys, how="left"
    )
    return merged.sort_values(keys).reset_index(drop=True)[columns]


def naive_series(frame: pd.DataFrame) -> pd.Series:
    """The naive forecast's figure per day (one model version's days may be another's
    subset: the day's first version that has it)."""
    if frame.empty:
        return pd.Series(dtype="float64")
    return frame.dropna(subset=["naive"]).groupby("metric_date")["naive"].first()


def drift(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per day: the drift share and its calibrated threshold (the trading champion's)."""
    if metrics.empty:
        return pd.DataFrame(columns=["metric_date", *DRIFT_METRICS])
    rows = metrics[metrics["metric"].isin(DRIFT_METRICS)]
    if rows.empty:
        return pd.DataFrame(columns=["metric_date", *DRIFT_METRICS])
    table = rows.pivot_table(index="metric_date", columns="metric", values="value", aggfunc="last")
    return table.reindex(columns=list(DRIFT_METRICS)).reset_index()


def trigger_counts(metrics: pd.DataFrame) -> dict[str, int]:
    """How many monitored days each retrain trigger fired on (its 0/1 rows summed)."""
    counts = dict.fromkeys(TRIGGERS, 0)
    if metrics.empty:
        return counts
    rows = metrics[metrics["metric"].isin(TRIGGERS)]
    per_day = rows.groupby(["metric", "metric_date"])["value"].max()
    for (metric, _day), value in per_day.items():
        counts[str(metric)] += int(value is not None and value >= 0.5)
    return counts


def live_figures(metrics: pd.DataFrame, window_days: int) -> dict[tuple[str, str], dict]:
    """Per model version: mean MAPE and the naive's over its last ``window_days`` monitored
    days, and its latest live Diebold-Mariano p-values."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    if metrics.empty:
        return found
    monitored = metrics[~metrics["metric"].isin(SESSION_METRICS)]
    for (name, version), rows in monitored.groupby(["model_name", "model_version"]):
        days = sorted(rows["metric_date"].unique())[-window_days:]
        recent = rows[rows["metric_date"].isin(days)]
        figures: dict[str, float] = {}
        for metric in ("mape", "naive_mape"):
            values = recent.loc[recent["metric"] == metric, "value"].dropna()
            if not values.empty:
                figures[f"live_{metric}"] = float(values.mean())
        for metric in ("dm_p_naive", "dm_p_champion"):
            values = rows.loc[rows["metric"] == metric].sort_values("metric_date")["value"]
            values = values.dropna()
            if not values.empty:
                figures[f"live_{metric}"] = float(values.iloc[-1])
        found[(str(name), str(version))] = figures
    return found


def backtest_tables(backtests: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Each stored backtest run with its summary table; the run's ``details`` hold the rest
    of its summary (notes, sessions in sample, costs, risk-free rate, the trades' key)."""
    found = []
    for run in backtests.to_dict("records"):
        summary = json.loads(run["summary"])
        details = {k: v for k, v in summary.items() if k != "table"}
        found.append(({**run, "details": details}, pd.DataFrame(summary.get("table", []))))
    return found


def backtest_trades_key(summary: str, chart_key: str) -> str:
    """Where a backtest run's trade list is stored (next to its chart for older runs)."""
    key = json.loads(summary).get("trades_key")
    return str(key) if key else chart_key.rsplit("/", 1)[0] + "/trades.parquet"


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows (dates as ISO strings, NaN as null)."""
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records", date_format="iso"))
