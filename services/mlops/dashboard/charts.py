"""The dashboard's Plotly figures, built from :mod:`mlops.dashboard.data` frames."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from mlops.dashboard import data

if TYPE_CHECKING:
    import plotly.graph_objects as go

METRIC_LABELS = {
    "mape": "MAPE",
    "wmape": "WMAPE",
    "mae": "MAE",
    "rmse": "RMSE",
    "directional_accuracy": "directional accuracy",
    "ic": "daily IC",
    "rank_ic": "daily Rank IC",
}
TRIGGER_LABELS = {
    "trigger_mape": "MAPE above MONITOR_MAPE_THRESHOLD",
    "trigger_naive_ratio": "worse than the naive forecast by MONITOR_BASELINE_RATIO",
    "trigger_drift": "drift share above its calibrated threshold",
}


def _figure(title: str, y_title: str = "") -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.update_layout(
        title=title,
        yaxis_title=y_title,
        template="plotly_white",
        height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def metric_over_time(metrics: pd.DataFrame, metric: str) -> go.Figure:
    """The headline chart: one line per model:version, the naive forecast dashed."""
    import plotly.graph_objects as go

    label = METRIC_LABELS.get(metric, metric)
    figure = _figure(f"{label} over time, every model and version (all symbols)", label)
    frame = data.quality(metrics, metric)
    for (name, version), rows in frame.groupby(["model_name", "model_version"], sort=True):
        figure.add_trace(
            go.Scatter(
                x=rows["metric_date"],
                y=rows["value"],
                mode="lines+markers",
                name=data.series_label(str(name), str(version)),
            )
        )
    naive = data.naive_series(frame)
    if not naive.empty:
        figure.add_trace(
            go.Scatter(
                x=naive.index,
                y=naive.values,
                mode="lines",
                name="naive forecast",
                line={"dash": "dash", "color": "gray"},
            )
        )
    return figure


def champion_vs_challengers(
    metrics: pd.DataFrame, metric: str, roles: dict[tuple[str, str], str], window_days: int
) -> go.Figure:
    """Mean ``metric`` over the last ``window_days`` days: each model's champion and
    challengers beside the naive forecast on the same days."""
    import plotly.graph_objects as go

    label = METRIC_LABELS.get(metric, metric)
    figure = _figure(
        f"Champion vs challengers vs naive: mean {label} over the last {window_days} days", label
    )
    frame = data.quality(metrics, metric)
    if frame.empty:
        return figure
    days = sorted(frame["metric_date"].unique())[-window_days:]
    recent = frame[frame["metric_date"].isin(days)]
    names, values, colors = [], [], []
    palette = {"champion": "#2ca02c", "challenger": "#1f77b4"}
    for (name, version), rows in recent.groupby(["model_name", "model_version"], sort=True):
        role = roles.get((str(name), str(version)), "")
        names.append(f"{data.series_label(str(name), str(version))} {role}".strip())
        values.append(float(rows["value"].mean()))
        colors.append(palette.get(role, "#9467bd"))
    naive = recent["naive"].dropna()
    if not naive.empty:
        names.append("naive forecast")
        values.append(float(data.naive_series(recent).mean()))
        colors.append("gray")
    figure.add_trace(go.Bar(x=names, y=values, marker_color=colors, name=label))
    return figure


def equity(rows: pd.DataFrame, label: str) -> go.Figure:
    """One broker account's equity against buy-and-hold of the same symbols."""
    import plotly.graph_objects as go

    figure = _figure(f"Equity against buy-and-hold: {label}", "equity")
    for column, name in (("equity", "strategy"), ("benchmark_equity", "buy and hold")):
        figure.add_trace(
            go.Scatter(x=rows["snapshot_date"], y=rows[column], mode="lines+markers", name=name)
        )
    return figure


def equity_by_account(equity_rows: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    """One figure per (broker, account): brokers are never mixed in one line."""
    found: list[tuple[str, go.Figure]] = []
    if equity_rows.empty:
        return found
    for (broker, account), rows in equity_rows.groupby(["broker", "account"], sort=True):
        label = f"{broker} {account}" if account and account != broker else str(broker)
        found.append((label, equity(rows, label)))
    return found


def drift(drift_rows: pd.DataFrame) -> go.Figure:
    """The daily drift share with the threshold calibrated on the training history."""
    import plotly.graph_objects as go

    figure = _figure("Share of drifted features and its calibrated threshold", "share")
    if drift_rows.empty:
        return figure
    figure.add_trace(
        go.Scatter(
            x=drift_rows["metric_date"],
            y=drift_rows["drift_share"],
            mode="lines+markers",
            name="drift share",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=drift_rows["metric_date"],
            y=drift_rows["drift_threshold"],
            mode="lines",
            name="threshold",
            line={"dash": "dash", "color": "red"},
        )
    )
    return figure


def triggers(counts: dict[str, int]) -> go.Figure:
    """How many monitored days each retrain trigger fired on."""
    import plotly.graph_objects as go

    figure = _figure("Days each retrain trigger fired", "days")
    figure.add_trace(
        go.Bar(
            x=[TRIGGER_LABELS.get(k, k) for k in counts],
            y=list(counts.values()),
            name="days fired",
        )
    )
    return figure


def walkforward_equity(curves: pd.DataFrame, run_key: str) -> go.Figure:
    """A walk-forward's equity per session: each model against the naive forecast
    (dashed) and buy-and-hold."""
    import plotly.graph_objects as go

    figure = _figure(f"Walk-forward {run_key}: equity against buy-and-hold", "equity")
    benchmarks = {"naive": "naive forecast", "buy_and_hold": "buy-and-hold"}
    models = [c for c in curves.columns if c != "date" and c not in benchmarks]
    for column in models:
        figure.add_trace(
            go.Scatter(x=curves["date"], y=curves[column], mode="lines", name=f"model {column}")
        )
    styles = {"naive": {"dash": "dash", "color": "gray"}, "buy_and_hold": {"color": "black"}}
    for column, name in benchmarks.items():
        if column in curves:
            figure.add_trace(
                go.Scatter(
                    x=curves["date"], y=curves[column], mode="lines", name=name, line=styles[column]
                )
            )
    return figure


def walkforward_ic(periods: pd.DataFrame) -> go.Figure:
    """Mean IC and Rank IC of each retrain period (first to last session), per model."""
    import plotly.graph_objects as go

    figure = _figure("IC and Rank IC per retrain period (mean over its sessions)", "IC")
    figure.update_layout(barmode="group")
    for model, rows in periods.groupby("model", sort=False):
        labels = [
            f"{f.date()} to {t.date()}" for f, t in zip(rows["first"], rows["last"], strict=True)
        ]
        for column, label in (("ic", "IC"), ("rank_ic", "Rank IC")):
            figure.add_trace(
                go.Bar(
                    x=labels,
                    y=rows[column],
                    name=f"model {model} {label}",
                    hovertemplate="%{x}: %{y:.4f}<extra>%{fullData.name}</extra>",
                )
            )
    return figure
