"""The trading rules, as a pure function: one decision, with its reason, per symbol.

A signal's score is what the rules rank and compare with ``TRADE_THRESHOLD``: for the
regressor that feeds trading today, the expected change = (predicted close - latest
close) / latest close. At or above +threshold it is a predicted gain, below -threshold a
predicted loss. The candidate is the symbol with the highest predicted gain that is not
held yet; it is bought with up to ``max_position_value`` of the available cash, in whole
shares. Held positions are then sold whole by the rule (``TRADE_RULE``) and the sell
setting (``TRADE_SELL``):

* ``threshold`` (the default): held positions predicted to fall past the threshold are
  sold, every one (``all_losers``) or only the one predicted to fall most
  (``worst_loser``); the others are kept;
* ``rotation`` (after the original project's ``buy_best_gain_stock``): when there is a
  candidate, every held position whose score is lower than the candidate's is sold the
  same day (the losers among them too); without one, the losers are sold as under
  ``threshold``.

The buy is sized on the cash before the day's sells (their proceeds are cash for the next
session's decision), and every buy then goes through the risk limits
(:func:`mlops.trading.risk.apply_limits`). docs/trading.md sets these rules beside the
original project's, point by point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

Rule = Literal["threshold", "rotation"]
Sell = Literal["all_losers", "worst_loser"]
RULES: tuple[str, ...] = get_args(Rule)
SELLS: tuple[str, ...] = get_args(Sell)


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

    @property
    def score(self) -> float:
        """What the rules rank and compare with the threshold: the expected change.

        The seam for another kind of model: a classifier's signal (a probability that
        the close rises) would give its own score and be compared with a threshold of its
        own kind; no such model feeds trading yet.
        """
        return self.expected_change


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
    rule: Rule = "threshold",
    sell: Sell = "all_losers",
    orders_only: bool = False,
) -> list[TradeDecision]:
    """One decision per symbol with a signal, plus one per held symbol without a signal
    (see the module for ``rule`` and ``sell``).

    ``orders_only`` (the backtest's simulation): only the decisions about held symbols and
    the candidate, the ones that can place an order; every other symbol's "hold" and its
    reason are left out. Live trading records every decision, so it never sets it.
    """
    if rule not in RULES or sell not in SELLS:
        raise ValueError(
            f"rule must be one of {', '.join(RULES)} and sell one of {', '.join(SELLS)}, "
            f"got {rule!r} and {sell!r}"
        )
    by_symbol = {s.symbol: s for s in signals}
    held = {sym for sym, qty in positions.items() if qty > 0}
    decisions = [
        TradeDecision(symbol, Action.HOLD, 0.0, None, "held, but no prediction today: kept")
        for symbol in sorted(held - set(by_symbol))
        if not orders_only
    ]
    best = min(
        (s for s in signals if s.symbol not in held and s.score >= threshold),
        key=lambda s: (-s.score, s.symbol),
        default=None,
    )
    losers = [by_symbol[s] for s in held if s in by_symbol and by_symbol[s].score < -threshold]
    worst = min(losers, key=lambda s: (s.score, s.symbol), default=None)
    held_rule = _HeldRule(
        threshold=threshold,
        candidate=best if rule == "rotation" else None,
        rotation=rule == "rotation",
        worst=worst if sell == "worst_loser" else None,
    )
    if orders_only:
        signals = [by_symbol[s] for s in held if s in by_symbol] + ([best] if best else [])
    for signal in sorted(signals, key=lambda s: s.symbol):
        if signal.symbol in held:
            decisions.append(held_rule.decide(signal, positions[signal.symbol]))
        elif signal is best:
            decisions.append(_buy_best(signal, cash, threshold, max_position_value))
        else:
            decisions.append(_not_bought(signal, best, threshold))
    return decisions


def strongest(signals: list[Signal]) -> Signal | None:
    """The signal with the highest score (the first symbol of a tie); None without one."""
    return min(signals, key=lambda s: (-s.score, s.symbol), default=None)


@dataclass(frozen=True)
class _HeldRule:
    """What happens to a held position with a signal."""

    threshold: float
    candidate: Signal | None  # rotation: the candidate held positions are measured against
    rotation: bool
    worst: Signal | None  # worst_loser: the only loser sold (None: every loser is sold)

    def decide(self, signal: Signal, quantity: float) -> TradeDecision:
        score, threshold, candidate = signal.score, self.threshold, self.candidate
        pct = f"{score:+.3%}"
        if candidate is not None and score < candidate.score:
            reason = (
                f"held, predicted {pct}, below the candidate {candidate.symbol}'s "
                f"{candidate.score:+.3%}: sell all (rotation)"
            )
            return TradeDecision(signal.symbol, Action.SELL, quantity, score, reason)
        if score < -threshold:
            worst = self.worst
            if worst is None:
                reason = f"held and predicted loss {pct} is below -{threshold:.3%}: sell all"
            elif worst is signal:
                reason = (
                    f"held and predicted loss {pct} is the worst below -{threshold:.3%}: "
                    "sell all (worst loser only)"
                )
            else:
                reason = (
                    f"held and predicted loss {pct} is below -{threshold:.3%}, but "
                    f"{worst.symbol}'s {worst.score:+.3%} is worse: keep (worst loser only)"
                )
                return TradeDecision(signal.symbol, Action.HOLD, 0.0, score, reason)
            return TradeDecision(signal.symbol, Action.SELL, quantity, score, reason)
        if candidate is not None:
            reason = (
                f"held; predicted {pct}, not below the candidate {candidate.symbol}'s "
                f"{candidate.score:+.3%}: keep"
            )
        elif self.rotation:
            reason = f"held; predicted {pct}: keep (no candidate at +{threshold:.3%} to rotate to)"
        else:
            reason = f"held; predicted {pct}: keep"
        return TradeDecision(signal.symbol, Action.HOLD, 0.0, score, reason)


def _buy_best(
    signal: Signal, cash: float, threshold: float, max_position_value: float
) -> TradeDecision:
    """The highest predicted gain: bought in whole shares with up to the position budget."""
    change = signal.score
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
    change = signal.score
    pct = f"{change:+.3%}"
    if change >= threshold:
        reason = f"predicted gain {pct}, but {best.symbol if best else '-'} is higher"
    elif change < -threshold:
        reason = f"predicted loss {pct}; not held"
    else:
        reason = f"predicted {pct} is within ±{threshold:.3%}"
    return TradeDecision(signal.symbol, Action.HOLD, 0.0, change, reason)
