"""The leaderboard: every strategy's live results side by side, from the book alone.

One row per strategy and broker account (``mlops trading leaderboard``, the dashboard's
"Leaderboard"), from its equity snapshots and its orders:

* equity at the last snapshot against buy-and-hold of the same money (the snapshot's
  ``benchmark_equity``: the first snapshot's equity split equally over the symbols of
  that day), and both returns since the first snapshot;
* the Sharpe ratio and the max drawdown of the snapshots' equity curve, measured by
  :func:`mlops.trading.performance.curve_figures`, the backtest's own code (daily
  sessions, risk-free rate 0; under ``performance.SHORT_WINDOW`` sessions the Sharpe ratio
  is unreliable, as the backtest says);
* trades: orders with a fill (the kill switch's closing sells included);
* mean fill slippage against the decision's close, in basis points over the fills whose
  decision recorded a close: a buy filled at ``p`` on a close ``c`` slipped
  ``(p / c - 1) x 10,000``, a sell ``(1 - p / c) x 10,000`` (positive: worse than the
  close the backtest's decision saw; it holds the overnight gap and the fill's own cost).

Rows are ranked by total return, best first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, select

from mlops.db.schema import equity_snapshots, orders, trade_decisions
from mlops.trading import performance

KEY = ["strategy", "broker", "account"]
BPS = 10_000.0


@dataclass
class Standing:
    """One strategy on one broker account."""

    rank: int
    strategy: str
    broker: str
    account: str
    first_date: date
    last_date: date
    sessions: int  # returns measured: snapshots after the first
    start_equity: float
    equity: float
    benchmark_equity: float | None
    total_return: float
    benchmark_return: float | None
    excess_return: float | None  # total return less buy-and-hold's
    sharpe: float | None
    max_drawdown: float
    trades: int
    slippage_bps: float | None  # mean over the fills whose decision recorded a close
    slippage_fills: int


def compute(engine: Engine) -> list[Standing]:
    """Every strategy's standing, best total return first."""
    snapshots, fills = _read(engine)
    rows = [
        _standing(key, curve, fills)
        for key, curve in snapshots.groupby(KEY, sort=True)
        if not curve.empty
    ]
    # Returns equal to 1e-10 (the same figures of two books) rank by name.
    rows.sort(key=lambda r: (-round(r.total_return, 10), r.strategy, r.broker, r.account))
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


def _read(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    decided = and_(
        trade_decisions.c.decision_date == orders.c.decision_date,
        trade_decisions.c.symbol == orders.c.symbol,
        trade_decisions.c.broker == orders.c.broker,
        trade_decisions.c.account == orders.c.account,
        trade_decisions.c.strategy == orders.c.strategy,
    )
    fills_query = (
        select(
            orders.c.strategy,
            orders.c.broker,
            orders.c.account,
            orders.c.side,
            orders.c.fill_price,
            trade_decisions.c.last_close,
        )
        .select_from(orders.outerjoin(trade_decisions, decided))
        .where(orders.c.filled_quantity > 0)
    )
    snapshot_query = select(
        *(equity_snapshots.c[c] for c in KEY),
        equity_snapshots.c.snapshot_date,
        equity_snapshots.c.equity,
        equity_snapshots.c.benchmark_equity,
    ).order_by(equity_snapshots.c.snapshot_date, equity_snapshots.c.id)
    with engine.connect() as conn:
        return pd.read_sql(snapshot_query, conn), pd.read_sql(fills_query, conn)


def _standing(key: Any, curve: pd.DataFrame, fills: pd.DataFrame) -> Standing:
    strategy, broker, account = key
    equity = curve["equity"].astype(float).to_numpy()
    start = float(equity[0])
    measured = performance.curve_figures(equity[1:], start)
    bench = curve["benchmark_equity"].iloc[-1]
    bench_value = None if pd.isna(bench) else float(bench)
    bench_return = None if bench_value is None or start <= 0 else bench_value / start - 1
    total = float(measured["total_return"] or 0.0)
    mine = fills[
        (fills["strategy"] == strategy)
        & (fills["broker"] == broker)
        & (fills["account"] == account)
    ]
    slips = slippage_bps(mine)
    return Standing(
        rank=0,
        strategy=str(strategy),
        broker=str(broker),
        account=str(account),
        first_date=curve["snapshot_date"].iloc[0],
        last_date=curve["snapshot_date"].iloc[-1],
        sessions=int(measured["sessions"] or 0),
        start_equity=start,
        equity=float(equity[-1]),
        benchmark_equity=bench_value,
        total_return=total,
        benchmark_return=bench_return,
        excess_return=None if bench_return is None else total - bench_return,
        sharpe=measured["sharpe"],
        max_drawdown=float(measured["max_drawdown"] or 0.0),
        trades=len(mine),
        slippage_bps=float(slips.mean()) if len(slips) else None,
        slippage_fills=len(slips),
    )


def slippage_bps(fills: pd.DataFrame) -> pd.Series:
    """Each fill's slippage against its decision's close, in basis points (positive:
    worse than the close); fills without a recorded close are left out."""
    known = fills.dropna(subset=["fill_price", "last_close"])
    known = known[known["last_close"] > 0]
    ratio = known["fill_price"].astype(float) / known["last_close"].astype(float) - 1.0
    sign = known["side"].map({"buy": 1.0, "sell": -1.0}).fillna(1.0)
    return (ratio * sign * BPS).reset_index(drop=True)


# (attribute, column title, format) of the table the command and the dashboard show.
COLUMNS: list[tuple[str, str, str]] = [
    ("rank", "#", "count"),
    ("strategy", "strategy", "text"),
    ("account", "account", "text"),
    ("last_date", "as of", "text"),
    ("equity", "equity", "money"),
    ("benchmark_equity", "buy-and-hold", "money"),
    ("total_return", "return", "pct"),
    ("benchmark_return", "buy-and-hold return", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("max_drawdown", "max drawdown", "pct"),
    ("trades", "trades", "count"),
    ("slippage_bps", "slippage (bp)", "ratio"),
]


def cells(row: Standing) -> dict[str, str]:
    """One standing as the table shows it, column title -> text."""
    shown: dict[str, str] = {}
    for attribute, title, kind in COLUMNS:
        value = getattr(row, attribute)
        if attribute == "account":
            value = f"{row.broker} {row.account}" if row.account != row.broker else row.broker
        if kind == "text":
            shown[title] = str(value)
        else:
            shown[title] = performance.formatted(None if value is None else float(value), kind)
    return shown


def text_table(rows: list[Standing]) -> str:
    """The leaderboard as plain text (a sentence when no strategy has a snapshot yet)."""
    if not rows:
        return "No equity snapshots yet: run `mlops trade`."
    lines = [[title for _, title, _ in COLUMNS], *([*cells(r).values()] for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    short = min(r.sessions for r in rows) < performance.SHORT_WINDOW
    note = (
        f"\nSharpe ratios over fewer than {performance.SHORT_WINDOW} sessions are unreliable."
        if short
        else ""
    )
    return (
        "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )
        + note
    )
