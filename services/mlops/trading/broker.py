"""What a broker offers the trading stage: its account, submitting and syncing orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Protocol

import pandas as pd


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderStatus(StrEnum):
    """An order's status in the ``orders`` table."""

    NEW = "new"  # recorded by the stage, not sent to the broker yet
    ACCEPTED = "accepted"
    PENDING_NEW = "pending_new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    DONE_FOR_DAY = "done_for_day"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REPLACED = "replaced"
    PENDING_CANCEL = "pending_cancel"
    REJECTED = "rejected"


TERMINAL_STATUSES = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.REJECTED,
        OrderStatus.DONE_FOR_DAY,
        OrderStatus.REPLACED,
    }
)


@dataclass
class Account:
    cash: float
    positions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingOrder:
    client_order_id: str
    symbol: str
    side: Side
    quantity: float


@dataclass(frozen=True)
class OrderUpdate:
    status: OrderStatus | str
    broker_order_id: str | None = None
    error: str | None = None


class Broker(Protocol):
    name: str

    def account(self) -> Account: ...

    def submit(self, order: PendingOrder) -> OrderUpdate: ...

    def sync(self, bars: pd.DataFrame, day: date) -> int: ...
