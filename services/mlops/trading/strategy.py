"""The trading rules, as a pure function: one decision, with its reason, per symbol.

A signal's score is what the rules rank and compare with the threshold, and it comes from
the trading model's kind:

* a regressor's: the expected change = (predicted close - latest close) / latest close,
  against ``TRADE_THRESHOLD``: at or above +threshold it is a predicted gain, below
  -threshold a predicted loss;
* a direction classifier's: the probability that the next close is above the latest,
  against ``TRADE_PROBABILITY_THRESHOLD``: at or above it a predicted gain, below 1 minus
  it a predicted loss.

The candidate is the symbol with the highest predicted gain that is not held yet; it is
bought with up to ``max_position_value`` of the available cash, in whole shares. Held
positions are then sold whole by the rule (``TRADE_RULE``) and the sell setting
(``TRADE_SELL``):

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
    """One symbol's forecast: a regressor's predicted close, or a direction classifier's
    probability of a rise (``predicted_close`` None then).
    """

    symbol: str
    predicted_close: float | None
    last_close: float
    probability: float | None = None

    @property
    def expected_change(self) -> float | None:
        if self.predicted_close is None:
            return None
        return (self.predicted_close - self.last_close) / self.last_close

    @property
    def score(self) -> float:
        """What the rules rank and compare with the threshold: a classifier's probability
        of a rise, a regressor's expected change.
        """
        if self.probability is not None:
            return self.probability
        change = self.expected_change
        if change is None:
            raise ValueError(f"the signal of {self.symbol} has neither a close nor a probability")
        return change


def is_probability(signals: list[Signal]) -> bool:
    """Whether ``signals`` are a classifier's (probabilities of a rise); never a mix."""
    kinds = {s.probability is not None for s in signals}
    if len(kinds) > 1:
        raise ValueError("signals mix probabilities and predicted closes")
    return kinds == {True}


@dataclass(frozen=True)
class Scale:
    """Where a score's levels are and how it reads, for one kind of signal."""

    threshold: float
    probability: bool = False

    @property
    def sell_below(self) -> float:
        """A held position whose score is below this is a predicted loss."""
        return 1.0 - self.threshold if self.probability else -self.threshold

    def show(self, score: float) -> str:
        return f"P(rise) {score:.3f}" if self.probability else f"{score:+.3%}"

    @property
    def buy_level(self) -> str:
        return f"{self.threshold:.3f}" if self.probability else f"+{self.threshold:.3%}"

    @property
    def sell_level(self) -> str:
        return f"{self.sell_below:.3f}" if self.probability else f"-{self.threshold:.3%}"

    @property
    def band(self) -> str:
        if self.probability:
            return f"between {self.sell_level} and {self.buy_level}"
        return f"within ±{self.threshold:.3%}"


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
    (see the module for ``rule`` and ``sell``). ``threshold`` is of the signals' kind:
    ``TRADE_THRESHOLD`` for predicted closes, ``TRADE_PROBABILITY_THRESHOLD`` for
    probabilities.

    ``orders_only`` (the backtest's simulation): only the decisions about held symbols and
    the candidate, the ones that can place an order; every other symbol's "hold" and its
    reason are left out. Live trading records every decision, so it never sets it.
    """
    if rule not in RULES or sell not in SELLS:
        raise ValueError(
            f"rule must be one of {', '.join(RULES)} and sell one of {', '.join(SELLS)}, "
            f"got {rule!r} and {sell!r}"
        )
    scale = Scale(threshold, is_probability(signals))
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
    losers = [
        by_symbol[s] for s in held if s in by_symbol and by_symbol[s].score < scale.sell_below
    ]
    worst = min(losers, key=lambda s: (s.score, s.symbol), default=None)
    held_rule = _HeldRule(
        scale=scale,
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
            decisions.append(_buy_best(signal, cash, scale, max_position_value))
        else:
            decisions.append(_not_bought(signal, best, scale))
    return decisions


def strongest(signals: list[Signal]) -> Signal | None:
    """The signal with the highest score (the first symbol of a tie); None without one."""
    return min(signals, key=lambda s: (-s.score, s.symbol), default=None)


@dataclass(frozen=True)
class _HeldRule:
    """What happens to a held position with a signal."""

    scale: Scale
    candidate: Signal | None  # rotation: the candidate held positions are measured against
    rotation: bool
    worst: Signal | None  # worst_loser: the only loser sold (None: every loser is sold)

    def decide(self, signal: Signal, quantity: float) -> TradeDecision:
        score, scale, candidate = signal.score, self.scale, self.candidate
        pct, change = scale.show(score), signal.expected_change
        if candidate is not None and score < candidate.score:
            reason = (
                f"held, predicted {pct}, below the candidate {candidate.symbol}'s "
                f"{scale.show(candidate.score)}: sell all (rotation)"
            )
            return TradeDecision(signal.symbol, Action.SELL, quantity, change, reason)
        if score < scale.sell_below:
            worst = self.worst
            if worst is None:
                reason = f"held and predicted loss {pct} is below {scale.sell_level}: sell all"
            elif worst is signal:
                reason = (
                    f"held and predicted loss {pct} is the worst below {scale.sell_level}: "
                    "sell all (worst loser only)"
                )
            else:
                reason = (
                    f"held and predicted loss {pct} is below {scale.sell_level}, but "
                    f"{worst.symbol}'s {scale.show(worst.score)} is worse: keep "
                    "(worst loser only)"
                )
                return TradeDecision(signal.symbol, Action.HOLD, 0.0, change, reason)
            return TradeDecision(signal.symbol, Action.SELL, quantity, change, reason)
        if candidate is not None:
            reason = (
                f"held; predicted {pct}, not below the candidate {candidate.symbol}'s "
                f"{scale.show(candidate.score)}: keep"
            )
        elif self.rotation:
            reason = f"held; predicted {pct}: keep (no candidate at {scale.buy_level} to rotate to)"
        else:
            reason = f"held; predicted {pct}: keep"
        return TradeDecision(signal.symbol, Action.HOLD, 0.0, change, reason)


def _buy_best(
    signal: Signal, cash: float, scale: Scale, max_position_value: float
) -> TradeDecision:
    """The highest predicted gain: bought in whole shares with up to the position budget."""
    pct, change = scale.show(signal.score), signal.expected_change
    quantity = math.floor(min(cash, max_position_value) / signal.last_close)
    if quantity < 1:
        reason = f"highest predicted gain {pct}, but cash {cash:.2f} buys no share"
        return TradeDecision(signal.symbol, Action.HOLD, 0.0, change, reason)
    reason = (
        f"highest predicted gain {pct} (>= {scale.buy_level}): "
        f"buy {quantity} at about {signal.last_close:.2f}"
    )
    return TradeDecision(signal.symbol, Action.BUY, float(quantity), change, reason)


def _not_bought(signal: Signal, best: Signal | None, scale: Scale) -> TradeDecision:
    score, change = signal.score, signal.expected_change
    pct = scale.show(score)
    if score >= scale.threshold:
        reason = f"predicted gain {pct}, but {best.symbol if best else '-'} is higher"
    elif score < scale.sell_below:
        reason = f"predicted loss {pct}; not held"
    else:
        reason = f"predicted {pct} is {scale.band}"
    return TradeDecision(signal.symbol, Action.HOLD, 0.0, change, reason)
