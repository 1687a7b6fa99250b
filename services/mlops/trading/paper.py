"""The built-in paper broker: cash, positions and fills kept in the database.

Orders are market orders good for one day: an order decided after day D's close fills at
the open of the next trading day in the data, or expires when its symbol has no bar that
day (a delisted symbol, for example). Cash and positions are derived from the fills.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select, update

from mlops.db.schema import orders
from mlops.runs import utcnow
from mlops.trading.broker import Account, OrderStatus, OrderUpdate, PendingOrder, Side

NAME = "paper"


class PaperBroker:
    name = NAME

    def __init__(self, engine: Engine, initial_cash: float) -> None:
        self.engine = engine
        self.initial_cash = initial_cash

    def account(self) -> Account:
        query = select(
            orders.c.symbol, orders.c.side, orders.c.quantity, orders.c.fill_price
        ).where(orders.c.broker == NAME, orders.c.status == OrderStatus.FILLED)
        cash = self.initial_cash
        positions: dict[str, float] = {}
        with self.engine.connect() as conn:
            for symbol, side, quantity, price in conn.execute(query):
                sign = 1.0 if side == Side.BUY else -1.0
                cash -= sign * quantity * price
                positions[symbol] = positions.get(symbol, 0.0) + sign * quantity
        return Account(cash=cash, positions={s: q for s, q in positions.items() if q > 0})

    def submit(self, order: PendingOrder) -> OrderUpdate:
        # Accepted now; filled by ``sync`` once the next trading day's bar is known.
        return OrderUpdate(status=OrderStatus.ACCEPTED, broker_order_id=order.client_order_id)

    def sync(self, bars: pd.DataFrame, day: date) -> int:
        """Fill or expire accepted orders decided before ``day``; returns how many changed."""
        query = (
            select(orders)
            .where(orders.c.broker == NAME, orders.c.status == OrderStatus.ACCEPTED)
            .where(orders.c.decision_date < day)
            .order_by(orders.c.decision_date, orders.c.side.desc(), orders.c.id)  # sells first
        )
        with self.engine.connect() as conn:
            pending = list(conn.execute(query).mappings())
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
            if bar.empty:
                self._update(
                    row["id"],
                    status=OrderStatus.EXPIRED,
                    error=f"no {row['symbol']} bar on {next_day.date()}: day order expired",
                )
            else:
                self._fill(row, float(bar["open"].iloc[0]), next_day.date())
            changed += 1
        return changed

    def _fill(self, row: Mapping[Any, Any], price: float, fill_date: date) -> None:
        quantity = float(row["quantity"])
        if row["side"] == Side.BUY:
            affordable = math.floor(max(self.account().cash, 0.0) / price)
            if affordable < 1:
                self._update(
                    row["id"], status=OrderStatus.REJECTED, error="insufficient cash at the open"
                )
                return
            quantity = min(quantity, float(affordable))
        else:
            held = self.account().positions.get(row["symbol"], 0.0)
            quantity = min(quantity, held)
            if quantity <= 0:
                self._update(row["id"], status=OrderStatus.REJECTED, error="no position to sell")
                return
        self._update(
            row["id"],
            status=OrderStatus.FILLED,
            quantity=quantity,
            fill_price=price,
            fill_date=fill_date,
            filled_at=utcnow(),
        )

    def _update(self, order_id: int, **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(orders).where(orders.c.id == order_id).values(**values))
