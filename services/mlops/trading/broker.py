"""What a broker offers the trading stage: its account, its clock, placing, listing,
canceling and syncing orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol

import pandas as pd

from mlops.errors import ORDERS_NOT_PLACED_EXIT_CODE, MlopsError
from mlops.trading.lifecycle import is_open_at_broker


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrdersNotPlacedError(MlopsError):
    """Orders the strategy decided could not be placed (refused, or retries exhausted)."""

    exit_code = ORDERS_NOT_PLACED_EXIT_CODE

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result  # the stage's result, printed as JSON before the error


@dataclass
class Account:
    """Cash and positions; ``equity`` and ``position_values`` when the broker reports them."""

    cash: float
    positions: dict[str, float] = field(default_factory=dict)
    account_id: str = ""
    equity: float | None = None  # None: value the positions at the data's closes
    position_values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BrokerClock:
    """The broker's market clock (``GET /v2/clock``)."""

    timestamp: datetime
    is_open: bool
    next_open: datetime | None = None
    next_close: datetime | None = None


@dataclass(frozen=True)
class PendingOrder:
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    limit_price: float | None = None  # None: a market order (TRADE_ORDER_TYPE)


@dataclass(frozen=True)
class OrderUpdate:
    """What the broker says about one order; ``status`` is a lifecycle state."""

    status: str
    broker_order_id: str | None = None
    error: str | None = None
    broker_status: str | None = None
    filled_quantity: float | None = None
    fill_price: float | None = None
    filled_at: datetime | None = None

    @property
    def fill_date(self) -> date | None:
        return self.filled_at.date() if self.filled_at is not None else None


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker lists it, whoever placed it."""

    client_order_id: str
    symbol: str
    side: str
    quantity: float
    update: OrderUpdate  # its state as the broker has it now
    submitted_at: datetime | None = None
    limit_price: float | None = None  # None: a market order

    @property
    def is_open(self) -> bool:
        return is_open_at_broker(self.update.status)


class Broker(Protocol):
    name: str
    strategy: str  # whose book it keeps: the strategy trading this account

    def account(self, day: date | None = None) -> Account: ...

    def account_id(self) -> str: ...

    def clock(self) -> BrokerClock | None: ...

    def submit(self, order: PendingOrder, *, sent_before: bool = False) -> OrderUpdate: ...

    def lookup(self, client_order_id: str) -> OrderUpdate | None: ...

    def sync(self, bars: pd.DataFrame, day: date) -> int: ...

    def orders(self) -> list[BrokerOrder]:
        """Every order the account has (open and closed), whoever placed it."""
        ...

    def cancel(self, client_order_id: str, broker_order_id: str | None) -> OrderUpdate | None:
        """Ask the broker to cancel an open order; what it says afterwards (None: it has
        no such order)."""
        ...
