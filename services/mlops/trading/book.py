"""The order book in the database: decisions and orders of one strategy's broker account.

Every read and write is of one strategy on one broker account (``broker``, ``account``,
``strategy``): two strategies trade the same day side by side, each its own book.

Every write to ``orders`` after the first goes through :func:`apply`, which records what
the broker said (lifecycle state, the broker's status word, filled quantity, average
fill price, fill time) and never moves a final order back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import Engine, RowMapping, and_, select, update

from mlops.db.schema import (
    ALL_STRATEGIES,
    equity_snapshots,
    orders,
    trade_decisions,
    trading_halts,
)
from mlops.db.upsert import insert_new
from mlops.runs import utcnow
from mlops.trading.broker import OrderUpdate
from mlops.trading.lifecycle import TERMINAL, OrderState, is_open_at_broker, is_terminal

Row = RowMapping
log = logging.getLogger(__name__)


def _mine(table: Any, broker: str, account: str, strategy: str) -> Any:
    return and_(table.c.broker == broker, table.c.account == account, table.c.strategy == strategy)


def decided(engine: Engine, day: date, broker: str, account: str, strategy: str) -> dict[str, str]:
    """The day's recorded decisions, symbol -> action."""
    query = select(trade_decisions.c.symbol, trade_decisions.c.action).where(
        trade_decisions.c.decision_date == day, _mine(trade_decisions, broker, account, strategy)
    )
    with engine.connect() as conn:
        return {s: a for s, a in conn.execute(query).all()}


def record(engine: Engine, decision_rows: list[dict[str, Any]], order_rows: list[dict]) -> None:
    """Decisions and their orders in one transaction: all of them or none."""
    with engine.begin() as conn:
        insert_new(
            conn,
            trade_decisions,
            decision_rows,
            keys=["decision_date", "symbol", "broker", "account", "strategy"],
        )
        insert_new(conn, orders, order_rows, keys=["client_order_id"])


def day_orders(engine: Engine, day: date, broker: str, account: str, strategy: str) -> list[Row]:
    query = (
        select(orders)
        .where(orders.c.decision_date == day, _mine(orders, broker, account, strategy))
        .order_by(orders.c.side.desc(), orders.c.id)  # sells first
    )
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def planned_before(
    engine: Engine, day: date, broker: str, account: str, strategy: str
) -> list[Row]:
    """Orders of earlier days never confirmed by the broker."""
    query = select(orders).where(
        orders.c.decision_date < day,
        orders.c.status == OrderState.PLANNED,
        _mine(orders, broker, account, strategy),
    )
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def open_orders(engine: Engine, broker: str, account: str, strategy: str) -> list[Row]:
    """Orders the broker has that are not final yet."""
    query = (
        select(orders)
        .where(
            _mine(orders, broker, account, strategy),
            orders.c.status.not_in([*TERMINAL, OrderState.PLANNED]),
        )
        .order_by(orders.c.decision_date, orders.c.side.desc(), orders.c.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def account_orders(engine: Engine, broker: str, account: str, strategy: str) -> list[Row]:
    """Every order of the strategy's account in the book, oldest first."""
    query = select(orders).where(_mine(orders, broker, account, strategy)).order_by(orders.c.id)
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def order(engine: Engine, client_order_id: str) -> Row | None:
    query = select(orders).where(orders.c.client_order_id == client_order_id)
    with engine.connect() as conn:
        return conn.execute(query).mappings().first()


def planned(engine: Engine, broker: str, account: str, strategy: str) -> list[Row]:
    """Orders of any day recorded but not confirmed by the broker."""
    query = select(orders).where(
        orders.c.status == OrderState.PLANNED, _mine(orders, broker, account, strategy)
    )
    with engine.connect() as conn:
        return list(conn.execute(query.order_by(orders.c.id)).mappings())


def as_update(row: Row) -> OrderUpdate:
    """What the book holds about an order, as the broker would say it."""
    return OrderUpdate(
        status=row["status"],
        broker_order_id=row["broker_order_id"],
        error=row["error"],
        broker_status=row["broker_status"],
        filled_quantity=row["filled_quantity"],
        fill_price=row["fill_price"],
        filled_at=row["filled_at"],
    )


def mark_attempt(engine: Engine, row_id: int) -> None:
    """Before sending: a crash after this leaves a trace that the order may have gone."""
    with engine.begin() as conn:
        conn.execute(
            update(orders)
            .where(orders.c.id == row_id)
            .values(attempts=orders.c.attempts + 1, submitted_at=utcnow(), updated_at=utcnow())
        )


def apply(engine: Engine, row: Row, found: OrderUpdate) -> bool:
    """Record what the broker said about an order; False when nothing changed."""
    if is_terminal(row["status"]):
        return False
    # The error always follows the latest answer: an order confirmed after a failed try
    # loses the old message.
    values: dict[str, Any] = {"status": found.status, "error": found.error}
    for column, value in (
        ("broker_order_id", found.broker_order_id),
        ("broker_status", found.broker_status),
        ("filled_quantity", found.filled_quantity),
        ("fill_price", found.fill_price),
        ("filled_at", found.filled_at),
        ("fill_date", found.fill_date),
    ):
        if value is not None:
            values[column] = value
    if all(_same(row.get(k), v) for k, v in values.items()):
        return False
    values["updated_at"] = utcnow()
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.id == row["id"]).values(**values))
    _warn_if_ended_unfilled(row, values)
    return True


def _warn_if_ended_unfilled(row: Row, values: Mapping[str, Any]) -> None:
    """One sentence when an order the broker had taken ends without being wholly filled
    (rejected, canceled, expired after it was placed): the run that learns it says so."""
    status = values["status"]
    if not is_open_at_broker(row["status"]) or not is_terminal(status):
        return
    if status == OrderState.FILLED:
        return
    quantity = float(row["quantity"])
    filled = float(values.get("filled_quantity", row.get("filled_quantity")) or 0.0)
    why = f": {values['error']}" if values.get("error") else ""
    log.warning(
        "Order %s (%s %g %s, decided %s) ended %s with %g of %g filled%s.",
        row["client_order_id"],
        row["side"],
        quantity,
        row["symbol"],
        row["decision_date"],
        status,
        filled,
        quantity,
        why,
    )


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, float) or isinstance(new, float):
        return old is not None and new is not None and abs(float(old) - float(new)) < 1e-9
    if hasattr(old, "tzinfo") and hasattr(new, "tzinfo") and old is not None:
        return bool(old.replace(tzinfo=None) == new.replace(tzinfo=None))
    return bool(old == new)


def owned_positions(engine: Engine, broker: str, account: str, strategy: str) -> dict[str, float]:
    """Net filled quantity per symbol of the orders the strategy placed on the account."""
    query = select(orders.c.symbol, orders.c.side, orders.c.filled_quantity).where(
        _mine(orders, broker, account, strategy), orders.c.filled_quantity.is_not(None)
    )
    held: dict[str, float] = {}
    with engine.connect() as conn:
        for symbol, side, quantity in conn.execute(query):
            held[symbol] = held.get(symbol, 0.0) + (quantity if side == "buy" else -quantity)
    return {s: q for s, q in held.items() if q > 1e-9}


def halt_state(engine: Engine, strategy: str) -> tuple[bool, str]:
    """Whether `mlops trading halt` is in force for ``strategy``, and why."""
    latest = latest_halt(engine, strategy)
    return (False, "") if latest is None else (bool(latest["halted"]), str(latest["reason"]))


def latest_halt(engine: Engine, strategy: str) -> Row | None:
    """The kill switch's newest row for ``strategy`` (halted or resumed, by whom, why,
    when): its own or one for every strategy; with :data:`ALL_STRATEGIES`, the newest of
    any strategy."""
    query = select(trading_halts).order_by(trading_halts.c.id.desc()).limit(1)
    if strategy != ALL_STRATEGIES:
        query = query.where(trading_halts.c.strategy.in_([strategy, ALL_STRATEGIES]))
    with engine.connect() as conn:
        return conn.execute(query).mappings().first()


def halt_names(engine: Engine) -> set[str]:
    """The strategies the kill switch ever named (not :data:`ALL_STRATEGIES`)."""
    query = select(trading_halts.c.strategy).distinct()
    with engine.connect() as conn:
        return {s for s in conn.execute(query).scalars() if s != ALL_STRATEGIES}


def set_halt(engine: Engine, halted: bool, reason: str, actor: str = "", *, strategy: str) -> int:
    """A new row of the kill switch for ``strategy`` (or :data:`ALL_STRATEGIES`); its id."""
    with engine.begin() as conn:
        inserted = conn.execute(
            trading_halts.insert().values(
                halted=halted,
                reason=reason,
                actor=actor[:128],
                created_at=utcnow(),
                strategy=strategy,
            )
        ).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def halt_details(engine: Engine, row_id: int, details: Mapping[str, Any]) -> None:
    """What the halt did at the broker, on its row."""
    with engine.begin() as conn:
        conn.execute(
            update(trading_halts)
            .where(trading_halts.c.id == row_id)
            .values(details=json.dumps(details, default=str, sort_keys=True))
        )


def snapshot(engine: Engine, day: date, broker: str, account: str, strategy: str) -> Row | None:
    query = select(equity_snapshots).where(
        equity_snapshots.c.snapshot_date == day, _mine(equity_snapshots, broker, account, strategy)
    )
    with engine.connect() as conn:
        return conn.execute(query).mappings().first()


def first_snapshot(engine: Engine, broker: str, account: str, strategy: str) -> Row | None:
    query = (
        select(equity_snapshots)
        .where(_mine(equity_snapshots, broker, account, strategy))
        .order_by(equity_snapshots.c.snapshot_date)
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).mappings().first()


def previous_snapshot(
    engine: Engine, day: date, broker: str, account: str, strategy: str
) -> Row | None:
    query = (
        select(equity_snapshots)
        .where(
            equity_snapshots.c.snapshot_date < day,
            _mine(equity_snapshots, broker, account, strategy),
        )
        .order_by(equity_snapshots.c.snapshot_date.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).mappings().first()


def keep_snapshot(engine: Engine, row: dict[str, Any]) -> bool:
    """Insert the day's snapshot unless one exists: history is never rewritten."""
    row = {**row, "positions": json.dumps(row["positions"], sort_keys=True)}
    with engine.begin() as conn:
        return (
            insert_new(
                conn,
                equity_snapshots,
                [row],
                keys=["snapshot_date", "broker", "account", "strategy"],
            )
            > 0
        )
