"""The walk-forward's ``report.html``: one self-contained page (inline SVG, no script).

Headline figures per model beside the naive forecast and buy-and-hold, the equity
curves, the IC and trading figures of every retrain period, the champion timeline and
the trade list, with the costs, the threshold and the risk-free rate they assume.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from mlops.trading import report as trading_report
from mlops.walkforward.plan import Plan
from mlops.walkforward.timeline import Period

MAX_TRADE_ROWS = 500


def render(
    plan: Plan,
    summary: dict[str, Any],
    periods: list[Period],
    period_rows: list[dict[str, Any]],
    curves: pd.DataFrame,
    trades: dict[str, pd.DataFrame],
) -> str:
    title = (
        f"Walk-forward {plan.key}: {summary['from']} to {summary['to']}, "
        f"{summary['sessions']} sessions, {summary['symbols']} symbols"
    )
    series = {f"model {m}": curves[m].to_numpy() for m in plan.models}
    series["naive forecast"] = curves["naive"].to_numpy()
    series["buy-and-hold"] = curves["buy_and_hold"].to_numpy()
    days = [d.date() for d in pd.to_datetime(curves["date"])]
    chart = trading_report.equity_svg(days, series)
    parts = [
        f"<h1>{_e(title)}</h1>",
        f"<p>Retrained every {plan.retrain_every} sessions ({_e(plan.window)} window), "
        f"{len(plan.points)} retrain points, models {_e(', '.join(plan.models))}. "
        f"<b>{summary['in_sample_sessions']} of {summary['sessions']} sessions in sample</b>: "
        "every prediction was made by a version trained only on data known before the "
        "session it predicts, and chosen by the promotion gate of its time.</p>",
        _headline(summary),
        chart,
        "<h2>Retrain periods</h2>",
        _periods(period_rows),
        "<h2>Champion timeline</h2>",
        _timeline(periods),
        "<h2>Trades</h2>",
        _trades(trades),
        f"<p>Costs: {summary['costs']['slippage_bps']:g} bp slippage, "
        f"{summary['costs']['commission_per_share']:g} per share; fills at the next "
        f"session's open; threshold {summary['threshold']:g}; risk-free rate "
        f"{summary['risk_free_rate']:g}. Sharpe intervals: 95 %, Lo (2002).</p>",
    ]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}table{border-collapse:collapse;margin:1em 0}"
        "</style></head><body>" + "".join(parts) + "</body></html>"
    )


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def _table(head: list[str], rows: list[list[str]]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _sharpe(figures: dict[str, Any]) -> str:
    low, high = figures.get("sharpe_ci_low"), figures.get("sharpe_ci_high")
    interval = f" [{_num(low, '.2f')}, {_num(high, '.2f')}]" if low is not None else ""
    return _num(figures.get("sharpe"), ".2f") + interval


def _headline(summary: dict[str, Any]) -> str:
    head = [
        "",
        "IC",
        "Rank IC",
        "ICIR",
        "IC t",
        "MAPE",
        "naive MAPE",
        "DM p vs naive",
        "direction right",
        "total return",
        "Sharpe [95 % CI]",
        "max drawdown",
        "trades",
    ]
    rows = []
    for model, figures in summary["models"].items():
        f, t = figures["forecast"], figures["trading"]
        rows.append(
            [
                f"model {model}",
                _num(f.get("ic_mean"), ".4f"),
                _num(f.get("rank_ic_mean"), ".4f"),
                _num(f.get("ic_ir"), ".3f"),
                _num(f.get("ic_t"), ".2f"),
                _num(f.get("mape"), ".4%"),
                _num(f.get("naive_mape"), ".4%"),
                _num(f.get("dm_p_value_naive"), ".4f"),
                _num(f.get("directional_accuracy"), ".2%"),
                _num(t.get("total_return"), "+.2%"),
                _sharpe(t),
                _num(t.get("max_drawdown"), ".2%"),
                _num(t.get("trades"), ".0f"),
            ]
        )
    for name, t in summary["benchmarks"].items():
        label = "naive forecast" if name == "naive" else "buy-and-hold"
        rows.append(
            [
                label,
                *(["-"] * 8),
                _num(t.get("total_return"), "+.2%"),
                _sharpe(t),
                _num(t.get("max_drawdown"), ".2%"),
                _num(t.get("trades"), ".0f"),
            ]
        )
    return _table(head, rows)


def _periods(rows: list[dict[str, Any]]) -> str:
    head = [
        "model",
        "period",
        "sessions",
        "served by (trained to)",
        "IC",
        "Rank IC",
        "MAPE",
        "naive MAPE",
        "DM p vs naive",
        "return",
        "buy-and-hold",
        "trades",
    ]
    table = []
    for r in rows:
        served = "no champion" if r["champion"] is None else f"point {r['champion']}"
        if r["champion_trained_to"] is not None:
            served += f" ({r['champion_trained_to']})"
        table.append(
            [
                r["model"],
                f"{r['first']} to {r['last']}",
                str(r["sessions"]),
                served,
                _num(r.get("forecast_ic_mean"), ".4f"),
                _num(r.get("forecast_rank_ic_mean"), ".4f"),
                _num(r.get("forecast_mape"), ".4%"),
                _num(r.get("forecast_naive_mape"), ".4%"),
                _num(r.get("forecast_dm_p_value_naive"), ".4f"),
                _num(r["return"], "+.2%"),
                _num(r["buy_and_hold_return"], "+.2%"),
                str(r["trades"]),
            ]
        )
    return _table(head, table)


def _timeline(periods: list[Period]) -> str:
    head = ["model", "point", "trained to", "gate", "champion after", "challenger", "reason"]
    rows = [
        [
            p.model,
            str(p.point),
            str(p.trained_to),
            "promoted" if p.promoted else "rejected",
            "-" if p.champion is None else f"point {p.champion}",
            "-" if p.challenger is None else f"point {p.challenger}",
            p.reason,
        ]
        for p in periods
    ]
    return _table(head, rows)


def _trades(trades: dict[str, pd.DataFrame]) -> str:
    """Each model's fills (``backtest.trades_frame``), the first ``MAX_TRADE_ROWS``."""
    parts = []
    for model, frame in trades.items():
        mine = frame[frame["simulation"] == "model"]
        shown = mine.head(MAX_TRADE_ROWS)
        more = len(mine) - len(shown)
        rows = [
            [
                str(pd.Timestamp(r.day).date()),
                r.symbol,
                r.side,
                _num(r.quantity, ".0f"),
                _num(r.price, ",.2f"),
                _num(r.cost, ",.2f"),
                _num(r.realised_pnl, "+,.2f"),
            ]
            for r in shown.itertuples()
        ]
        parts.append(f"<h3>model {_e(model)}: {len(mine)} fills</h3>")
        parts.append(
            _table(["day", "symbol", "side", "quantity", "price", "cost", "round-trip P&L"], rows)
        )
        if more > 0:
            parts.append(f"<p>{more} more in trades.parquet.</p>")
    return "".join(parts)
