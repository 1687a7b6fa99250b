"""``mlops dashboard``: prediction quality, drift, equity and stage runs over time.

A small read-only web app over the database and the object store: one page with charts
and tables, the evidently reports served from the store, and the same figures as JSON.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pandas as pd
from sqlalchemy import select

from mlops.context import Context
from mlops.contracts import keys
from mlops.db.schema import (
    backtest_runs,
    equity_snapshots,
    monitoring_metrics,
    retrain_requests,
    stage_runs,
)
from mlops.store import StoreError

REPORT_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})/(quality|drift)\.html$")


def load_figures(ctx: Context, broker: str | None = None) -> dict[str, pd.DataFrame]:
    """Everything the page shows, read fresh from the database (equity of one broker)."""
    equity_query = select(equity_snapshots).order_by(equity_snapshots.c.snapshot_date)
    if broker:
        equity_query = equity_query.where(equity_snapshots.c.broker == broker)
    with ctx.engine.connect() as conn:
        metrics = pd.read_sql(
            select(monitoring_metrics).where(monitoring_metrics.c.symbol == "ALL"), conn
        )
        equity = pd.read_sql(equity_query, conn)
        backtests = pd.read_sql(
            select(backtest_runs).order_by(backtest_runs.c.id.desc()).limit(10), conn
        )
        runs = pd.read_sql(
            select(stage_runs).order_by(stage_runs.c.started_at.desc()).limit(30), conn
        )
        retrains = pd.read_sql(
            select(retrain_requests).order_by(retrain_requests.c.requested_date.desc()).limit(10),
            conn,
        )
    if not metrics.empty:
        metrics = metrics.pivot_table(
            index=["metric_date", "model_version"], columns="metric", values="value"
        ).reset_index()
        metrics = metrics.sort_values("metric_date")
    return {
        "metrics": metrics,
        "equity": equity,
        "runs": runs,
        "retrains": retrains,
        "backtests": backtests,
    }


def _svg_chart(x: list[str], series: dict[str, list[float]], title: str) -> str:
    """A line chart as inline SVG (no JavaScript, no external assets)."""
    width, height, pad = 640, 200, 36
    values = [v for vs in series.values() for v in vs if v == v]
    if len(x) < 2 or not values:
        return f"<p>{html.escape(title)}: not enough data yet.</p>"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"]

    def point(i: int, v: float) -> str:
        px = pad + i * (width - 2 * pad) / (len(x) - 1)
        py = height - pad - (v - low) * (height - 2 * pad) / span
        return f"{px:.1f},{py:.1f}"

    lines, legend = [], []
    for n, (name, vs) in enumerate(series.items()):
        pts = " ".join(point(i, v) for i, v in enumerate(vs) if v == v)
        color = colors[n % len(colors)]
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        legend.append(f'<text x="{pad + n * 160}" y="14" fill="{color}">{html.escape(name)}</text>')
    axis = (
        f'<text x="{pad}" y="{height - 8}">{html.escape(x[0])}</text>'
        f'<text x="{width - pad - 70}" y="{height - 8}">{html.escape(x[-1])}</text>'
        f'<text x="2" y="{pad}">{high:.4g}</text><text x="2" y="{height - pad}">{low:.4g}</text>'
    )
    return (
        f"<h3>{html.escape(title)}</h3>"
        f'<svg width="{width}" height="{height}" font-size="11" role="img">'
        f"{''.join(legend)}{''.join(lines)}{axis}</svg>"
    )


def _table(frame: pd.DataFrame, columns: list[str], links: Any = None) -> str:
    """An HTML table; ``links(row)`` adds a last column of ready-made HTML."""
    if frame.empty:
        return "<p>None yet.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    head += "<th>reports</th>" if links else ""
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns)
        + (f"<td>{links(row)}</td>" if links else "")
        + "</tr>"
        for row in frame.to_dict("records")
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _report_links(day: Any) -> str:
    day = html.escape(str(day))
    return " ".join(
        f'<a href="/reports/{day}/{name}.html">{name}</a>' for name in ("quality", "drift")
    )


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render_page(figures: dict[str, pd.DataFrame]) -> str:
    metrics, equity = figures["metrics"], figures["equity"]
    parts = ["<h1>MLOps stock pipeline</h1>"]
    if not metrics.empty:
        days = sorted(metrics["metric_date"].astype(str).unique())
        by_day = metrics.assign(day=metrics["metric_date"].astype(str))
        quality: dict[str, list[float]] = {}
        for version, rows in by_day.groupby("model_version"):
            if "mape" in rows:
                series = rows.set_index("day")["mape"]
                quality[f"model v{version}"] = [float(series.get(d, float("nan"))) for d in days]
        if "naive_mape" in by_day:
            naive = by_day.dropna(subset=["naive_mape"]).groupby("day")["naive_mape"].last()
            quality["naive"] = [float(naive.get(d, float("nan"))) for d in days]
        parts.append(
            _svg_chart(days, quality, "MAPE of each model version and of the naive forecast")
        )
        if "drift_share" in by_day:
            drift = by_day.dropna(subset=["drift_share"]).groupby("day")["drift_share"].last()
            parts.append(
                _svg_chart(
                    days,
                    {"drift share": [float(drift.get(d, float("nan"))) for d in days]},
                    "Share of drifted features (champion's training window against the last weeks)",
                )
            )
        cols = [
            c
            for c in (
                "metric_date",
                "model_version",
                "mape",
                "naive_mape",
                "mae",
                "drift_share",
                "n",
            )
            if c in metrics
        ]
        parts.append(
            "<h2>Monitoring</h2>"
            + _table(metrics.iloc[::-1], cols, links=lambda row: _report_links(row["metric_date"]))
        )
    else:
        parts.append("<p>No monitoring metrics yet: run <code>mlops monitor</code>.</p>")
    parts.extend(_equity_charts(equity))
    parts.append(_backtests(figures.get("backtests", pd.DataFrame())))
    parts.append(
        "<h2>Retrain requests</h2>"
        + _table(figures["retrains"], ["requested_date", "model_version", "status", "reason"])
    )
    parts.append(
        "<h2>Recent stage runs</h2>"
        + _table(
            figures["runs"], ["stage", "run_date", "started_at", "finished_at", "status", "error"]
        )
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1000px}"
        "table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>MLOps dashboard</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def _equity_charts(equity: pd.DataFrame) -> list[str]:
    """One equity line per broker account: brokers are never mixed in one line."""
    if equity.empty:
        return []
    charts = []
    for (broker, account), rows in equity.groupby(["broker", "account"], sort=True):
        label = f"{broker} {account}" if account and account != broker else str(broker)
        charts.append(
            _svg_chart(
                rows["snapshot_date"].astype(str).tolist(),
                {
                    "strategy": rows["equity"].tolist(),
                    "buy and hold": rows["benchmark_equity"].tolist(),
                },
                f"Equity against buy-and-hold: {label}",
            )
        )
    return charts


def _backtests(runs: pd.DataFrame) -> str:
    """The latest backtests: their figures side by side and a link to the equity chart."""
    if runs.empty:
        return "<h2>Backtests</h2><p>None yet: run <code>mlops backtest</code>.</p>"
    parts = ["<h2>Backtests</h2>"]
    for run in runs.to_dict("records"):
        summary = json.loads(run["summary"])
        table = pd.DataFrame(summary["table"])
        key = html.escape(str(run["run_key"]))
        parts.append(
            f"<h3>{html.escape(str(run['model']))} {html.escape(str(run['start_date']))} to "
            f"{html.escape(str(run['end_date']))} ({int(run['symbols'])} symbols) "
            f'<a href="/backtests/{key}/chart">equity chart</a></h3>'
            + _table(table, list(table.columns))
        )
    return "".join(parts)


def create_app(ctx: Context) -> Any:
    """The FastAPI app of the dashboard."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    app = FastAPI(title="MLOps dashboard", version="1")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    def index(broker: str | None = None) -> str:
        return render_page(load_figures(ctx, broker))

    @app.get("/api/metrics")
    def api_metrics() -> list[dict[str, Any]]:
        frame = load_figures(ctx)["metrics"]
        return (
            []
            if frame.empty
            else frame.astype(object).where(frame.notna(), None).to_dict("records")
        )

    @app.get("/api/equity")
    def api_equity(broker: str | None = None) -> list[dict[str, Any]]:
        frame = load_figures(ctx, broker)["equity"]
        return [] if frame.empty else json.loads(frame.to_json(orient="records", date_format="iso"))

    @app.get("/backtests/{run_key}/chart")
    def backtest_chart(run_key: str) -> Response:
        with ctx.engine.connect() as conn:
            key = conn.execute(
                select(backtest_runs.c.chart_key).where(backtest_runs.c.run_key == run_key)
            ).scalar()
        if key is None:
            raise HTTPException(404, f"No backtest {run_key}.")
        try:
            data = ctx.store.get_bytes(key)
        except StoreError:
            raise HTTPException(404, f"The chart of backtest {run_key} is missing.") from None
        return Response(content=data, media_type="text/html")

    @app.get("/reports/{day}/{name}")
    def report(day: str, name: str) -> Response:
        if not REPORT_NAME.match(f"{day}/{name}"):
            raise HTTPException(404, "Reports are named like 2017-06-01/drift.html.")
        try:
            data = ctx.store.get_bytes(keys.monitoring_report_key(day, name))
        except StoreError:
            raise HTTPException(404, f"No report {name} for {day}.") from None
        return Response(content=data, media_type="text/html")

    return app
