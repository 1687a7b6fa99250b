"""The walk-forward simulation behind ``mlops backtest``, on plain frames (no I/O).

Each session D, in order: the orders decided on the previous session fill at D's open
(sells first, then buys, as the paper broker fills them; a symbol without a bar on D
expires the order; a buy is cut to what the cash pays), equity is valued at D's close,
then the strategy (:func:`mlops.trading.strategy.decide`) and the risk limits
(:func:`mlops.trading.risk.apply_limits`) - the very functions live trading calls -
decide on D's predictions. Nothing of D+1 is read before D's decisions are made, so
truncating the history after D changes no trade decided before D.

Costs: fills move against the order by ``slippage_bps`` (a buy pays open x (1 + s), a
sell gets open x (1 - s)) and pay ``commission_per_share``.

Order types (``TRADE_ORDER_TYPE``, :mod:`mlops.trading.order_types`, the paper broker's
rule): a market order fills at the open; a limit order at the decision day's close moved
by the buffer fills at the open when the open is through its limit, else at the limit
when the session's high and low reach it (not for ``opg``), else not at all (the day
order expires). The slippage moves a limit order's fill against it but never past its
limit, and a fill's ``cost`` is taken against the price the session offered (the open,
or the limit).

A market whose forecasts never reach the buy threshold (the naive forecast, "no change")
never opens a position under either rule (``threshold`` or ``rotation``: both buy only a
candidate at or past the threshold, and sell only what was bought): :func:`simulate` then
returns cash throughout without walking the sessions, which is what :func:`walk` finds
the long way (a test checks they agree). :func:`reach` says how often the forecasts
reached the threshold, and how far the largest went.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from mlops.errors import ConfigError
from mlops.trading import order_types, strategy
from mlops.trading.risk import Portfolio, RiskLimits, apply_limits

SESSIONS_PER_YEAR = 252


@dataclass(frozen=True)
class Costs:
    slippage_bps: float = 1.0
    commission_per_share: float = 0.0

    def buy_price(self, open_: float, limit: float = math.inf) -> float:
        return min(open_ * (1 + self.slippage_bps / 10_000), limit)

    def sell_price(self, open_: float, limit: float = 0.0) -> float:
        return max(open_ * (1 - self.slippage_bps / 10_000), limit)


@dataclass(frozen=True)
class Rules:
    """What live trading reads from its settings, for the simulation."""

    threshold: float
    max_position_value: float
    limits: RiskLimits
    initial_cash: float
    costs: Costs
    rule: strategy.Rule = "threshold"  # TRADE_RULE
    sell: strategy.Sell = "all_losers"  # TRADE_SELL
    probability_threshold: float = 0.55  # TRADE_PROBABILITY_THRESHOLD (a classifier's)
    order_type: str = order_types.MARKET  # TRADE_ORDER_TYPE
    limit_buffer_bps: float = 50.0  # TRADE_LIMIT_BUFFER_BPS
    time_in_force: str = "day"  # TRADE_TIME_IN_FORCE: opg fills a limit at the open only

    def level(self, market: Market) -> float:
        """The threshold of the market's forecasts: probabilities or predicted closes."""
        return self.probability_threshold if market.probability else self.threshold


@dataclass(frozen=True)
class Reach:
    """How the forecasts of a window stand against the buy threshold."""

    threshold: float
    sessions: int  # sessions with at least one forecast at or past the threshold
    largest: float | None  # the largest expected change of any forecast; None: no forecast
    day: date | None  # where the largest was forecast
    symbol: str | None

    def figures(self) -> dict[str, float | None]:
        return {
            "sessions_past_threshold": float(self.sessions),
            "largest_expected_change": self.largest,
        }


@dataclass(frozen=True)
class Fill:
    decided: date
    day: date
    symbol: str
    side: str
    quantity: float
    price: float
    cost: float  # slippage against the open plus commission
    entry_day: date | None = None  # a sell: the day the position it closes was bought
    realised_pnl: float | None = None  # a sell: proceeds minus the cost basis sold


@dataclass
class Simulation:
    days: list[date]
    equity: np.ndarray
    invested: np.ndarray  # positions value at each close
    fills: list[Fill] = field(default_factory=list)
    decisions: int = 0

    @property
    def round_trips(self) -> list[float]:
        """The profit of each sell (a closed position, or part of one), costs included."""
        return [f.realised_pnl for f in self.fills if f.realised_pnl is not None]


@dataclass
class _Book:
    cash: float
    positions: dict[str, float] = field(default_factory=dict)
    cost_basis: dict[str, float] = field(default_factory=dict)
    entry_day: dict[str, date] = field(default_factory=dict)  # when each position was opened


@dataclass(frozen=True)
class Market:
    """Bars pivoted to (session x symbol) arrays; NaN where a symbol has no bar."""

    days: list[date]
    symbols: list[str]
    open: np.ndarray
    close: np.ndarray
    last_close: np.ndarray  # forward-filled: a delisted symbol keeps its last close
    predicted: np.ndarray  # predicted closes; a classifier's: probabilities of a rise
    probability: bool = False
    # The sessions' ranges, which limit orders need (None: the frame had no high and low).
    high: np.ndarray | None = None
    low: np.ndarray | None = None

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, predicted: pd.Series, *, probability: bool = False
    ) -> Market:
        """``frame``: date, symbol, open, close (and high, low) rows; ``predicted``: aligned
        to its index (``probability``: a classifier's probabilities of a rise)."""
        if "open" not in frame.columns:
            raise ConfigError(
                "A backtest fills orders at the next session's open, which close-only bars "
                "(DATA_BARS=close_only) do not have: backtests and walk-forwards need OHLCV bars."
            )
        prices = ["open", "close", *(c for c in ("high", "low") if c in frame.columns)]
        data = frame[["date", "symbol", *prices]].assign(predicted=predicted.to_numpy())
        wide = data.pivot(index="date", columns="symbol", values=[*prices, "predicted"])
        wide = wide.sort_index()
        symbols = sorted(data["symbol"].unique())

        def grid(column: str) -> np.ndarray:
            return wide[column].reindex(columns=symbols).to_numpy(dtype="float64")

        ranged = "high" in prices and "low" in prices
        close = grid("close")
        return cls(
            days=[d.date() for d in pd.DatetimeIndex(wide.index)],
            symbols=symbols,
            open=grid("open"),
            close=close,
            last_close=pd.DataFrame(close).ffill().to_numpy(),
            predicted=grid("predicted"),
            probability=probability,
            high=grid("high") if ranged else None,
            low=grid("low") if ranged else None,
        )

    def scores(self) -> np.ndarray:
        """What the strategy compares with the threshold: the expected change of each
        forecast (a classifier's probability itself); NaN where there is none."""
        if self.probability:
            return self.predicted
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.predicted - self.close) / self.close


def simulate(market: Market, rules: Rules) -> Simulation:
    """Walk forward over every session of ``market`` (see the module)."""
    if never_buys(market, rules.level(market)):
        return idle(market, rules.initial_cash)
    return walk(market, rules)


def never_buys(market: Market, threshold: float) -> bool:
    """True when no session's forecast reaches ``threshold``: the strategy never buys."""
    change = market.scores()
    both = ~np.isnan(market.predicted) & ~np.isnan(market.close)
    if not np.isfinite(change[both]).all():
        return False  # a zero close: let the walk meet it as live trading would
    return not bool((change[both] >= threshold).any())


def reach(market: Market, threshold: float) -> Reach:
    """How many sessions had a forecast at or past ``threshold``, and the largest one."""
    change = market.scores()
    known = ~np.isnan(market.predicted) & ~np.isnan(market.close) & np.isfinite(change)
    if not known.any():
        return Reach(threshold, 0, None, None, None)
    masked = np.where(known, change, -np.inf)
    sessions = int((masked >= threshold).any(axis=1).sum())
    i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
    return Reach(
        threshold, sessions, float(masked[i, j]), market.days[int(i)], market.symbols[int(j)]
    )


def idle(market: Market, initial_cash: float) -> Simulation:
    """Cash throughout, no decision and no fill: the walk of a market that never buys."""
    n = len(market.days)
    return Simulation(days=market.days, equity=np.full(n, initial_cash), invested=np.zeros(n))


def walk(market: Market, rules: Rules) -> Simulation:
    """The session-by-session loop of :func:`simulate` (see the module)."""
    if rules.order_type == order_types.LIMIT and (market.high is None or market.low is None):
        raise ValueError("limit orders need the sessions' high and low prices")
    n = len(market.days)
    book = _Book(cash=rules.initial_cash)
    sim = Simulation(days=market.days, equity=np.zeros(n), invested=np.zeros(n))
    index = {s: j for j, s in enumerate(market.symbols)}
    pending: list[strategy.TradeDecision] = []
    for i in range(n):
        if pending:
            _fill(market, rules, book, pending, i, index, sim.fills)
        held = sum(q * market.last_close[i, index[s]] for s, q in book.positions.items())
        sim.invested[i] = held
        sim.equity[i] = book.cash + held
        if i == n - 1:
            break
        previous = float(sim.equity[i - 1]) if i else None
        pending = _decide(market, rules, book, i, held, previous)
        sim.decisions += len(pending)
    return sim


def _decide(
    market: Market, rules: Rules, book: _Book, i: int, held: float, previous: float | None
) -> list[strategy.TradeDecision]:
    """The strategy and the risk limits on session ``i``'s predictions; buys and sells."""
    close, predicted = market.close[i], market.predicted[i]
    live = np.flatnonzero(~np.isnan(close) & ~np.isnan(predicted))
    symbols, forecasts, closes = market.symbols, predicted[live].tolist(), close[live].tolist()
    if market.probability:
        signals = [
            strategy.Signal(symbols[j], None, c, probability=p)
            for j, p, c in zip(live.tolist(), forecasts, closes, strict=True)
        ]
    else:
        signals = [
            strategy.Signal(symbols[j], p, c)
            for j, p, c in zip(live.tolist(), forecasts, closes, strict=True)
        ]
    if not signals and not book.positions:
        return []
    decisions = strategy.decide(
        signals,
        book.positions,
        book.cash,
        threshold=rules.level(market),
        max_position_value=rules.max_position_value,
        rule=rules.rule,
        sell=rules.sell,
        orders_only=True,
    )
    orders = [d for d in decisions if d.action != strategy.Action.HOLD]
    if not orders:
        return []
    portfolio = Portfolio(
        cash=book.cash,
        equity=book.cash + held,
        held_value=held,
        open_positions=len(book.positions),
        previous_equity=previous,
    )
    prices = {s.symbol: s.last_close for s in signals}
    checked = apply_limits(orders, prices, portfolio, rules.limits)
    return [d for d in checked if d.action != strategy.Action.HOLD]


def _fill(
    market: Market,
    rules: Rules,
    book: _Book,
    orders: list[strategy.TradeDecision],
    i: int,
    index: dict[str, int],
    fills: list[Fill],
) -> None:
    """Fill the previous session's orders on session ``i`` (at the open, or a limit's
    price): sells first."""
    decided, day = market.days[i - 1], market.days[i]
    per_share = rules.costs.commission_per_share
    for d in sorted(orders, key=lambda o: (o.action != strategy.Action.SELL, o.symbol)):
        offered = _offered(market, rules, str(d.action), i, index[d.symbol])
        if offered is None:
            continue  # no bar, or a limit not reached: the day order expires
        reference, limit = offered
        if d.action == strategy.Action.SELL:
            quantity = min(d.quantity, book.positions.get(d.symbol, 0.0))
            if quantity <= 0:
                continue
            price = rules.costs.sell_price(reference, limit or 0.0)
            book.cash += quantity * (price - per_share)
            entry = book.entry_day.get(d.symbol)
            pnl = _close_position(book, d.symbol, quantity, quantity * (price - per_share))
            cost = quantity * (reference - price + per_share)
            fills.append(
                Fill(decided, day, d.symbol, str(d.action), quantity, price, cost, entry, pnl)
            )
        else:
            price = rules.costs.buy_price(reference, limit or math.inf)
            quantity = min(d.quantity, math.floor(max(book.cash, 0.0) / (price + per_share)))
            if quantity < 1:
                continue  # insufficient cash at the open
            paid = quantity * (price + per_share)
            book.cash -= paid
            book.entry_day.setdefault(d.symbol, day)
            book.positions[d.symbol] = book.positions.get(d.symbol, 0.0) + quantity
            book.cost_basis[d.symbol] = book.cost_basis.get(d.symbol, 0.0) + paid
            cost = quantity * (price - reference + per_share)
            fills.append(Fill(decided, day, d.symbol, str(d.action), quantity, price, cost))


def _offered(
    market: Market, rules: Rules, side: str, i: int, j: int
) -> tuple[float, float | None] | None:
    """The price session ``i`` offers an order on symbol ``j`` and the order's limit (None:
    a market order); None when it does not fill (no bar, or a limit not reached)."""
    limit = None
    if rules.order_type == order_types.LIMIT:
        assert market.high is not None and market.low is not None
        close = market.close[i - 1, j]
        if math.isnan(close):
            return None
        limit = order_types.limit_price(side, float(close), rules.limit_buffer_bps)
        high, low = float(market.high[i, j]), float(market.low[i, j])
    else:
        high = low = math.nan
    reference = order_types.fill_reference(
        side, limit, float(market.open[i, j]), high, low,
        opening_only=rules.time_in_force == "opg",
    )  # fmt: skip
    return None if reference is None else (reference, limit)


def _close_position(book: _Book, symbol: str, quantity: float, proceeds: float) -> float:
    """Take ``quantity`` off the position; the profit of the shares sold."""
    held = book.positions[symbol]
    basis = book.cost_basis.get(symbol, 0.0) * quantity / held
    book.cost_basis[symbol] = book.cost_basis.get(symbol, 0.0) - basis
    if quantity >= held - 1e-9:
        del book.positions[symbol]
        book.cost_basis.pop(symbol, None)
        book.entry_day.pop(symbol, None)
    else:
        book.positions[symbol] = held - quantity
    return proceeds - basis


def buy_and_hold(market: Market, initial_cash: float, costs: Costs) -> Simulation:
    """Equal amounts of every symbol trading on the first session, bought at its close."""
    first = np.flatnonzero(~np.isnan(market.close[0]))
    budget = initial_cash / max(len(first), 1)
    shares = np.zeros(len(market.symbols))
    cash, fills = initial_cash, []
    for j in first:
        close = float(market.close[0, j])
        price = costs.buy_price(close)
        quantity = budget / (price + costs.commission_per_share)
        shares[j] = quantity
        cash -= quantity * (price + costs.commission_per_share)
        cost = quantity * (price - close + costs.commission_per_share)
        day = market.days[0]
        fills.append(Fill(day, day, market.symbols[j], "buy", quantity, price, cost))
    invested = np.nan_to_num(market.last_close) @ shares
    return Simulation(days=market.days, equity=cash + invested, invested=invested, fills=fills)
