"""The dashboard's *Walk-forward* section and its routes.

The section lists the latest walk-forwards (``walkforward_runs``, newest first): each
finished one with its window, retrain cadence, points, models, sessions in sample and its
headline figures per model beside the naive forecast and buy-and-hold; a running one with
its status. For the run chosen in its drop-down (the newest finished one by default): the
equity of each model against buy-and-hold and the naive forecast, IC and Rank IC per
retrain period, and the champion timeline. Every figure is read from the run's summary
and its outputs in the store (``mlops.walkforward.publish`` wrote them), never recomputed.

Routes: ``/walkforward/<key>/report`` (its ``report.html``), ``/walkforward/<key>/trades``
(its trade list) and ``/walkforward/<key>/timeline`` (the timeline with the gate's MAPEs
and p-values). They answer with :data:`~mlops.dashboard.tables.NO_SCRIPT_HEADERS`.
"""

from __future__ import annotations

import logging
from html import escape
from typing import Any
from urllib.parse import quote

import pandas as pd

from mlops.context import Context
from mlops.dashboard import charts, data
from mlops.dashboard.tables import NO_SCRIPT_HEADERS, frame_html, page, table
from mlops.store import StoreError

log = logging.getLogger(__name__)

RUNS_SHOWN = 10
TRADE_COLUMNS = ["model", "simulation", "decided", "day", "symbol", "side", "quantity"]
TRADE_COLUMNS += ["price", "cost", "entry_day", "realised_pnl"]


def layout() -> list[Any]:
    """The section's place on the page (filled by :func:`register`'s callbacks)."""
    from dash import dcc, html

    return [
        html.H2("Walk-forward"),
        html.Div(id="walkforward-runs"),
        html.Div(
            [
                "Show walk-forward ",
                dcc.Dropdown(
                    id="walkforward-run",
                    options=[],
                    clearable=False,
                    style={"width": "36em", "display": "inline-block", "verticalAlign": "middle"},
                ),
            ]
        ),
        html.Div(id="walkforward-detail"),
    ]


def register(app: Any, ctx: Context) -> None:
    """The section's callbacks: the runs (on load and after each action), the chosen run."""
    from dash import Input, Output, State

    @app.callback(
        Output("walkforward-runs", "children"),
        Output("walkforward-run", "options"),
        Output("walkforward-run", "value"),
        Input("refresh", "data"),
        State("walkforward-run", "value"),
    )
    def runs(_refresh: int, chosen: str | None) -> tuple[Any, ...]:
        return render_runs(ctx, chosen)

    @app.callback(Output("walkforward-detail", "children"), Input("walkforward-run", "value"))
    def detail(run_key: str | None) -> Any:
        return render_detail(ctx, run_key)


def render_runs(ctx: Context, chosen: str | None = None) -> tuple[Any, list[dict[str, str]], Any]:
    """The runs' list, the drop-down's finished runs and the one to show (``chosen`` if
    it is still listed, else the newest)."""
    from dash import html

    runs = data.latest_walkforwards(ctx.engine, RUNS_SHOWN)
    if not runs:
        return html.P("None yet: run mlops walk-forward."), [], None
    parts: list[Any] = []
    for run in runs:
        parts.extend(_run(run))
    done = [r for r in runs if r["status"] == data.WALKFORWARD_DONE]
    options = [
        {"label": f"{r['run_key']} ({r['start_date']} to {r['end_date']})", "value": r["run_key"]}
        for r in done
    ]
    keys = [o["value"] for o in options]
    return parts, options, chosen if chosen in keys else (keys[0] if keys else None)


def _run(run: dict[str, Any]) -> list[Any]:
    from dash import html

    heading = [f"{run['run_key']}: ", data.walkforward_description(run)]
    if run["status"] != data.WALKFORWARD_DONE:
        started = f"{run['status']}, started {run['created_at']:%Y-%m-%d %H:%M} UTC"
        return [html.H3([*heading, f" ({started})"], className="walkforward-running")]
    headline = data.walkforward_headline(run["summary"])
    return [
        html.H3([*heading, " ", *_links(run)]),
        table(headline, list(headline.columns), "walkforward-headline"),
    ]


def _links(run: dict[str, Any]) -> list[Any]:
    from dash import html

    base = f"/walkforward/{quote(str(run['run_key']), safe='')}"
    models = (run["summary"].get("models") or {}).values()
    fills = sum(int((m.get("trading") or {}).get("trades") or 0) for m in models)
    return [
        html.A("report", href=f"{base}/report"),
        " ",
        html.A(f"trades ({fills} model fills)", href=f"{base}/trades"),
        " ",
        html.A("timeline", href=f"{base}/timeline"),
    ]


def render_detail(ctx: Context, run_key: str | None) -> Any:
    """The chosen run's equity chart, IC per period and champion timeline."""
    from dash import dcc, html

    if not run_key:
        return html.P("No finished walk-forward yet.")
    run = data.walkforward_run(ctx.engine, run_key)
    if run is None or run["status"] != data.WALKFORWARD_DONE:
        return html.P(f"Walk-forward {run_key} has not finished.")
    try:
        curves = data.walkforward_output(ctx.store, run_key, "curves")
        champions = data.walkforward_output(ctx.store, run_key, "champions")
    except Exception as exc:  # the store is down or a file is missing: the page still shows
        log.warning("The dashboard cannot read walk-forward %s's outputs: %s", run_key, exc)
        return html.P(f"The outputs of walk-forward {run_key} cannot be read from the store.")
    timeline = data.walkforward_timeline(champions)
    periods = data.walkforward_period_ic(champions)
    return [
        html.H3([f"Walk-forward {run_key}: ", *_links(run)]),
        dcc.Graph(id="walkforward-equity", figure=charts.walkforward_equity(curves, run_key)),
        dcc.Graph(id="walkforward-ic", figure=charts.walkforward_ic(periods)),
        html.H4("Champion timeline"),
        html.Div(
            table(timeline, list(timeline.columns), "walkforward-timeline"),
            style={"overflowX": "auto"},
        ),
    ]


# Plain routes on the Flask server.


def routes(server: Any, ctx: Context) -> None:
    from flask import Response, abort

    def found(run_key: str) -> dict[str, Any]:
        run = data.walkforward_run(ctx.engine, run_key)
        if run is None:
            abort(404, f"No walk-forward {run_key}.")
        return run

    def missing(run: dict[str, Any], what: str) -> str:
        status = run["status"]
        still = "" if status == data.WALKFORWARD_DONE else f" (the run is {status})"
        return f"The {what} of walk-forward {run['run_key']} is missing{still}."

    def answer(body: str | bytes) -> Any:
        return Response(body, mimetype="text/html", headers=NO_SCRIPT_HEADERS)

    @server.get("/walkforward/<run_key>/report")
    def walkforward_report(run_key: str) -> Any:
        run = found(run_key)
        try:
            return answer(ctx.store.get_bytes(data.walkforward_report_key(run)))
        except StoreError:
            abort(404, missing(run, "report"))

    @server.get("/walkforward/<run_key>/trades")
    def walkforward_trades(run_key: str) -> Any:
        run = found(run_key)
        try:
            trades = data.walkforward_output(ctx.store, run_key, "trades")
        except StoreError:
            abort(404, missing(run, "trade list"))
        return answer(trades_page(run, trades))

    @server.get("/walkforward/<run_key>/timeline")
    def walkforward_timeline(run_key: str) -> Any:
        run = found(run_key)
        try:
            champions = data.walkforward_output(ctx.store, run_key, "champions")
        except StoreError:
            abort(404, missing(run, "champion timeline"))
        return answer(timeline_page(run, champions))


def trades_page(run: dict[str, Any], trades: pd.DataFrame) -> str:
    """A walk-forward's trade list: one row per fill, per model and simulation."""
    shown = trades[[c for c in TRADE_COLUMNS if c in trades] + _others(trades)].copy()
    for column in ("decided", "day", "entry_day"):
        if column in shown:
            shown[column] = pd.to_datetime(shown[column]).dt.strftime("%Y-%m-%d")
    groups = [c for c in ("model", "simulation") if c in shown]
    counts = shown.groupby(groups).size().items() if groups and not shown.empty else []
    said = ", ".join(f"{' '.join(map(str, _tuple(k)))}: {n}" for k, n in counts)
    body = (
        f"<p>{escape(data.walkforward_description(run))}.</p>"
        f"<p>{len(shown)} fills ({escape(said or 'none')}). Sells that close a position "
        "carry the round trip's entry day and P&amp;L.</p>" + frame_html(shown, "trades")
    )
    return page(f"Trades of walk-forward {run['run_key']}", body)


def timeline_page(run: dict[str, Any], champions: pd.DataFrame) -> str:
    """A walk-forward's champion timeline with the gate's MAPEs and p-values."""
    body = (
        f"<p>{escape(data.walkforward_description(run))}.</p>"
        "<p>Per model and retrain period: who served (a version serves from the session "
        "after the point that promoted it), the gate's decision on that point's version "
        "and why, and the period's IC and returns.</p>"
        + frame_html(data.walkforward_timeline(champions, gate=True), "walkforward-timeline")
    )
    return page(f"Champion timeline of walk-forward {run['run_key']}", body)


def _others(trades: pd.DataFrame) -> list[str]:
    return [c for c in trades.columns if c not in TRADE_COLUMNS]


def _tuple(key: Any) -> tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)
