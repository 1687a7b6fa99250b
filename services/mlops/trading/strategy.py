"""The original project's threshold strategy, as a pure function.

Expected change = (predicted close - latest close) / latest close. At or above
+threshold it is a predicted gain, below -threshold a predicted loss. Held positions
predicted to fall are sold whole; the symbol with the highest predicted gain that is not
held yet is bought with up to ``max_position_value`` of the available cash, in whole shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


@dataclass(frozen=True)
class Signal:
    symbol: str
    predicted_close: float
    last_close: float

    @property
    def expected_change(self) -> float:
        return (self.predicted_close - self.last_close) / self.last_close


@dataclass(frozen=True)
class TradeDecision:
    symbol: str
    action: Action
    quantity: float
    expected_change: float | None
    reason: str


def decide(
    signals: list[Signal],
    positions: dict[str, float],
    cash: float,
    *,
    threshold: float,
    max_position_value: float,
    orders_only: bool = False,
) -> list[TradeDecision]:
    """One decision per symbol with a signal, plus one per held symbol without a signal.

    ``orders_only`` (the backtest's simulation): only the decisions about held symbols and
    the best gain, the ones that can place an order; every other symbol's "hold" and its
    reason are left out. Live trading records every decision, so it never sets it.
    """
    by_symbol = {s.symbol: s for s in signals}
    held = {sym for sym, qty in positions.items() if qty > 0}
    decisions = [
        TradeDecision(symbol, Action.HOLD, 0.0, None, "held, but no prediction today: kept")
        for symbol in sorted(held - set(by_symbol))
        if not orders_only
    ]
    best = min(
        (s for s in signals if s.symbol not in held and s.expected_change >= threshold),
        key=lambda s: (-s.expected_change, s.symbol),
        default=None,
    )
    if orders_only:
        signals = [by_symbol[s] for s in held if s in by_symbol] + ([best] if best else [])
    for signal in sorted(signals, key=lambda s: s.symbol):
        if signal.symbol in held:
            decisions.append(_held(signal, positions[signal.symbol], threshold))
        elif signal is best:
            decisions.append(_buy_best(signal, cash, threshold, max_position_value))
        else:
            decisions.append(_not_bought(signal, best, threshold))
    return decisions


def _held(signal: Signal, quantity: float, threshold: float) -> TradeDecision:
    """A held position: sold whole on a predicted loss past the threshold, else kept."""
    change = signal.expected_change
    pct = f"{change:+.3%}"
    if change < -threshold:
        reason = f"held and predicted loss {pct} is below -{threshold:.3%}: sell all"
        return TradeDecision(signal.symbol, Action.SELL, quantity, change, reason)
    return TradeDecision(signal.symbol, Action.HOLD, 0.0, change, f"held; predicted {pct}: keep")


def _buy_best(
    signal: Signal, cash: float, threshold: float, max_position_value: float
) -> TradeDecision:
    """The highest predicted gain: bought in whole shares with up to the position budget."""
    change = signal.expected_change
    pct = f"{change:+.3%}"
    quantity = math.floor(min(cash, max_position_value) / signal.last_close)
    if quantity < 1:
        reason = f"highest predicted gain {pct}, but cash {cash:.2f} buys no share"
        return TradeDecision(signal.symbol, Action.HOLD, 0.0, change, reason)
    reason = (
        f"highest predicted gain {pct} (>= +{threshold:.3%}): "
        f"buy {quantity} at about {signal.last_close:.2f}"
    )
    return TradeDecision(signal.symbol, Action.BUY, float(quantity), change, reason)


def _not_bought(signal: Signal, best: Signal | None, threshold: float) -> TradeDecision:
    change = signal.expected_change
    pct = f"{change:+.3%}"
    if change >= threshold:
        reason = f"predicted gain {pct}, but {best.symbol if best else '-'} is higher"
    elif change < -threshold:
        reason = f"predicted loss {pct}; not held"
    else:
        reason = f"predicted {pct} is within ±{threshold:.3%}"
    return TradeDecision(signal.symbol, Action.HOLD, 0.0, change, reason)
