"""Performance figures of an equity curve and its fills (daily sessions, risk-free rate 0)."""

from __future__ import annotations

import math

import numpy as np

from mlops.trading.simulation import SESSIONS_PER_YEAR, Simulation

# (key, label, format) of each figure, in the order the report shows them.
FIGURES: list[tuple[str, str, str]] = [
    ("final_equity", "final equity", "money"),
    ("total_return", "total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("volatility", "annualised volatility", "pct"),
    ("sharpe", "Sharpe ratio", "ratio"),
    ("sortino", "Sortino ratio", "ratio"),
    ("max_drawdown", "max drawdown", "pct"),
    ("turnover", "turnover (per year, x mean equity)", "ratio"),
    ("hit_rate", "hit rate (closed positions with a profit)", "pct"),
    ("exposure", "exposure (mean invested share)", "share"),
    ("trades", "number of trades (fills)", "count"),
    ("costs", "costs paid (slippage + commission)", "money"),
]


def figures(sim: Simulation, initial_cash: float) -> dict[str, float | None]:
    """Every figure of :data:`FIGURES` for one simulation."""
    equity = np.concatenate([[initial_cash], sim.equity])
    returns = np.diff(equity) / equity[:-1]
    years = max(len(sim.equity), 1) / SESSIONS_PER_YEAR
    growth = equity[-1] / initial_cash
    spread = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    mean = float(np.mean(returns)) if len(returns) else 0.0
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2))) if len(returns) else 0.0
    scale = math.sqrt(SESSIONS_PER_YEAR)
    traded = sum(f.quantity * f.price for f in sim.fills)
    mean_equity = float(np.mean(sim.equity)) if len(sim.equity) else initial_cash
    trips = sim.round_trips
    return {
        "final_equity": float(equity[-1]),
        "total_return": float(growth - 1),
        "cagr": float(growth ** (1 / years) - 1) if growth > 0 else -1.0,
        "volatility": spread * scale,
        "sharpe": mean / spread * scale if spread > 0 else None,
        "sortino": mean / downside * scale if downside > 0 else None,
        "max_drawdown": float(np.min(equity / np.maximum.accumulate(equity) - 1)),
        "turnover": traded / mean_equity / years if mean_equity > 0 else None,
        "hit_rate": sum(p > 0 for p in trips) / len(trips) if trips else None,
        "exposure": float(np.mean(sim.invested / sim.equity)) if len(sim.equity) else 0.0,
        "trades": float(len(sim.fills)),
        "costs": float(sum(f.cost for f in sim.fills)),
    }


def formatted(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "pct":
        return f"{value:+.2%}"
    if kind == "share":
        return f"{value:.2%}"
    if kind == "count":
        return f"{value:.0f}"
    return f"{value:.2f}"
