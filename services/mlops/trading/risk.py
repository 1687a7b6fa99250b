"""Risk controls on the strategy's decisions, as a pure function (live trading and backtest).

Sells always pass: they only reduce risk. A buy is dropped or made smaller by, in order:

* the daily loss limit (``RISK_DAILY_LOSS_LIMIT``): equity fell more than this share
  since the previous session's snapshot: no new positions today;
* the number of open positions (``RISK_MAX_OPEN_POSITIONS``), counting every position on
  the account after the day's sells;
* the per-order value cap (``RISK_MAX_ORDER_VALUE``), the cash, and the gross exposure
  (``RISK_MAX_GROSS_EXPOSURE``, a multiple of equity), each priced at the last close
  plus a buffer (``RISK_PRICE_BUFFER``) for a gap up at the open.

The kill switch (``TRADING_HALTED`` or ``mlops trading halt``) is checked by the stage
before any of this: a halted stage decides and sends nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from mlops.trading.strategy import Action, TradeDecision


@dataclass(frozen=True)
class RiskLimits:
    max_open_positions: int = 10
    max_gross_exposure: float = 1.0
    max_order_value: float = 20_000.0
    price_buffer: float = 0.01
    daily_loss_limit: float = 0.05

    @classmethod
    def from_settings(cls, settings: Any) -> RiskLimits:
        return cls(
            max_open_positions=settings.risk_max_open_positions,
            max_gross_exposure=settings.risk_max_gross_exposure,
            max_order_value=settings.risk_max_order_value,
            price_buffer=settings.risk_price_buffer,
            daily_loss_limit=settings.risk_daily_loss_limit,
        )


@dataclass(frozen=True)
class Portfolio:
    """The account before the day's orders."""

    cash: float
    equity: float
    held_value: float  # market value of every position on the account
    open_positions: int  # every position on the account, ours or not
    previous_equity: float | None = None  # at the previous session's snapshot


def apply_limits(
    decisions: list[TradeDecision],
    prices: dict[str, float],
    portfolio: Portfolio,
    limits: RiskLimits,
) -> list[TradeDecision]:
    """The decisions with every buy checked against the limits (see the module)."""
    sells = [d for d in decisions if d.action == Action.SELL]
    sold_value = sum(d.quantity * prices.get(d.symbol, 0.0) for d in sells)
    state = _State(
        cash=portfolio.cash,
        exposure=max(portfolio.held_value - sold_value, 0.0),
        positions=max(portfolio.open_positions - len(sells), 0),
    )
    blocked = _loss_block(portfolio, limits)
    out = []
    for d in decisions:
        if d.action != Action.BUY:
            out.append(d)
        elif blocked:
            out.append(_hold(d, blocked))
        else:
            out.append(_size(d, prices[d.symbol], portfolio.equity, limits, state))
    return out


@dataclass
class _State:
    cash: float
    exposure: float
    positions: int


def _loss_block(portfolio: Portfolio, limits: RiskLimits) -> str | None:
    before = portfolio.previous_equity
    if not before or before <= 0:
        return None
    change = portfolio.equity / before - 1
    if change <= -limits.daily_loss_limit:
        return (
            f"daily loss limit: equity {change:+.2%} since the previous session "
            f"(limit -{limits.daily_loss_limit:.2%}): no new positions"
        )
    return None


def _size(
    d: TradeDecision, price: float, equity: float, limits: RiskLimits, state: _State
) -> TradeDecision:
    if state.positions >= limits.max_open_positions:
        return _hold(d, f"max open positions ({limits.max_open_positions}) reached")
    priced = price * (1 + limits.price_buffer)
    caps = {
        f"order value cap {limits.max_order_value:,.0f}": limits.max_order_value / priced,
        f"cash {state.cash:,.2f}": state.cash / priced,
        f"gross exposure {limits.max_gross_exposure:.0%} of equity": (
            limits.max_gross_exposure * equity - state.exposure
        )
        / priced,
    }
    binding, room = min(caps.items(), key=lambda kv: kv[1])
    quantity = min(d.quantity, float(max(math.floor(room + 1e-9), 0)))
    if quantity < 1:
        return _hold(d, f"{binding} (price +{limits.price_buffer:.1%} buffer) buys no share")
    state.cash -= quantity * priced
    state.exposure += quantity * price
    state.positions += 1
    if quantity < d.quantity:
        reason = f"{d.reason}; cut to {quantity:.0f} by the {binding}"
        return replace(d, quantity=quantity, reason=reason)
    return d


def _hold(d: TradeDecision, why: str) -> TradeDecision:
    return replace(d, action=Action.HOLD, quantity=0.0, reason=f"{d.reason}; not bought: {why}")
