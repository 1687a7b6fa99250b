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
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from mlops.db.schema import DEFAULT_STRATEGY


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


# The kill switch's closing sell (`mlops trading halt --flatten`): its own word in the id,
# so it never takes the id of the strategy's sell of the same day and symbol.
CLOSE = "close"


def client_order_id(
    broker: str, account: str, day: date, symbol: str, side: str, *, strategy: str
) -> str:
    """The same decision of one strategy on one broker account always gets the same id,
    and no other does.

    Brokers keep client order ids unique per account, so the broker and the account are
    part of the id (an order of the paper broker never blocks one for Alpaca, nor one
    Alpaca account another's), and so is the strategy (a token after the prefix, see
    :func:`id_prefix`); the digest covers all of it. ``side`` is ``buy``, ``sell`` or
    :data:`CLOSE` (a sell of the kill switch).
    """
    key = f"{broker}|{account}|{day.isoformat()}|{symbol}|{side}"
    if strategy != DEFAULT_STRATEGY:
        key += f"|{strategy}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    prefix = id_prefix(broker, account, strategy)
    return f"{prefix}{day:%Y%m%d}-{symbol[:16]}-{side}-{digest[:10]}"


def id_prefix(broker: str, account: str, strategy: str) -> str:
    """What every client order id of one strategy on one broker account starts with: the
    default strategy's ids are those from before strategies (``mlops-alpaca-3f9a1c-``),
    another's carry its name (``mlops-alpaca-3f9a1c-red-``; a name starts with a letter,
    a day with a digit, so neither is read as the other)."""
    tag = hashlib.sha256(f"{broker}|{account}".encode()).hexdigest()[:6]
    token = "" if strategy == DEFAULT_STRATEGY else f"{strategy}-"
    return f"mlops-{broker[:6]}-{tag}-{token}"


@dataclass(frozen=True)
class OwnId:
    """What a client order id of this system says: its decision day and side."""

    day: date
    side: str  # buy | sell
    closing: bool  # a sell of the kill switch, not of the strategy


def parse_own_id(
    broker: str, account: str, cid: str, symbol: str, *, strategy: str
) -> OwnId | None:
    """``cid``'s day and side when this strategy made it for ``symbol`` on this account.

    None for any other id: another system's, another account's or strategy's, or one
    that only looks like ours (the digest is computed again and must match).
    """
    prefix = id_prefix(broker, account, strategy)
    if not cid.startswith(prefix):
        return None
    rest = cid[len(prefix) :]
    parts = rest.rsplit("-", 2)
    if len(parts) != 3:
        return None
    try:
        day = datetime.strptime(rest[:8], "%Y%m%d").date()
    except ValueError:
        return None
    word = parts[1]
    if (
        word not in ("buy", "sell", CLOSE)
        or client_order_id(broker, account, day, symbol, word, strategy=strategy) != cid
    ):
        return None
    return OwnId(day=day, side="sell" if word == CLOSE else word, closing=word == CLOSE)


def is_closing_id(cid: str) -> bool:
    """Whether ``cid`` is a closing sell of the kill switch (``...-close-<digest>``)."""
    return cid.rsplit("-", 2)[-2:-1] == [CLOSE]
