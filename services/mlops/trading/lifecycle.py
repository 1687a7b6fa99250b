"""The order lifecycle: an explicit state machine, shared by every broker.

::

    planned ──submit──> <broker status> ──sync──> ... ──> filled | canceled | expired |
       │                  (new, accepted,                  replaced | rejected
       │                   pending_new, partially_filled, done_for_day, ...)
       └──403 / final 4xx / session passed──> unplaced

``planned`` is ours alone: the order is recorded (with its client order id) but the
broker has not confirmed it yet, either because it was not sent or because the reply was
lost. Every status the broker answers is stored verbatim (``broker_status``) and mapped
one by one to a lifecycle state here; an unknown word is kept and treated as open, so the
next run asks again. ``unplaced`` is ours too: the broker never took the order (it
refused it, or its session passed before it could be sent).
"""

from __future__ import annotations

import hashlib
from datetime import date
from enum import StrEnum


class OrderState(StrEnum):
    """The ``status`` column of ``orders``."""

    PLANNED = "planned"  # recorded, not confirmed by the broker yet
    UNPLACED = "unplaced"  # never reached the broker's book: refused, or too late
    # The broker's own statuses (Alpaca's names; the paper broker uses a few of them).
    NEW = "new"
    ACCEPTED = "accepted"
    PENDING_NEW = "pending_new"
    ACCEPTED_FOR_BIDDING = "accepted_for_bidding"
    PARTIALLY_FILLED = "partially_filled"
    DONE_FOR_DAY = "done_for_day"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    PENDING_REVIEW = "pending_review"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    CALCULATED = "calculated"
    HELD = "held"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REPLACED = "replaced"
    REJECTED = "rejected"


# Alpaca's statuses (alpaca.trading.enums.OrderStatus), each mapped to a state.
BROKER_STATUSES: dict[str, OrderState] = {
    "new": OrderState.NEW,
    "accepted": OrderState.ACCEPTED,
    "pending_new": OrderState.PENDING_NEW,
    "accepted_for_bidding": OrderState.ACCEPTED_FOR_BIDDING,
    "partially_filled": OrderState.PARTIALLY_FILLED,
    "done_for_day": OrderState.DONE_FOR_DAY,  # more fills may come the next session
    "pending_cancel": OrderState.PENDING_CANCEL,
    "pending_replace": OrderState.PENDING_REPLACE,
    "pending_review": OrderState.PENDING_REVIEW,
    "stopped": OrderState.STOPPED,  # a fill is guaranteed, not done yet
    "suspended": OrderState.SUSPENDED,
    "calculated": OrderState.CALCULATED,  # done for the day, settlement pending
    "held": OrderState.HELD,
    "filled": OrderState.FILLED,
    "canceled": OrderState.CANCELED,
    "expired": OrderState.EXPIRED,
    "replaced": OrderState.REPLACED,
    "rejected": OrderState.REJECTED,
}

TERMINAL = frozenset(
    {
        OrderState.FILLED,
        OrderState.CANCELED,
        OrderState.EXPIRED,
        OrderState.REPLACED,
        OrderState.REJECTED,
        OrderState.UNPLACED,
    }
)
# Final states in which the broker never executed anything of the order.
NOT_PLACED = frozenset({OrderState.REJECTED, OrderState.UNPLACED})


def from_broker(status: str) -> str:
    """The lifecycle state for a status word the broker answered (unknown words kept)."""
    word = str(status).strip().lower()
    return BROKER_STATUSES.get(word, word)


def is_terminal(state: str) -> bool:
    return state in TERMINAL


def is_open_at_broker(state: str) -> bool:
    """Sent and not final: the next run asks the broker again."""
    return state != OrderState.PLANNED and not is_terminal(state)


def client_order_id(broker: str, account: str, day: date, symbol: str, side: str) -> str:
    """The same decision of one broker account always gets the same id, and no other does.

    Brokers keep client order ids unique per account, so the broker and the account are
    part of the id (an order of the paper broker never blocks one for Alpaca, nor one
    Alpaca account another's); the digest covers all of it.
    """
    key = f"{broker}|{account}|{day.isoformat()}|{symbol}|{side}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    tag = hashlib.sha256(f"{broker}|{account}".encode()).hexdigest()[:6]
    return f"mlops-{broker[:6]}-{tag}-{day:%Y%m%d}-{symbol[:16]}-{side}-{digest[:10]}"
