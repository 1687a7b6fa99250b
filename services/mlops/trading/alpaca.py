"""Alpaca through alpaca-py: paper trading unless live trading is turned on on purpose.

Every call goes through :meth:`AlpacaBroker._call`: transient failures (HTTP 5xx, 429,
a dropped connection, a timeout) are retried with a bounded, doubling wait
(``ALPACA_MAX_ATTEMPTS``, ``ALPACA_RETRY_WAIT_SECONDS``, each request bounded by
``ALPACA_TIMEOUT_SECONDS``); alpaca-py's own retry is turned off so there is one policy.
An order is always resent with the SAME client order id, and after a lost reply or a
422 the order is looked up by that id (``GET /v2/orders:by_client_order_id``) and what
the broker says is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pandas as pd
from sqlalchemy import Engine

from mlops.db.schema import DEFAULT_STRATEGY
from mlops.errors import BrokerError, ConfigError
from mlops.settings import Settings
from mlops.trading import book
from mlops.trading.broker import (
    Account,
    BrokerClock,
    BrokerOrder,
    OrderUpdate,
    PendingOrder,
    Side,
)
from mlops.trading.lifecycle import OrderState, from_broker, is_terminal

log = logging.getLogger(__name__)

NAME = "alpaca"
LIVE_HOST = "api.alpaca.markets"
# Worth asking again: a timeout, a rate limit and any server-side failure (a proxy's
# 52x too), but not 501/505, which say the request can never be served as sent.
NEVER_TRANSIENT_5XX = frozenset({501, 505})


def is_transient(status: int | None) -> bool:
    """Whether an HTTP status means "try again later" (408, 429, 5xx but 501 and 505)."""
    if status is None:
        return False
    return status in (408, 429) or (500 <= status < 600 and status not in NEVER_TRANSIENT_5XX)


MAX_WAIT_SECONDS = 30.0
PAGE = 500  # the most orders Alpaca lists in one answer
T = TypeVar("T")


class TransientError(Exception):
    """A call still failing transiently after every attempt."""


def is_live_url(url: str | None) -> bool:
    """True when ``url``'s host is Alpaca's live trading API (parsed, lower-cased)."""
    if not url:
        return False
    host = (urlsplit(url.strip()).hostname or "").rstrip(".").lower()
    return host == LIVE_HOST


def check_endpoint(settings: Settings) -> None:
    """Refuse the live API unless ``ALPACA_LIVE_TRADING`` is true."""
    if is_live_url(settings.alpaca_base_url) and not settings.alpaca_live_trading:
        raise ConfigError(
            f"ALPACA_BASE_URL points at the live API ({LIVE_HOST}) but ALPACA_LIVE_TRADING "
            "is not true; trading stays on paper unless it is turned on on purpose."
        )


def _found(order: PendingOrder, known: OrderUpdate, why: str) -> OrderUpdate:
    """A look-up resolved what happened to ``order``: said, not only recorded."""
    log.info(
        "Order %s (%s %g %s): %s; Alpaca has it as %s, so it is not sent again.",
        order.client_order_id,
        order.side,
        order.quantity,
        order.symbol,
        why,
        known.status,
    )
    return known


class AlpacaBroker:
    name = NAME

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        sleep: Callable[[float], None] = time.sleep,
        *,
        strategy: str = DEFAULT_STRATEGY,
    ) -> None:
        check_endpoint(settings)
        assert settings.alpaca_api_key is not None and settings.alpaca_secret_key is not None
        self.engine = engine
        self.settings = settings
        self.strategy = strategy
        self.sleep = sleep
        self.client = _make_client(settings)
        self._account_id: str | None = None

    # Reading the account and the clock.

    def account_id(self) -> str:
        if self._account_id is None:
            found = self._call("reading the account", self.client.get_account)
            self._account_id = str(found.account_number or found.id)
        return self._account_id

    def account(self, day: date | None = None) -> Account:
        """Cash, equity and positions as the broker reports them now."""
        found = self._call("reading the account", self.client.get_account)
        positions = self._call("reading the positions", self.client.get_all_positions)
        self._account_id = str(found.account_number or found.id)
        held = [p for p in positions if float(p.qty) > 0]
        return Account(
            cash=float(found.cash),
            positions={p.symbol: float(p.qty) for p in held},
            account_id=self._account_id,
            equity=float(found.equity) if found.equity is not None else None,
            position_values={
                p.symbol: float(p.market_value) for p in held if p.market_value is not None
            },
        )

    def clock(self) -> BrokerClock:
        found = self._call("reading the market clock", self.client.get_clock)
        return BrokerClock(
            timestamp=found.timestamp,
            is_open=bool(found.is_open),
            next_open=found.next_open,
            next_close=found.next_close,
        )

    # Orders.

    def submit(self, order: PendingOrder, *, sent_before: bool = False) -> OrderUpdate:
        """Place ``order`` once: a lost reply or a 422 is resolved by asking for its id."""
        from alpaca.common.exceptions import APIError

        if sent_before:
            known = self._lookup_quietly(order.client_order_id)
            if known is not None:
                return _found(order, known, "sent by an earlier run")
        attempts = self.settings.alpaca_max_attempts
        last = "no attempt made"
        for attempt in range(1, attempts + 1):
            try:
                request = _request(order, self.settings.trade_time_in_force)
                return _update(self.client.submit_order(request))
            except APIError as exc:
                status = exc.status_code
                last = _message(exc)
                if status == 401:
                    raise BrokerError(f"Alpaca refused the API keys: {last}.") from None
                if not is_transient(status):
                    return self._refused(order, status, last)
            except Exception as exc:
                if not _is_connection_problem(exc):
                    raise
                last = _message(exc)
            # The reply may be lost after the broker took the order: ask before resending.
            known = self._lookup_quietly(order.client_order_id)
            if known is not None:
                return _found(order, known, f"its reply was lost ({last})")
            if attempt < attempts:
                self._wait(attempt, f"submitting {order.client_order_id}", last)
        return OrderUpdate(
            status=OrderState.PLANNED,
            error=f"not confirmed after {attempts} attempts ({last}); the next run retries",
        )

    def _refused(self, order: PendingOrder, status: int | None, message: str) -> OrderUpdate:
        """A final 4xx: a 422 may be our own earlier order (a duplicate id), so look first."""
        if status == 422:
            known = self._lookup_quietly(order.client_order_id)
            if known is not None:
                return _found(order, known, f"HTTP 422: {message}")
        return OrderUpdate(status=OrderState.UNPLACED, error=f"HTTP {status}: {message}")

    def lookup(self, client_order_id: str) -> OrderUpdate | None:
        """The broker's record of the order, or None when it has none (404)."""
        from alpaca.common.exceptions import APIError

        try:
            found = self._call(
                f"reading order {client_order_id}",
                lambda: self.client.get_order_by_client_id(client_order_id),
            )
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise BrokerError(
                f"Alpaca order {client_order_id} could not be read: {_message(exc)}."
            ) from None
        return _update(found)

    def _lookup_quietly(self, client_order_id: str) -> OrderUpdate | None:
        """``lookup``, but a broker that cannot answer yet means "unknown" (None)."""
        try:
            return self.lookup(client_order_id)
        except BrokerError as exc:
            log.warning("%s", exc)
            return None

    def sync(self, bars: pd.DataFrame, day: date) -> int:
        """Ask the broker about every order it has that is not final; record what changed."""
        changed = 0
        for row in book.open_orders(self.engine, NAME, self.account_id(), self.strategy):
            found = self.lookup(row["client_order_id"])
            if found is None:
                log.warning("Alpaca has no order %s any more.", row["client_order_id"])
                continue
            if book.apply(self.engine, row, found):
                changed += 1
        return changed

    def orders(self) -> list[BrokerOrder]:
        """Every order of the account, open and closed: newest first, a page at a time
        (``GET /v2/orders?status=all``, each page ``until`` the oldest of the last)."""
        from alpaca.common.enums import Sort
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        found: dict[str, BrokerOrder] = {}
        until = None
        while True:
            request = GetOrdersRequest(
                status=QueryOrderStatus.ALL, limit=PAGE, direction=Sort.DESC, until=until
            )
            page = self._call("listing the orders", partial(self.client.get_orders, request))
            new = [o for o in page if str(o.id) not in found]
            found.update((str(o.id), _listed(o)) for o in new)
            if len(page) < PAGE or not new:
                return list(found.values())
            # ``until`` is exclusive: a microsecond later keeps orders sent in the same
            # instant as the page's oldest (seen ones are skipped by their id).
            until = min(o.submitted_at for o in page) + timedelta(microseconds=1)

    def cancel(self, client_order_id: str, broker_order_id: str | None) -> OrderUpdate | None:
        """``DELETE /v2/orders/{id}``, then what Alpaca says about the order (it may still be
        ``pending_cancel``; the next sync records the end). An order that ended meanwhile
        (Alpaca answers 422 "not cancelable") is recorded as it ended."""
        from alpaca.common.exceptions import APIError

        if broker_order_id is None:
            known = self.lookup(client_order_id)
            if known is None or is_terminal(known.status):
                return known
            broker_order_id = known.broker_order_id

        def delete() -> None:
            try:
                self.client.cancel_order_by_id(broker_order_id)
            except APIError as exc:
                if exc.status_code not in (404, 422):  # gone, or ended: asked below
                    raise

        self._call(f"canceling order {client_order_id}", delete)
        return self.lookup(client_order_id)

    # Retries.

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        """``fn()`` with transient failures retried; a final one is one sentence."""
        from alpaca.common.exceptions import APIError

        attempts = self.settings.alpaca_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except APIError as exc:
                if not is_transient(exc.status_code):
                    if exc.status_code == 404:
                        raise
                    raise BrokerError(f"Alpaca failed {doing}: {_message(exc)}.") from None
                last = _message(exc)
            except Exception as exc:
                if not _is_connection_problem(exc):
                    raise
                last = _message(exc)
            if attempt < attempts:
                self._wait(attempt, doing, last)
        raise BrokerError(f"Alpaca failed {doing} after {attempts} attempts: {last}.")

    def _wait(self, attempt: int, doing: str, why: str) -> None:
        first = self.settings.alpaca_retry_wait_seconds
        seconds = min(first * 2 ** (attempt - 1), MAX_WAIT_SECONDS)
        log.warning("Alpaca: %s failed (%s); retry %d in %.1f s.", doing, why, attempt, seconds)
        self.sleep(seconds)


def _make_client(settings: Settings) -> Any:
    import requests
    from alpaca.trading.client import TradingClient

    assert settings.alpaca_api_key is not None and settings.alpaca_secret_key is not None
    client = TradingClient(
        api_key=settings.alpaca_api_key.get_secret_value(),
        secret_key=settings.alpaca_secret_key.get_secret_value(),
        paper=not settings.alpaca_live_trading,
        url_override=settings.alpaca_base_url,
    )
    client._retry = 0  # one retry policy: ours (alpaca-py would sleep 3 s on 429/504)
    timeout = settings.alpaca_timeout_seconds

    class _Session(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super().request(*args, **kwargs)

    client._session = _Session()
    return client


def _request(order: PendingOrder, time_in_force: str = "day") -> Any:
    """A market order, or a limit order at the order's limit price (``TRADE_ORDER_TYPE``),
    good for the day (``day``) or for the opening auction (``opg``,
    ``TRADE_TIME_IN_FORCE``; docs/trading.md says when each fits)."""
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

    fields: dict[str, Any] = {
        "symbol": order.symbol,
        "qty": order.quantity,
        "side": OrderSide.BUY if order.side == Side.BUY else OrderSide.SELL,
        "time_in_force": TimeInForce(time_in_force),
        "client_order_id": order.client_order_id,
    }
    if order.limit_price is not None:
        return LimitOrderRequest(limit_price=order.limit_price, **fields)
    return MarketOrderRequest(**fields)


def _update(found: Any) -> OrderUpdate:
    """An alpaca-py ``Order`` as an :class:`OrderUpdate`."""
    word = str(getattr(found.status, "value", found.status))
    filled = float(found.filled_qty) if found.filled_qty is not None else None
    price = float(found.filled_avg_price) if found.filled_avg_price is not None else None
    return OrderUpdate(
        status=from_broker(word),
        broker_order_id=str(found.id),
        broker_status=word,
        filled_quantity=filled,
        fill_price=price if filled else None,
        filled_at=found.filled_at,
    )


def _listed(found: Any) -> BrokerOrder:
    side = getattr(found.side, "value", found.side)
    return BrokerOrder(
        client_order_id=str(found.client_order_id),
        symbol=str(found.symbol or ""),
        side=str(side or ""),
        quantity=float(found.qty) if found.qty is not None else 0.0,
        update=_update(found),
        submitted_at=found.submitted_at,
        limit_price=float(found.limit_price) if found.limit_price is not None else None,
    )


def _is_connection_problem(exc: Exception) -> bool:
    import requests

    return isinstance(exc, requests.ConnectionError | requests.Timeout)


def _message(exc: Exception) -> str:
    try:
        text = getattr(exc, "message", None) or str(exc)
    except Exception:  # APIError.message parses JSON: a proxy's HTML page is not
        text = str(exc)
    text = str(text).strip()
    return text.splitlines()[0] if text else type(exc).__name__
