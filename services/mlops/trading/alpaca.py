"""Alpaca through alpaca-py: paper trading unless live trading is turned on on purpose."""

from __future__ import annotations

from datetime import date

import pandas as pd
from sqlalchemy import Engine, select, update

from mlops.db.schema import orders
from mlops.errors import BrokerError, ConfigError
from mlops.settings import Settings
from mlops.trading.broker import (
    TERMINAL_STATUSES,
    Account,
    OrderStatus,
    OrderUpdate,
    PendingOrder,
    Side,
)

NAME = "alpaca"
LIVE_HOST = "api.alpaca.markets"


class AlpacaBroker:
    name = NAME

    def __init__(self, engine: Engine, settings: Settings) -> None:
        from alpaca.trading.client import TradingClient

        live = settings.alpaca_live_trading
        url = settings.alpaca_base_url
        if not live and url and LIVE_HOST in url and "paper" not in url:
            raise ConfigError(
                "ALPACA_BASE_URL points at the live API but ALPACA_LIVE_TRADING is not true."
            )
        assert settings.alpaca_api_key is not None and settings.alpaca_secret_key is not None
        self.engine = engine
        self.client = TradingClient(
            api_key=settings.alpaca_api_key.get_secret_value(),
            secret_key=settings.alpaca_secret_key.get_secret_value(),
            paper=not live,
            url_override=url,
        )

    def account(self) -> Account:
        try:
            account = self.client.get_account()
            positions = self.client.get_all_positions()
        except Exception as exc:
            raise BrokerError(f"Alpaca account could not be read: {_message(exc)}.") from None
        return Account(
            cash=float(account.cash),
            positions={p.symbol: float(p.qty) for p in positions if float(p.qty) > 0},
        )

    def submit(self, order: PendingOrder) -> OrderUpdate:
        from alpaca.common.exceptions import APIError
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest

        request = MarketOrderRequest(
            symbol=order.symbol,
            qty=order.quantity,
            side=OrderSide.BUY if order.side == Side.BUY else OrderSide.SELL,
            time_in_force=TimeInForce.DAY,
            client_order_id=order.client_order_id,
        )
        try:
            placed = self.client.submit_order(request)
        except APIError as exc:
            existing = self._by_client_id(order.client_order_id)
            if existing is not None:  # submitted before (a rerun): don't place it twice
                return existing
            return OrderUpdate(status=OrderStatus.REJECTED, error=_message(exc))
        except Exception as exc:
            raise BrokerError(
                f"Alpaca order {order.client_order_id} failed: {_message(exc)}."
            ) from None
        return OrderUpdate(status=str(placed.status.value), broker_order_id=str(placed.id))

    def _by_client_id(self, client_order_id: str) -> OrderUpdate | None:
        try:
            found = self.client.get_order_by_client_id(client_order_id)
        except Exception:
            return None
        return OrderUpdate(status=str(found.status.value), broker_order_id=str(found.id))

    def sync(self, bars: pd.DataFrame, day: date) -> int:
        """Refresh orders not yet final from Alpaca; fills are recorded with their price."""
        query = select(orders).where(
            orders.c.broker == NAME, orders.c.status.not_in([*TERMINAL_STATUSES, OrderStatus.NEW])
        )
        with self.engine.connect() as conn:
            open_orders = list(conn.execute(query).mappings())
        changed = 0
        for row in open_orders:
            try:
                found = self.client.get_order_by_client_id(row["client_order_id"])
            except Exception as exc:
                raise BrokerError(
                    f"Alpaca order {row['client_order_id']} could not be read: {_message(exc)}."
                ) from None
            status = str(found.status.value)
            if status == row["status"]:
                continue
            values: dict[str, object] = {"status": status}
            if found.filled_avg_price is not None:
                values["fill_price"] = float(found.filled_avg_price)
            if found.filled_at is not None:
                values["filled_at"] = found.filled_at
                values["fill_date"] = found.filled_at.date()
            if found.filled_qty is not None and float(found.filled_qty) > 0:
                values["quantity"] = float(found.filled_qty)
            with self.engine.begin() as conn:
                conn.execute(update(orders).where(orders.c.id == row["id"]).values(**values))
            changed += 1
        return changed


def _message(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
