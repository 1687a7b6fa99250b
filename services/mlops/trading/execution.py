"""Sending planned orders and canceling open ones: the stage's and the kill switch's.

Both go through the broker interface and record every answer in the book
(:func:`mlops.trading.book.apply`), so the orders-once rules hold for either: the attempt
is counted before the send, a resend keeps the client order id and is looked up first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine

from mlops.trading import book
from mlops.trading.broker import Broker, OrderUpdate, PendingOrder, Side
from mlops.trading.lifecycle import (
    NOT_PLACED,
    OrderState,
    is_closing_id,
    is_open_at_broker,
    is_terminal,
)

log = logging.getLogger(__name__)


def send(
    engine: Engine, broker: Broker, rows: Iterable[book.Row], *, stop_when_halted: bool = True
) -> list[str]:
    """Send the planned ``rows``; the client order ids the broker took.

    With ``stop_when_halted`` (the strategy's orders), the kill switch is read again before
    each order: a halt that comes in the middle of a run stops the rest.
    """
    placed = []
    for row in rows:
        if row["status"] != OrderState.PLANNED:
            continue
        if stop_when_halted and book.halt_state(engine, row["strategy"])[0]:
            log.warning(
                "Trading was halted while orders were being sent: %s and the ones after it "
                "are not sent.",
                row["client_order_id"],
            )
            break
        book.mark_attempt(engine, row["id"])
        order = PendingOrder(
            row["client_order_id"],
            row["symbol"],
            Side(row["side"]),
            row["quantity"],
            limit_price=row["limit_price"],
        )
        update = broker.submit(order, sent_before=row["attempts"] > 0)
        book.apply(engine, row, update)
        if update.status not in (OrderState.PLANNED, *NOT_PLACED):
            placed.append(row["client_order_id"])
    return placed


@dataclass
class Canceled:
    """What canceling this system's open orders did."""

    canceled: list[str] = field(default_factory=list)  # final: canceled (or never sent)
    pending: list[str] = field(default_factory=list)  # the broker has not confirmed it yet
    ended: list[str] = field(default_factory=list)  # had filled or ended before the cancel


def cancel_open(engine: Engine, broker: Broker, account: str, why: str) -> Canceled:
    """Cancel every open order of this system on the account, the kill switch's own
    closing sells excepted; planned orders not at the broker are closed as canceled."""
    done = Canceled()
    for row in book.account_orders(engine, broker.name, account, broker.strategy):
        cid = row["client_order_id"]
        if is_closing_id(cid) or is_terminal(row["status"]):
            continue
        if row["status"] == OrderState.PLANNED:
            open_row = _planned_at_broker(engine, broker, row, why, done)
            if open_row is None:
                continue
            row = open_row
        update = broker.cancel(cid, row["broker_order_id"])
        if update is None:
            log.warning("%s has no order %s to cancel.", broker.name, cid)
            continue
        if update.status != OrderState.FILLED:
            update = replace(update, error=update.error or why)
        book.apply(engine, row, update)
        if update.status == OrderState.CANCELED:
            done.canceled.append(cid)
        elif is_terminal(update.status):
            done.ended.append(cid)
        else:
            done.pending.append(cid)
    return done


def _planned_at_broker(
    engine: Engine, broker: Broker, row: book.Row, why: str, done: Canceled
) -> book.Row | None:
    """A planned order: closed as canceled when the broker does not have it; when it does,
    recorded as the broker has it, and returned if it is still open there."""
    cid = row["client_order_id"]
    found = broker.lookup(cid) if row["attempts"] > 0 else None
    if found is None:
        book.apply(engine, row, OrderUpdate(status=OrderState.CANCELED, error=f"not sent: {why}"))
        done.canceled.append(cid)
        return None
    book.apply(engine, row, found)
    if not is_open_at_broker(found.status):
        done.ended.append(cid)
        return None
    return book.order(engine, cid) or row
