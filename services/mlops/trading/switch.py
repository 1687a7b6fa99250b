"""The kill switch: `mlops trading halt` / `resume`, a row each in ``trading_halts``.

``halt`` records who halted and why first (so a trade run starting meanwhile is halted),
then reconciles with the broker (this system's orders the book lacks are adopted) and
cancels this system's open orders there; ``--flatten`` also closes this system's
positions with market sell orders (client order ids ``...-close-...``, which later halts
never cancel). What it did is kept on the row (``details``) and printed.

``mlops trade`` checks the switch before deciding or sending anything, and again before
each order; a halted run cancels this system's open orders too, so the setting
``TRADING_HALTED=true`` (a cluster-wide stop through the ConfigMap) and a halt from the
dashboard (which holds no broker credentials) take effect at the broker with the next
trade run. ``resume`` lifts the database flag and says which halt it ends.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from mlops import alerts
from mlops.context import Context
from mlops.db.schema import datasets
from mlops.errors import BrokerError, ConfigError, MlopsError, classify
from mlops.runs import utcnow
from mlops.trading import book, execution
from mlops.trading.broker import Broker
from mlops.trading.brokers import make_broker
from mlops.trading.lifecycle import (
    CLOSE,
    OrderState,
    client_order_id,
    is_closing_id,
    is_terminal,
)
from mlops.trading.reconcile import reconcile

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")


def set_halted(
    ctx: Context,
    halted: bool,
    reason: str = "",
    *,
    actor: str = "",
    at_broker: bool = True,
    flatten: bool = False,
) -> dict[str, Any]:
    """Halt or resume trading; the state in force afterwards and what was done.

    ``at_broker=False`` (the dashboard, without broker credentials) only records the halt:
    the next trade run cancels the orders.
    """
    reason = reason.strip()
    if not halted:
        state = _resume(ctx, reason, actor)
        alerts.send(ctx.settings, "trading resumed", f"{state['message']} (by {actor or '?'})")
        return state
    row_id = _write_switch(ctx, True, reason, actor)
    log.warning("Trading halted by %s%s.", actor or "?", f": {reason}" if reason else "")
    state = status(ctx)
    who = f"by {actor or '?'}{f': {reason}' if reason else ''}"
    if not at_broker:
        state["message"] = (
            "Trading is halted; this system's open orders at the broker are canceled by the "
            "next `mlops trade` run (or at once by `mlops trading halt`)."
        )
        alerts.send(ctx.settings, "trading halted", f"{state['message']} ({who})")
        return state
    try:
        done = stop_the_book(
            ctx, f"canceled by the kill switch ({actor}: {reason or '-'})", flatten
        )
    except MlopsError as exc:
        error = BrokerError(
            f"Trading is halted in the database, but the broker could not be reached to "
            f"cancel this system's orders ({exc}); the next `mlops trade` run, halted, "
            "cancels them"
        )
        alerts.send(ctx.settings, "trading halted", f"{error} ({who})")
        raise error from None
    book.halt_details(ctx.engine, row_id, done)
    state.update(done)
    alerts.send(ctx.settings, "trading halted", f"{done['message']} ({who})")
    return state


def _write_switch(ctx: Context, halted: bool, reason: str, actor: str) -> int:
    """The kill switch's new row; a role that may only read it (trading's) is told whose
    it is."""
    try:
        return book.set_halt(ctx.engine, halted, reason, actor)
    except Exception as exc:
        error = classify(exc)
        if isinstance(error, ConfigError) and "permission denied" in str(error).lower():
            verb = "halt" if halted else "resume"
            raise ConfigError(
                f"This command's database role may not {verb} trading (it only reads the "
                "kill switch, trading_halts): in the cluster use the dashboard, or run "
                f"`mlops trading {verb}{' --record-only' if halted else ''}` in its pod "
                "(kubectl -n mlops exec deploy/mlops-dashboard -- ...), whose role writes it."
            ) from None
        raise


def stop_the_book(ctx: Context, why: str, flatten: bool = False) -> dict[str, Any]:
    """Reconcile, cancel this system's open orders, and with ``flatten`` close its
    positions; what was done, with a sentence (``message``)."""
    broker = make_broker(ctx.settings, ctx.engine)
    account = broker.account_id()
    checked = reconcile(ctx.engine, broker, account, ctx.settings)
    canceled = execution.cancel_open(ctx.engine, broker, account, why)
    done: dict[str, Any] = {
        "broker": broker.name,
        "account": account,
        "orders_canceled": canceled.canceled,
        "orders_cancel_pending": canceled.pending,
        "orders_ended_before_cancel": canceled.ended,
        "adopted": checked.adopted,
        "differences": [d.sentence for d in checked.differences],
    }
    parts = [f"{len(canceled.canceled)} open orders of this system canceled on {broker.name}"]
    if canceled.pending:
        parts.append(f"{len(canceled.pending)} cancels not confirmed yet (the next run syncs)")
    if flatten:
        closing, left = _flatten(ctx, broker, account)
        done["closing_orders"], done["positions_left_alone"] = closing, left
        parts.append(f"{len(closing)} positions being closed with market orders")
        if left:
            parts.append(f"not this system's, left alone: {', '.join(left)}")
    done["message"] = "Trading is halted: " + "; ".join(parts) + "."
    log.warning("%s", done["message"])
    return done


def _flatten(ctx: Context, broker: Broker, account: str) -> tuple[list[str], list[str]]:
    """A market sell for each position this system holds (all of them with
    ``TRADE_MANAGE_ALL_POSITIONS``), less what its closing orders still have open."""
    engine = ctx.engine
    held = broker.account().positions
    owned = book.owned_positions(engine, broker.name, account)
    closing = _still_closing(engine, broker.name, account)
    day = _today(engine, broker)
    rows: list[dict[str, Any]] = []
    left: list[str] = []
    for symbol, quantity in sorted(held.items()):
        mine = quantity if ctx.settings.trade_manage_all_positions else owned.get(symbol, 0.0)
        if mine < quantity - 1e-9:
            left.append(f"{quantity - mine:g} {symbol}")
        to_sell = min(mine, quantity) - closing.get(symbol, 0.0)
        if to_sell <= 1e-9:
            continue
        rows.append(
            {
                "client_order_id": client_order_id(broker.name, account, day, symbol, CLOSE),
                "decision_date": day,
                "symbol": symbol,
                "side": "sell",
                "quantity": float(to_sell),
                "broker": broker.name,
                "account": account,
                "status": OrderState.PLANNED,
                "attempts": 0,
                "submitted_at": utcnow(),
            }
        )
    book.record(engine, [], rows)
    recorded = [book.order(engine, r["client_order_id"]) for r in rows]
    execution.send(engine, broker, [r for r in recorded if r], stop_when_halted=False)
    return [r["client_order_id"] for r in rows], left


def _still_closing(engine: Engine, broker: str, account: str) -> dict[str, float]:
    """Per symbol, what the kill switch's open closing orders have yet to sell."""
    remaining: dict[str, float] = {}
    for row in book.account_orders(engine, broker, account):
        if is_closing_id(row["client_order_id"]) and not is_terminal(row["status"]):
            left = float(row["quantity"]) - float(row["filled_quantity"] or 0.0)
            remaining[row["symbol"]] = remaining.get(row["symbol"], 0.0) + left
    return remaining


def _today(engine: Engine, broker: Broker) -> date:
    """The closing orders' day: the broker's date in New York, or (the paper broker, whose
    "now" is the replayed day) the newest dataset's day, so its next run fills them."""
    clock = broker.clock()
    if clock is not None:
        return clock.timestamp.astimezone(NEW_YORK).date()
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(datasets.c.as_of))).scalar()
    return newest if newest is not None else utcnow().astimezone(NEW_YORK).date()


def _resume(ctx: Context, reason: str, actor: str) -> dict[str, Any]:
    previous = book.latest_halt(ctx.engine)
    if previous is None or not previous["halted"]:
        state = status(ctx)
        state["message"] = "Trading was not halted by `mlops trading halt`: nothing to resume" + (
            " (TRADING_HALTED=true still halts it)." if ctx.settings.trading_halted else "."
        )
        return state
    _write_switch(ctx, False, reason, actor)
    details = json.loads(previous["details"]) if previous["details"] else {}
    resumed = {
        "halted_at": previous["created_at"],
        "halted_by": previous["actor"],
        "reason": previous["reason"],
        "orders_canceled": len(details.get("orders_canceled", [])),
        "closing_orders": len(details.get("closing_orders", [])),
    }
    who = f" by {previous['actor']}" if previous["actor"] else ""
    why = f" ({previous['reason']})" if previous["reason"] else ""
    message = (
        f"Trading resumed: the halt of {previous['created_at']:%Y-%m-%d %H:%M}{who}{why} is "
        "lifted; the orders it canceled stay canceled (a day already decided is not decided "
        "again), and the next `mlops trade` decides and sends orders"
    )
    if ctx.settings.trading_halted:
        message += ", but TRADING_HALTED=true still halts trading"
    log.info("%s (resumed by %s%s).", message, actor or "?", f": {reason}" if reason else "")
    state = status(ctx)
    state.update(resumed=resumed, message=message + ".")
    return state


def status(ctx: Context) -> dict[str, Any]:
    latest = book.latest_halt(ctx.engine)
    halted = bool(latest and latest["halted"])
    return {
        "halted": halted or ctx.settings.trading_halted,
        "database_flag": halted,
        "reason": str(latest["reason"]) if halted and latest else "",
        "by": str(latest["actor"]) if halted and latest else "",
        "setting_TRADING_HALTED": ctx.settings.trading_halted,
    }
