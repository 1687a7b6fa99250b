"""What the dashboard shows, read fresh per request: data frames from the database, and a
walk-forward's outputs from the store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from mlops.contracts import live_figures
from mlops.contracts.keys import walkforward_output_keys
from mlops.db.schema import (
    alerts,
    backtest_runs,
    equity_snapshots,
    model_actions,
    monitoring_metrics,
    retrain_requests,
    stage_runs,
    walkforward_runs,
)
from mlops.store import ObjectStore, get_parquet

# The quality figures of the headline charts (monitoring_metrics, symbol ALL): each
# session's own (window_days 1) and the trailing window's (window_days N).
QUALITY_METRICS = ("mape", "wmape", "mae", "rmse", "directional_accuracy", "ic", "rank_ic")
SESSION = live_figures.SESSION
# The monitor's retrain triggers, one 0/1 row per monitored day each.
TRIGGERS = ("trigger_mape", "trigger_naive_ratio", "trigger_drift")
DRIFT_METRICS = ("drift_share", "drift_threshold")


@dataclass
class Figures:
    """Everything the page shows from the database."""

    # long: metric_date, model_name, model_version, window_days, metric, value
    metrics: pd.DataFrame
    equity: pd.DataFrame
    backtests: pd.DataFrame
    runs: pd.DataFrame
    retrains: pd.DataFrame
    actions: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)


def load_figures(
    engine: Engine,
    broker: str | None = None,
    *,
    account: str | None = None,
    strategy: str | None = None,
) -> Figures:
    """Read every table the page shows (the equity of one broker, account or strategy when
    given)."""
    equity_query = select(equity_snapshots).order_by(
        equity_snapshots.c.snapshot_date, equity_snapshots.c.id
    )
    for column, wanted in (("broker", broker), ("account", account), ("strategy", strategy)):
        if wanted:
            equity_query = equity_query.where(equity_snapshots.c[column] == wanted)
    metric_columns = [
        monitoring_metrics.c.metric_date,
        monitoring_metrics.c.model_name,
        monitoring_metrics.c.model_version,
        monitoring_metrics.c.window_days,
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


def latest_alerts(engine: Engine, limit: int = 20) -> pd.DataFrame:
    """The newest alerts sent or attempted (mlops.alerts), newest first."""
    query = select(alerts).order_by(alerts.c.created_at.desc(), alerts.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def series_label(model_name: str, model_version: str) -> str:
    return f"{model_name}:{model_version}"


def quality(metrics: pd.DataFrame, metric: str, *, window: bool = False) -> pd.DataFrame:
    """One row per day and model version for ``metric``: each session's own figure, or
    (``window``) the trailing window's dated the monitored day, with ``window_days``; the
    naive forecast's figure of the same rows beside it (``naive``; NaN when it has none).
    """
    columns = ["metric_date", "model_name", "model_version", "window_days", "value", "naive"]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    kind = metrics["window_days"] != SESSION if window else metrics["window_days"] == SESSION
    metrics = metrics[kind]
    mine = metrics[metrics["metric"] == metric]
    naive = metrics[metrics["metric"] == f"naive_{metric}"]
    keys = ["metric_date", "model_name", "model_version", "window_days"]
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


# Walk-forwards: the runs in the database, their outputs in the store.

WALKFORWARD_DONE = "succeeded"


def latest_walkforwards(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    """The latest ``limit`` walk-forward runs, newest first, each with its summary parsed
    (``{}`` while it runs)."""
    query = select(walkforward_runs).order_by(walkforward_runs.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        found = [dict(row) for row in conn.execute(query).mappings()]
    return [{**run, "summary": _summary(run.get("summary"))} for run in found]


def walkforward_run(engine: Engine, run_key: str) -> dict[str, Any] | None:
    """The ``walkforward_runs`` row of ``run_key`` (its summary parsed), or None."""
    query = select(walkforward_runs).where(walkforward_runs.c.run_key == run_key)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else {**dict(row), "summary": _summary(row["summary"])}


def _summary(text: str | None) -> dict[str, Any]:
    try:
        summary = json.loads(text) if text else {}
    except ValueError:
        return {}
    return summary if isinstance(summary, dict) else {}


def walkforward_output(store: ObjectStore, run_key: str, name: str) -> pd.DataFrame:
    """One of a walk-forward's tables (``curves``, ``champions``, ``trades``, ``ic``)."""
    return get_parquet(store, walkforward_output_keys(run_key)[name])


def walkforward_report_key(run: dict[str, Any]) -> str:
    return str(run.get("report_key") or walkforward_output_keys(run["run_key"])["report"])


def walkforward_description(run: dict[str, Any]) -> str:
    """One line: the window, the retrain cadence, the points, the models and the sessions
    in sample (from the summary, when the run has one)."""
    summary = run["summary"]
    line = f"{run['start_date']} to {run['end_date']}"
    sessions = summary.get("sessions")
    if sessions is not None:
        line += f", {sessions} sessions"
    if summary.get("symbols") is not None:
        line += f", {summary['symbols']} symbols"
    line += (
        f"; retrained every {run['retrain_every']} sessions ({run['window']} window), "
        f"{run['points']} retrain points; models {', '.join(_models(run))}"
    )
    in_sample = summary.get("in_sample_sessions")
    if in_sample is not None and sessions is not None:
        line += f"; {in_sample} of {sessions} sessions in sample"
    return line


def _models(run: dict[str, Any]) -> list[str]:
    return [m for m in str(run.get("models") or "").split(",") if m]


def walkforward_headline(summary: dict[str, Any]) -> pd.DataFrame:
    """The summary's headline figures, one row per model beside the naive forecast and
    buy-and-hold, formatted as the report formats them."""
    rows = []
    for model, figures in (summary.get("models") or {}).items():
        forecast, trading = figures.get("forecast") or {}, figures.get("trading") or {}
        rows.append(
            {
                "": f"model {model}",
                "IC (t)": _with_t(forecast, "ic"),
                "Rank IC (t)": _with_t(forecast, "rank_ic"),
                "MAPE": _num(forecast.get("mape"), ".4%"),
                "naive MAPE": _num(forecast.get("naive_mape"), ".4%"),
                "DM p vs naive": _num(forecast.get("dm_p_value_naive"), ".4f"),
                **_trading_cells(trading),
            }
        )
    labels = {"naive": "naive forecast", "buy_and_hold": "buy-and-hold"}
    for name, trading in (summary.get("benchmarks") or {}).items():
        rows.append({"": labels.get(name, name), **_trading_cells(trading or {})})
    columns = ["", "IC (t)", "Rank IC (t)", "MAPE", "naive MAPE", "DM p vs naive"]
    columns += ["total return", "Sharpe [95 % CI]", "max drawdown", "trades"]
    return pd.DataFrame(rows, columns=columns).fillna("-")


def _trading_cells(trading: dict[str, Any]) -> dict[str, str]:
    sharpe = _num(trading.get("sharpe"), ".2f")
    low, high = trading.get("sharpe_ci_low"), trading.get("sharpe_ci_high")
    if low is not None and high is not None:
        sharpe += f" [{_num(low, '.2f')}, {_num(high, '.2f')}]"
    return {
        "total return": _num(trading.get("total_return"), "+.2%"),
        "Sharpe [95 % CI]": sharpe,
        "max drawdown": _num(trading.get("max_drawdown"), ".2%"),
        "trades": _num(trading.get("trades"), ".0f"),
    }


def _with_t(forecast: dict[str, Any], name: str) -> str:
    mean, t = forecast.get(f"{name}_mean"), forecast.get(f"{name}_t")
    return _num(mean, ".4f") + ("" if t is None else f" (t {_num(t, '.2f')})")


def _num(value: Any, spec: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "-"
    return format(int(value), spec) if spec == "d" else format(value, spec)


def walkforward_timeline(champions: pd.DataFrame, gate: bool = False) -> pd.DataFrame:
    """The champion timeline as the page shows it: per model and retrain period, who
    served, the gate's decision on that point's version and why, the period's IC and
    returns (and with ``gate``, the MAPEs and p-values the gate compared)."""
    columns = [
        "model",
        "period",
        "sessions",
        "served by",
        "retrain point",
        "gate decision",
        "challenger",
        "reason",
        "IC",
        "Rank IC",
        "return",
        "buy-and-hold",
        "trades",
    ]
    figures = {
        "candidate MAPE": ("candidate_mape", ".4%"),
        "naive MAPE": ("naive_mape", ".4%"),
        "champion MAPE": ("champion_mape", ".4%"),
        "DM p vs naive": ("p_value_naive", ".4f"),
        "DM p vs champion": ("p_value_champion", ".4f"),
    }
    if gate:
        columns[6:6] = list(figures)
    rows = []
    for r in champions.to_dict("records"):
        rows.append(
            {
                "model": r.get("model"),
                "period": f"{_day(r.get('first'))} to {_day(r.get('last'))}",
                "sessions": _num(r.get("sessions"), "d"),
                "served by": _served_by(r),
                "retrain point": f"{r.get('point')} (trained to {_day(r.get('trained_to'))})",
                "gate decision": "promoted" if r.get("promoted") else "rejected",
                "challenger": _point(r.get("challenger")),
                "reason": r.get("reason") or "",
                "IC": _num(r.get("forecast_ic_mean"), ".4f"),
                "Rank IC": _num(r.get("forecast_rank_ic_mean"), ".4f"),
                "return": _num(r.get("return"), "+.2%"),
                "buy-and-hold": _num(r.get("buy_and_hold_return"), "+.2%"),
                "trades": _num(r.get("trades"), "d"),
                **{label: _num(r.get(name), spec) for label, (name, spec) in figures.items()},
            }
        )
    return pd.DataFrame(rows, columns=columns)


def walkforward_period_ic(champions: pd.DataFrame) -> pd.DataFrame:
    """Per model and retrain period: its first and last session, mean IC and Rank IC."""
    columns = ["model", "first", "last", "ic", "rank_ic"]
    if champions.empty:
        return pd.DataFrame(columns=columns)
    found = pd.DataFrame(
        {
            "model": champions["model"].astype(str),
            "first": pd.to_datetime(champions["first"]),
            "last": pd.to_datetime(champions["last"]),
            "ic": _column(champions, "forecast_ic_mean"),
            "rank_ic": _column(champions, "forecast_rank_ic_mean"),
        }
    )
    return found.sort_values(["model", "first"]).reset_index(drop=True)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series(float("nan"), index=frame.index)
    return pd.to_numeric(frame[name], errors="coerce")


def _served_by(row: dict[str, Any]) -> str:
    champion = _point(row.get("champion"))
    if champion == "-":
        return "no champion"
    return f"point {champion} (trained to {_day(row.get('champion_trained_to'))})"


def _point(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "-"
    return str(int(value))


def _day(value: Any) -> str:
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return "-"
    return str(pd.Timestamp(value).date())
