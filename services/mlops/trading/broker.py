"""What a broker offers the trading stage, and which broker the settings choose."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import pandas as pd

from mlops.context import Context


@dataclass
class Account:
    cash: float
    positions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingOrder:
    client_order_id: str
    symbol: str
    side: str
    quantity: float


@dataclass(frozen=True)
class OrderUpdate:
    status: str
    broker_order_id: str | None = None
    error: str | None = None


class Broker(Protocol):
    name: str

    def account(self) -> Account: ...

    def submit(self, order: PendingOrder) -> OrderUpdate: ...

    def sync(self, bars: pd.DataFrame, day: date) -> int: ...


def make_broker(ctx: Context) -> Broker:
    settings = ctx.settings
    if settings.broker == "alpaca":
        from mlops.trading.alpaca import AlpacaBroker

        return AlpacaBroker(ctx.engine, settings)
    from mlops.trading.paper import PaperBroker

    return PaperBroker(ctx.engine, settings.paper_initial_cash)
