"""Performance figures of an equity curve and its fills (daily sessions, risk-free rate 0).

The Sharpe ratio comes with its 95 % confidence interval by Lo (2002), for iid returns:
the per-session ratio SR plus or minus 1.96 x sqrt((1 + SR^2 / 2) / n) over n returns,
annualised by sqrt(252) like the ratio. Below :data:`SHORT_WINDOW` sessions the annualised
figures (CAGR, volatility, Sharpe and its interval, Sortino, turnover) extrapolate a few
days to a year: the table flags them (:func:`flagged`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mlops.trading.simulation import SESSIONS_PER_YEAR, Simulation

RISK_FREE_RATE = 0.0  # the Sharpe and Sortino ratios' benchmark return
SHORT_WINDOW = 60  # sessions: fewer, and the annualised figures are flagged
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile

# (key, label, format) of each figure, in the order the report shows them; an "interval"
# reads ``<key>_low`` and ``<key>_high``.
FIGURES: list[tuple[str, str, str]] = [
    ("final_equity", "final equity", "money"),
    ("total_return", "total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("volatility", "annualised volatility", "pct"),
    ("sharpe", "Sharpe ratio", "ratio"),
    ("sharpe_ci", "Sharpe ratio, 95 % interval (Lo 2002, iid)", "interval"),
    ("sortino", "Sortino ratio", "ratio"),
    ("max_drawdown", "max drawdown", "pct"),
    ("turnover", "turnover (per year, x mean equity)", "ratio"),
    ("hit_rate", "hit rate (closed positions with a profit)", "pct"),
    ("exposure", "exposure (mean invested share)", "share"),
    ("trades", "number of trades (fills)", "count"),
    ("costs", "costs paid (slippage + commission)", "money"),
    ("sessions", "sessions", "count"),
]
# The figures that scale a window's returns to a year.
ANNUALISED = frozenset({"cagr", "volatility", "sharpe", "sharpe_ci", "sortino", "turnover"})


def figures(sim: Simulation, initial_cash: float) -> dict[str, float | None]:
    """Every figure of :data:`FIGURES` for one simulation."""
    curve = curve_figures(sim.equity, initial_cash)
    years = max(len(sim.equity), 1) / SESSIONS_PER_YEAR
    traded = sum(f.quantity * f.price for f in sim.fills)
    mean_equity = float(np.mean(sim.equity)) if len(sim.equity) else initial_cash
    trips = sim.round_trips
    return {
        **curve,
        "turnover": traded / mean_equity / years if mean_equity > 0 else None,
        "hit_rate": sum(p > 0 for p in trips) / len(trips) if trips else None,
        "exposure": float(np.mean(sim.invested / sim.equity)) if len(sim.equity) else 0.0,
        "trades": float(len(sim.fills)),
        "costs": float(sum(f.cost for f in sim.fills)),
    }


def curve_figures(values: Sequence[float] | np.ndarray, start: float) -> dict[str, float | None]:
    """The figures of an equity curve alone: ``values`` at each session's close, from
    ``start`` before the first (final equity, total return, CAGR, volatility, Sharpe ratio
    and its interval, Sortino ratio, max drawdown, sessions). A backtest's simulation and
    a live strategy's equity snapshots (the leaderboard) are measured by this one code."""
    closes = np.asarray(values, dtype=float)
    equity = np.concatenate([[start], closes])
    returns = np.diff(equity) / equity[:-1]
    years = max(len(closes), 1) / SESSIONS_PER_YEAR
    growth = equity[-1] / start
    spread = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    mean = float(np.mean(returns)) if len(returns) else 0.0
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2))) if len(returns) else 0.0
    scale = math.sqrt(SESSIONS_PER_YEAR)
    low, high = sharpe_interval(mean / spread, len(returns)) if spread > 0 else (None, None)
    return {
        "final_equity": float(equity[-1]),
        "total_return": float(growth - 1),
        "cagr": float(growth ** (1 / years) - 1) if growth > 0 else -1.0,
        "volatility": spread * scale,
        "sharpe": mean / spread * scale if spread > 0 else None,
        "sharpe_ci_low": low,
        "sharpe_ci_high": high,
        "sortino": mean / downside * scale if downside > 0 else None,
        "max_drawdown": float(np.min(equity / np.maximum.accumulate(equity) - 1)),
        "sessions": float(len(closes)),
    }


def sharpe_interval(per_session: float, n: int) -> tuple[float, float]:
    """The annualised 95 % interval of a per-session Sharpe ratio over ``n`` iid returns."""
    error = math.sqrt((1 + per_session**2 / 2) / n)
    scale = math.sqrt(SESSIONS_PER_YEAR)
    return (per_session - Z95 * error) * scale, (per_session + Z95 * error) * scale


def flagged(label: str, key: str, sessions: int) -> str:
    """A figure's label, flagged when it annualises fewer than :data:`SHORT_WINDOW` sessions."""
    if key in ANNUALISED and sessions < SHORT_WINDOW:
        return f"{label} [annualised from {sessions} sessions, under {SHORT_WINDOW}: unreliable]"
    return label


def cell(values: dict[str, float | None], key: str, kind: str) -> str:
    """One figure of ``values`` as the table shows it."""
    if kind == "interval":
        low, high = values.get(f"{key}_low"), values.get(f"{key}_high")
        return "-" if low is None or high is None else f"{low:.2f} to {high:.2f}"
    return formatted(values.get(key), kind)


def formatted(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "pct":
        return f"{value:+.2%}"
    if kind == "change":
        return f"{value:+.3%}"
    if kind == "share":
        return f"{value:.2%}"
    if kind == "count":
        return f"{value:.0f}"
    return f"{value:.2f}"
