"""The broker a strategy's settings choose (``BROKER``): the built-in paper broker or Alpaca."""

from __future__ import annotations

from sqlalchemy import Engine

from mlops.settings import Settings
from mlops.trading.broker import Broker


def make_broker(settings: Settings, engine: Engine, strategy: str) -> Broker:
    """The broker of ``strategy`` (``settings`` are the strategy's): its orders and fills
    are that strategy's book."""
    if settings.broker == "alpaca":
        from mlops.trading.alpaca import AlpacaBroker

        return AlpacaBroker(engine, settings, strategy=strategy)
    from mlops.trading.paper import PaperBroker

    return PaperBroker(
        engine,
        settings.paper_initial_cash,
        opening_only=settings.trade_time_in_force == "opg",
        strategy=strategy,
    )
