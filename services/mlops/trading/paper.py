"""The built-in paper broker: cash, positions and fills kept in the database.

Orders are good for one day: an order decided after day D's close is filled by the next
trading day in the data, or expires when its symbol has no bar that day (a delisted
symbol, for example). A market order fills at that day's open; a limit order
(``TRADE_ORDER_TYPE=limit``) at the open when the open is through its limit, else at the
limit when the day's low (a buy) or high (a sell) reaches it (never with
``TRADE_TIME_IN_FORCE=opg``, the opening auction only), else it expires unfilled: the rule
of :mod:`mlops.trading.order_types`, which the backtest fills by too. Cash and positions
are derived from the fills, as of any day (so a past day's snapshot shows that day's
holdings). It has one account,
``paper``, with one book per strategy (each starts with ``PAPER_INITIAL_CASH``), and no
clock of its own: the day being
replayed is its "now".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from mlops import market_calendar
from mlops.db.schema import DEFAULT_STRATEGY, orders
from mlops.errors import ConfigError
from mlops.trading import book, order_types
from mlops.trading.broker import (
    Account,
    BrokerClock,
    BrokerOrder,
    OrderUpdate,
    PendingOrder,
    Side,
)
from mlops.trading.lifecycle import OrderState, is_terminal

NAME = "paper"
ACCOUNT = "paper"


class PaperBroker:
    name = NAME

    def __init__(
        self,
        engine: Engine,
        initial_cash: float,
        *,
        opening_only: bool = False,
        strategy: str = DEFAULT_STRATEGY,
    ) -> None:
        self.engine = engine
        self.initial_cash = initial_cash
        self.opening_only = opening_only  # TRADE_TIME_IN_FORCE=opg: a limit fills at the open
        self.strategy = strategy

    def account_id(self) -> str:
        return ACCOUNT

    def clock(self) -> BrokerClock | None:
        return None

    def account(self, day: date | None = None) -> Account:
        """Cash and positions from the fills (up to ``day`` when given)."""
        query = select(
            orders.c.symbol, orders.c.side, orders.c.filled_quantity, orders.c.fill_price
        ).where(
            orders.c.broker == NAME,
            orders.c.account == ACCOUNT,
            orders.c.strategy == self.strategy,
            orders.c.status == OrderState.FILLED,
        )
        if day is not None:
            query = query.where(orders.c.fill_date <= day)
        cash = self.initial_cash
        positions: dict[str, float] = {}
        with self.engine.connect() as conn:
            for symbol, side, quantity, price in conn.execute(query):
                sign = 1.0 if side == Side.BUY else -1.0
                cash -= sign * quantity * price
                positions[symbol] = positions.get(symbol, 0.0) + sign * quantity
        return Account(
            cash=cash,
            positions={s: q for s, q in positions.items() if q > 0},
            account_id=ACCOUNT,
        )

    def submit(self, order: PendingOrder, *, sent_before: bool = False) -> OrderUpdate:
        # Accepted now; filled by ``sync`` once the next trading day's bar is known.
        return OrderUpdate(
            status=OrderState.ACCEPTED,
            broker_order_id=order.client_order_id,
            broker_status="accepted",
        )

    def lookup(self, client_order_id: str) -> OrderUpdate | None:
        return None  # no book elsewhere: an order not accepted here was never placed

    def orders(self) -> list[BrokerOrder]:
        """The orders it took: its book is the database's, so they are all there."""
        return [
            BrokerOrder(
                client_order_id=row["client_order_id"],
                symbol=row["symbol"],
                side=row["side"],
                quantity=float(row["quantity"]),
                update=book.as_update(row),
                submitted_at=row["submitted_at"],
            )
            for row in book.account_orders(self.engine, NAME, ACCOUNT, self.strategy)
            if row["status"] not in (OrderState.PLANNED, OrderState.UNPLACED)
        ]

    def cancel(self, client_order_id: str, broker_order_id: str | None) -> OrderUpdate | None:
        row = book.order(self.engine, client_order_id)
        if row is None or row["status"] in (OrderState.PLANNED, OrderState.UNPLACED):
            return None
        if is_terminal(row["status"]):
            return book.as_update(row)  # filled or ended before: nothing left to cancel
        return OrderUpdate(
            status=OrderState.CANCELED,
            broker_order_id=row["broker_order_id"],
            broker_status="canceled",
        )

    def sync(self, bars: pd.DataFrame, day: date) -> int:
        """Fill or expire accepted orders decided before ``day``; returns how many changed."""
        if "open" not in bars.columns:
            raise ConfigError(
                "The paper broker fills orders at the next session's open, which close-only "
                "bars (DATA_BARS=close_only) do not have: trade such a universe with "
                "BROKER=alpaca, or prepare OHLCV bars."
            )
        pending = [
            row
            for row in book.open_orders(self.engine, NAME, ACCOUNT, self.strategy)
            if row["decision_date"] < day
        ]
        if not pending:
            return 0
        days = pd.DatetimeIndex(sorted(bars["date"].unique()))
        changed = 0
        for row in pending:
            later = days[days > pd.Timestamp(row["decision_date"])]
            if later.empty:
                continue
            next_day = later[0]
            bar = bars[(bars["symbol"] == row["symbol"]) & (bars["date"] == next_day)]
            update = self._session(row, bar, next_day.date())
            book.apply(self.engine, row, update)
            changed += 1
        return changed

    def _session(self, row: Mapping[Any, Any], bar: pd.DataFrame, day: date) -> OrderUpdate:
        """What ``day``'s bar does to the order: a fill, or the day order's expiry."""
        if bar.empty:
            return _expired(f"no {row['symbol']} bar on {day}: day order expired")
        side, limit = str(row["side"]), row["limit_price"]
        open_, high, low = (float(bar[c].iloc[0]) for c in ("open", "high", "low"))
        price = order_types.fill_reference(
            side, limit, open_, high, low, opening_only=self.opening_only
        )
        if price is None:
            why = order_types.not_reached(
                side, limit, open_, high, low, opening_only=self.opening_only
            )
            return _expired(f"{why} on {day}: day order expired")
        return self._fill(row, price, day)

    def _fill(self, row: Mapping[Any, Any], price: float, fill_date: date) -> OrderUpdate:
        quantity = float(row["quantity"])
        if row["side"] == Side.BUY:
            affordable = math.floor(max(self.account().cash, 0.0) / price)
            if affordable < 1:
                return _rejected("insufficient cash at the open")
            quantity = min(quantity, float(affordable))
        else:
            quantity = min(quantity, self.account().positions.get(row["symbol"], 0.0))
            if quantity <= 0:
                return _rejected("no position to sell")
        return OrderUpdate(
            status=OrderState.FILLED,
            broker_status="filled",
            filled_quantity=quantity,
            fill_price=price,
            filled_at=market_calendar.session_open(fill_date),
        )


def _expired(why: str) -> OrderUpdate:
    return OrderUpdate(status=OrderState.EXPIRED, broker_status="expired", error=why)


def _rejected(why: str) -> OrderUpdate:
    return OrderUpdate(status=OrderState.REJECTED, broker_status="rejected", error=why)
