"""The dashboard's Plotly figures, built from :mod:`mlops.dashboard.data` frames."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from mlops.contracts import live_figures
from mlops.dashboard import data
from mlops.db.schema import DEFAULT_STRATEGY

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


PERCENT_METRICS = {"mape", "wmape", "directional_accuracy"}


def _axes(figure: go.Figure, metric: str) -> go.Figure:
    """Percent where the figure is a share; trading days only on the date axis."""
    if metric in PERCENT_METRICS:
        figure.update_yaxes(tickformat=".2%")
    figure.update_xaxes(rangebreaks=[{"bounds": ["sat", "mon"]}])
    return figure


def metric_over_time(metrics: pd.DataFrame, metric: str, *, window: bool = False) -> go.Figure:
    """A quality chart: one line per model:version, the naive forecast dashed. Each point
    is one session's own figure (on that session's rows), or with ``window`` the trailing
    window's figure of each monitored day, the window's length in the title.
    """
    import plotly.graph_objects as go

    label = METRIC_LABELS.get(metric, metric)
    frame = data.quality(metrics, metric, window=window)
    if window:
        lengths = sorted({int(n) for n in frame["window_days"].unique()})
        span = "/".join(str(n) for n in lengths) if lengths else "N"
        title = f"{label} over the trailing {span}-session window, each monitored day"
        if frame.empty:
            title += f" (no window figure for {label})"
    else:
        title = f"{label} of each session, every model and version (all symbols)"
    figure = _figure(title, label)
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
    return _axes(figure, metric)


def champion_vs_challengers(
    live: dict[tuple[str, str], live_figures.LiveFigures], roles: dict[tuple[str, str], str]
) -> go.Figure:
    """MAPE over each model's latest live window, on the same rows: a champion beside the
    naive forecast on its rows; a challenger beside its champion and the naive forecast on
    the (day, symbol) pairs both scored, with the 95 % interval of the daily difference.
    """
    import plotly.graph_objects as go

    windows = sorted({f.window_days for f in live.values() if f.window_days})
    span = "/".join(str(n) for n in windows) or "N"
    figure = _figure(
        f"Champion vs challengers vs naive: MAPE over the latest {span}-session window, "
        "each challenger on the rows it and its champion both scored",
        "MAPE",
    )
    names: list[str] = []
    mine: list[float] = []
    champion: list[float | None] = []
    naive: list[float | None] = []
    low: list[float | None] = []
    high: list[float | None] = []
    for (name, version), found in sorted(live.items()):
        role, w = roles.get((name, version)), found.window
        if role == "champion" and "mape" in w:
            names.append(f"{data.series_label(name, version)} champion (n {w.get('n', 0):.0f})")
            mine.append(w["mape"])
            champion.append(w["mape"])
            naive.append(w.get("naive_mape"))
            low.append(None)
            high.append(None)
        elif role == "challenger" and "paired_mape" in w:
            names.append(
                f"{data.series_label(name, version)} challenger "
                f"(same {w.get('paired_n', 0):.0f} rows)"
            )
            mine.append(w["paired_mape"])
            champion.append(w.get("paired_champion_mape"))
            naive.append(w.get("paired_naive_mape"))
            low.append(w.get("paired_diff_low"))
            high.append(w.get("paired_diff_high"))
    figure.add_trace(go.Bar(x=names, y=mine, name="the version", marker_color="#1f77b4"))
    figure.add_trace(
        go.Bar(x=names, y=champion, name="its champion, same rows", marker_color="#2ca02c")
    )
    figure.add_trace(go.Bar(x=names, y=naive, name="naive, same rows", marker_color="gray"))
    figure.update_layout(barmode="group")
    intervals = [
        f"{n}: difference {lo:+.3%} to {hi:+.3%} (95 %)"
        for n, lo, hi in zip(names, low, high, strict=True)
        if lo is not None and hi is not None
    ]
    if intervals:
        figure.add_annotation(
            text="<br>".join(intervals), showarrow=False, xref="paper", yref="paper", x=0, y=1.0,
            xanchor="left", yanchor="bottom", align="left", font={"size": 10},
        )  # fmt: skip
    figure.update_yaxes(tickformat=".2%")
    return figure


def equity(rows: pd.DataFrame, label: str) -> go.Figure:
    """One strategy's equity on one broker account against buy-and-hold of the same symbols."""
    import plotly.graph_objects as go

    figure = _figure(f"Equity against buy-and-hold: {label}", "equity")
    for column, name in (("equity", "strategy"), ("benchmark_equity", "buy and hold")):
        figure.add_trace(
            go.Scatter(x=rows["snapshot_date"], y=rows[column], mode="lines+markers", name=name)
        )
    return figure


def equity_by_account(equity_rows: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    """One figure per (strategy, broker, account): neither strategies nor brokers are ever
    mixed in one line (the default strategy's title is the account alone, as before)."""
    found: list[tuple[str, go.Figure]] = []
    if equity_rows.empty:
        return found
    rows_by = equity_rows.groupby(["strategy", "broker", "account"], sort=True)
    for (strategy, broker, account), rows in rows_by:
        label = f"{broker} {account}" if account and account != broker else str(broker)
        if strategy != DEFAULT_STRATEGY:
            label = f"strategy {strategy}, {label}"
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


def symbols(found: live_figures.SymbolFigures | None, title_model: str) -> go.Figure:
    """A champion's MAPE per symbol over its latest window, the naive forecast's on the
    same rows beside it, the direction accuracy in each bar's hover."""
    import plotly.graph_objects as go

    if found is None or not found.symbols:
        return _figure(f"MAPE per symbol: no per-symbol figures of {title_model}'s champion yet")
    span = f"{found.window_days}-session window to {found.window_date}"
    figure = _figure(
        f"MAPE per symbol: {found.model_name}:{found.model_version} (champion) over the {span}",
        "MAPE",
    )
    names = sorted(found.symbols)
    rows = [found.symbols[s] for s in names]
    accuracy = [r.get("directional_accuracy") for r in rows]
    hover = [
        f"{s}: n {r.get('n', 0):.0f}, direction accuracy " + ("-" if a is None else f"{a:.1%}")
        for s, r, a in zip(names, rows, accuracy, strict=True)
    ]
    figure.add_trace(
        go.Bar(x=names, y=[r.get("mape") for r in rows], name="champion", hovertext=hover)
    )
    figure.add_trace(
        go.Bar(
            x=names,
            y=[r.get("naive_mape") for r in rows],
            name="naive, same rows",
            marker_color="gray",
        )
    )
    figure.update_layout(barmode="group")
    figure.update_yaxes(tickformat=".2%")
    return figure


def feature_drift(rows: list[live_figures.FeatureDrift]) -> go.Figure:
    """Each feature's drift p-value on each monitored day (log scale), the drift line
    (p <= threshold: the feature drifted) dashed."""
    import plotly.graph_objects as go

    from mlops.monitoring.drift import P_VALUE_THRESHOLD

    figure = _figure(
        "Drift per feature: KS p-value of the recent window against the champion's training "
        f"window, each monitored day (at or below {P_VALUE_THRESHOLD}: drifted)",
        "p-value",
    )
    by_feature: dict[str, list[live_figures.FeatureDrift]] = {}
    for row in rows:
        by_feature.setdefault(row.feature, []).append(row)
    for feature, found in sorted(by_feature.items()):
        figure.add_trace(
            go.Scatter(
                x=[r.metric_date for r in found],
                y=[r.p_value for r in found],
                mode="lines+markers",
                name=feature,
            )
        )
    if rows:
        figure.add_hline(
            y=P_VALUE_THRESHOLD, line={"dash": "dash", "color": "red"}, annotation_text="drift"
        )
    figure.update_yaxes(type="log")
    figure.update_xaxes(rangebreaks=[{"bounds": ["sat", "mon"]}])
    return figure
