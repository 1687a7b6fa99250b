"""Reconciliation: the book (the database) against the broker's account.

Run by every ``mlops trade`` before it decides, by the kill switch before it cancels,
and alone as ``mlops trading reconcile``:

1. **Adopt.** The broker's orders are listed (open and closed). Those this strategy
   placed on this account (the client order id's prefix, with the strategy's token, its
   digest computed again) that the book lacks are written into it with what the broker
   says (status, fills), each with a decision row for its day: a fresh or restored
   database against an account it traded knows its positions and decided days again, so
   nothing is bought twice.
   Orders the book has are brought up to date from the same listing.
2. **Differences**, each one sentence (a warning, and an entry in the result):
   a position whose quantity this system's fills do not add up to; an open order this
   system did not place; an order the book has open that the broker does not list.
   Their symbols are not traded by that run (``not_traded``); with
   ``RECONCILE_STRICT=true`` the run stops instead (:class:`ReconciliationError`).
   With ``TRADE_MANAGE_ALL_POSITIONS=true`` every position is the strategy's: a position
   difference is still listed but does not stop its symbol. Differences are also sent as
   an alert (``ALERT_WEBHOOK_URL``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Engine

from mlops import alerts
from mlops.errors import BrokerError
from mlops.runs import utcnow
from mlops.settings import Settings
from mlops.trading import book
from mlops.trading.broker import Broker, BrokerOrder
from mlops.trading.lifecycle import OwnId, is_open_at_broker, parse_own_id

log = logging.getLogger(__name__)

POSITION, ORDER, MISSING = "position", "order", "missing_at_broker"
TOLERANCE = 1e-6


@dataclass
class Difference:
    """What the book cannot explain about one symbol."""

    kind: str  # position | order | missing_at_broker
    symbol: str
    finding: str  # what does not match
    sentence: str  # the finding and what the run does about it
    blocks: bool = True  # the symbol is not traded
    broker_quantity: float | None = None
    book_quantity: float | None = None
    client_order_id: str | None = None


@dataclass
class Reconciliation:
    broker: str
    account: str
    strategy: str = ""
    orders_listed: int = 0
    adopted: list[str] = field(default_factory=list)  # client order ids written into the book
    updated: int = 0  # orders of the book brought up to date from the listing
    differences: list[Difference] = field(default_factory=list)
    not_traded: list[str] = field(default_factory=list)  # symbols the run leaves alone

    def sentence(self) -> str:
        if not self.differences:
            return (
                f"The book matches {self.broker} account {self.account}"
                f"{f' after adopting {len(self.adopted)} orders' if self.adopted else ''}"
            )
        return (
            f"{len(self.differences)} differences between the book and {self.broker} account "
            f"{self.account}: " + "; ".join(d.sentence for d in self.differences)
        )


class ReconciliationError(BrokerError):
    """``RECONCILE_STRICT=true`` and the broker's account has what the book cannot explain."""

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result  # printed as JSON before the error


def reconcile(
    engine: Engine, broker: Broker, account_id: str, settings: Settings
) -> Reconciliation:
    """Adopt the strategy's orders the book lacks, then list what it cannot explain."""
    manage_all = settings.trade_manage_all_positions
    listed = broker.orders()
    strategy = broker.strategy
    result = Reconciliation(broker.name, account_id, strategy, orders_listed=len(listed))
    ours: list[tuple[BrokerOrder, OwnId]] = []
    for order in listed:
        own = parse_own_id(
            broker.name, account_id, order.client_order_id, order.symbol, strategy=strategy
        )
        if own is not None:
            ours.append((order, own))
        elif order.is_open:
            result.differences.append(_foreign(broker.name, order))
    _adopt_and_update(engine, broker.name, account_id, ours, result)
    _missing(engine, broker.name, account_id, {o.client_order_id for o in listed}, result)
    _positions(engine, broker, account_id, manage_all, result)
    result.not_traded = sorted({d.symbol for d in result.differences if d.blocks})
    for difference in result.differences:
        log.warning("%s.", difference.sentence)
    if result.differences:
        alerts.send(settings, "reconciliation", result.sentence())
    return result


def _foreign(broker: str, order: BrokerOrder) -> Difference:
    return Difference(
        kind=ORDER,
        symbol=order.symbol,
        client_order_id=order.client_order_id,
        broker_quantity=order.quantity,
        finding=(
            finding := f"{broker} has an open order {order.client_order_id} ({order.side} "
            f"{order.quantity:g} {order.symbol}) that this system did not place"
        ),
        sentence=f"{finding}: {order.symbol} is not traded while it is open",
    )


def _adopt_and_update(
    engine: Engine,
    broker: str,
    account: str,
    ours: list[tuple[BrokerOrder, OwnId]],
    result: Reconciliation,
) -> None:
    strategy = result.strategy
    known = {
        r["client_order_id"]: r for r in book.account_orders(engine, broker, account, strategy)
    }
    decision_rows, order_rows = [], []
    for order, own in ours:
        row = known.get(order.client_order_id)
        if row is not None:
            result.updated += book.apply(engine, row, order.update)
            continue
        order_rows.append({**_order_row(broker, account, order, own), "strategy": strategy})
        if not own.closing:
            decision_rows.append(
                {**_decision_row(broker, account, order, own.day), "strategy": strategy}
            )
        result.adopted.append(order.client_order_id)
        log.warning(
            "Adopted order %s (%s %g %s, decided %s, %s) from %s: the book did not have it.",
            order.client_order_id,
            own.side,
            order.quantity,
            order.symbol,
            own.day,
            order.update.status,
            broker,
        )
    book.record(engine, decision_rows, order_rows)


def _order_row(broker: str, account: str, order: BrokerOrder, own: OwnId) -> dict[str, Any]:
    update, now = order.update, utcnow()
    return {
        "client_order_id": order.client_order_id,
        "decision_date": own.day,
        "symbol": order.symbol,
        "side": own.side,
        "quantity": order.quantity,
        "limit_price": order.limit_price,
        "broker": broker,
        "account": account,
        "status": update.status,
        "broker_order_id": update.broker_order_id,
        "broker_status": update.broker_status,
        "filled_quantity": update.filled_quantity,
        "fill_price": update.fill_price,
        "filled_at": update.filled_at,
        "fill_date": update.fill_date,
        "attempts": 1,
        "submitted_at": order.submitted_at or now,
        "updated_at": now,
    }


def _decision_row(broker: str, account: str, order: BrokerOrder, day: date) -> dict[str, Any]:
    return {
        "decision_date": day,
        "symbol": order.symbol,
        "action": order.side,
        "quantity": order.quantity,
        "expected_change": None,
        "predicted_close": None,
        "last_close": None,
        "model_version": None,
        "broker": broker,
        "account": account,
        "reason": (
            f"adopted by reconciliation: {broker} has this system's order "
            f"{order.client_order_id} ({order.side} {order.quantity:g}), the book did not"
        ),
        "created_at": utcnow(),
    }


def _missing(
    engine: Engine, broker: str, account: str, listed: set[str], result: Reconciliation
) -> None:
    """Orders the book has open that the broker does not list."""
    for row in book.account_orders(engine, broker, account, result.strategy):
        if not is_open_at_broker(row["status"]) or row["client_order_id"] in listed:
            continue
        result.differences.append(
            Difference(
                kind=MISSING,
                symbol=row["symbol"],
                client_order_id=row["client_order_id"],
                book_quantity=float(row["quantity"]),
                finding=(
                    finding := f"The book has order {row['client_order_id']} ({row['side']} "
                    f"{row['quantity']:g} {row['symbol']}, decided {row['decision_date']}) "
                    f"open, but {broker} does not list it"
                ),
                sentence=f"{finding}: {row['symbol']} is not traded until it is resolved",
            )
        )


def _positions(
    engine: Engine, broker: Broker, account: str, manage_all: bool, result: Reconciliation
) -> None:
    """Each position against the net fills of this system's orders."""
    held = broker.account().positions
    owned = book.owned_positions(engine, broker.name, account, broker.strategy)
    for symbol in sorted(set(held) | set(owned)):
        quantity, explained = held.get(symbol, 0.0), owned.get(symbol, 0.0)
        if abs(quantity - explained) < TOLERANCE:
            continue
        if explained == 0:
            what = f"{broker.name} holds {quantity:g} {symbol} that this system did not buy"
        elif quantity > explained:
            what = (
                f"{broker.name} holds {quantity:g} {symbol}, but this system's fills explain "
                f"{explained:g}"
            )
        else:
            what = (
                f"{broker.name} holds {quantity:g} {symbol}, but this system's fills add up "
                f"to {explained:g} (sold or moved outside it)"
            )
        then = (
            "traded as the strategy's anyway (TRADE_MANAGE_ALL_POSITIONS=true)"
            if manage_all
            else f"{symbol} is not traded"
        )
        result.differences.append(
            Difference(
                kind=POSITION,
                symbol=symbol,
                finding=what,
                sentence=f"{what}: {then}",
                blocks=not manage_all,
                broker_quantity=quantity,
                book_quantity=explained,
            )
        )
