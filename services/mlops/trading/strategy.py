"""The original project's threshold strategy, as a pure function.

Expected change = (predicted close - latest close) / latest close. At or above
+threshold it is a predicted gain, below -threshold a predicted loss. Held positions
predicted to fall are sold whole; the symbol with the highest predicted gain that is not
held yet is bought with up to ``max_position_value`` of the available cash, in whole shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
    action: str  # "buy", "sell" or "hold"
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
) -> list[TradeDecision]:
    """One decision per symbol with a signal, plus one per held symbol without a signal."""
    decisions: list[TradeDecision] = []
    by_symbol = {s.symbol: s for s in signals}
    held = {sym for sym, qty in positions.items() if qty > 0}

    for symbol in sorted(held - set(by_symbol)):
        decisions.append(
            TradeDecision(symbol, "hold", 0.0, None, "held, but no prediction today: kept")
        )

    gains = sorted(
        (s for s in signals if s.symbol not in held and s.expected_change >= threshold),
        key=lambda s: (-s.expected_change, s.symbol),
    )
    best = gains[0] if gains else None

    for signal in sorted(signals, key=lambda s: s.symbol):
        change = signal.expected_change
        pct = f"{change:+.3%}"
        if signal.symbol in held:
            if change < -threshold:
                decisions.append(
                    TradeDecision(
                        signal.symbol,
                        "sell",
                        positions[signal.symbol],
                        change,
                        f"held and predicted loss {pct} is below -{threshold:.3%}: sell all",
                    )
                )
            else:
                decisions.append(
                    TradeDecision(
                        signal.symbol, "hold", 0.0, change, f"held; predicted {pct}: keep"
                    )
                )
            continue
        if signal is best:
            budget = min(cash, max_position_value)
            quantity = math.floor(budget / signal.last_close)
            if quantity >= 1:
                decisions.append(
                    TradeDecision(
                        signal.symbol,
                        "buy",
                        float(quantity),
                        change,
                        f"highest predicted gain {pct} (>= +{threshold:.3%}): "
                        f"buy {quantity} at about {signal.last_close:.2f}",
                    )
                )
            else:
                decisions.append(
                    TradeDecision(
                        signal.symbol,
                        "hold",
                        0.0,
                        change,
                        f"highest predicted gain {pct}, but cash {cash:.2f} buys no share",
                    )
                )
            continue
        if change >= threshold:
            reason = f"predicted gain {pct}, but {best.symbol if best else '-'} is higher"
        elif change < -threshold:
            reason = f"predicted loss {pct}; not held"
        else:
            reason = f"predicted {pct} is within ±{threshold:.3%}"
        decisions.append(TradeDecision(signal.symbol, "hold", 0.0, change, reason))
    return decisions
