"""The kill switch: `mlops trading halt` / `resume`, a row each in ``trading_halts``.

``halt`` records who halted and why first (so a trade run starting meanwhile is halted),
then reconciles with the broker (this system's orders the book lacks are adopted) and
cancels this system's open orders there; ``--flatten`` also closes this system's
positions with market sell orders (client order ids ``...-close-...``, which later halts
never cancel). What it did is kept on the row (``details``) and printed.

Per strategy: ``--strategy NAME`` halts (or resumes) that strategy's book alone; without
it the row is for every strategy (``*``) and every strategy's book is stopped, each on its
own account. For a strategy, the newest row of its own or for every strategy is in force.

``mlops trade`` checks the switch before deciding or sending anything, and again before
each order; a halted run cancels this system's open orders too, so the setting
``TRADING_HALTED=true`` (a cluster-wide stop through the ConfigMap) and a halt from the
dashboard (which holds no broker credentials) take effect at the broker with the next
trade run. ``resume`` lifts the database flag and says which halt it ends.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from mlops import alerts
from mlops.context import Context
from mlops.contracts import strategies
from mlops.contracts.strategies import Strategy
from mlops.db.schema import ALL_STRATEGIES, DEFAULT_STRATEGY, datasets
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
    strategy: str | None = None,
) -> dict[str, Any]:
    """Halt or resume ``strategy`` (None: every strategy); the state in force afterwards
    and what was done.

    ``at_broker=False`` (the dashboard, without broker credentials) only records the halt:
    the next trade run cancels the orders.
    """
    reason = reason.strip()
    scope = ALL_STRATEGIES if strategy is None else strategy
    if strategy is not None:
        strategies.named(ctx.settings, strategy)  # an unknown name is refused, nothing written
    if not halted:
        state = _resume(ctx, reason, actor, scope)
        alerts.send(ctx.settings, "trading resumed", f"{state['message']} (by {actor or '?'})")
        return state
    row_id = _write_switch(ctx, True, reason, actor, scope)
    log.warning(
        "Trading halted%s by %s%s.",
        "" if strategy is None else f" for strategy {strategy}",
        actor or "?",
        f": {reason}" if reason else "",
    )
    state = status(ctx, strategy)
    who = f"by {actor or '?'}{f': {reason}' if reason else ''}"
    if not at_broker:
        state["message"] = (
            "Trading is halted; this system's open orders at the broker are canceled by the "
            "next `mlops trade` run (or at once by `mlops trading halt`)."
        )
        alerts.send(ctx.settings, "trading halted", f"{state['message']} ({who})")
        return state
    try:
        done = _stop_books(
            ctx, strategy, f"canceled by the kill switch ({actor}: {reason or '-'})", flatten
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


def _write_switch(ctx: Context, halted: bool, reason: str, actor: str, scope: str) -> int:
    """The kill switch's new row; a role that may only read it (trading's) is told whose
    it is."""
    try:
        return book.set_halt(ctx.engine, halted, reason, actor, strategy=scope)
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


def _stop_books(ctx: Context, strategy: str | None, why: str, flatten: bool) -> dict[str, Any]:
    """:func:`stop_the_book` of ``strategy`` (None: of each strategy in turn); one
    strategy's result as it is, several under ``strategies`` with one message."""
    books = strategies.select(ctx.settings, strategy)
    if len(books) == 1:
        return stop_the_book(ctx, books[0], why, flatten)
    each = {s.name: stop_the_book(ctx, s, why, flatten) for s in books}
    return {"strategies": each, "message": " ".join(d["message"] for d in each.values())}


def stop_the_book(
    ctx: Context, strategy: Strategy, why: str, flatten: bool = False
) -> dict[str, Any]:
    """Reconcile, cancel ``strategy``'s open orders, and with ``flatten`` close its
    positions; what was done, with a sentence (``message``)."""
    ctx = replace(ctx, settings=strategy.settings)
    broker = make_broker(ctx.settings, ctx.engine, strategy.name)
    account = broker.account_id()
    checked = reconcile(ctx.engine, broker, account, ctx.settings)
    canceled = execution.cancel_open(ctx.engine, broker, account, why)
    done: dict[str, Any] = {
        "strategy": strategy.name,
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
    whose = "" if strategy.name == DEFAULT_STRATEGY else f" of strategy {strategy.name}"
    done["message"] = f"Trading{whose} is halted: " + "; ".join(parts) + "."
    log.warning("%s", done["message"])
    return done


def _flatten(ctx: Context, broker: Broker, account: str) -> tuple[list[str], list[str]]:
    """A market sell for each position this system holds (all of them with
    ``TRADE_MANAGE_ALL_POSITIONS``), less what its closing orders still have open."""
    engine = ctx.engine
    held = broker.account().positions
    owned = book.owned_positions(engine, broker.name, account, broker.strategy)
    closing = _still_closing(engine, broker.name, account, broker.strategy)
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
                "client_order_id": client_order_id(
                    broker.name, account, day, symbol, CLOSE, strategy=broker.strategy
                ),
                "decision_date": day,
                "symbol": symbol,
                "side": "sell",
                "quantity": float(to_sell),
                "broker": broker.name,
                "account": account,
                "strategy": broker.strategy,
                "status": OrderState.PLANNED,
                "attempts": 0,
                "submitted_at": utcnow(),
            }
        )
    book.record(engine, [], rows)
    recorded = [book.order(engine, r["client_order_id"]) for r in rows]
    execution.send(engine, broker, [r for r in recorded if r], stop_when_halted=False)
    return [r["client_order_id"] for r in rows], left


def _still_closing(engine: Engine, broker: str, account: str, strategy: str) -> dict[str, float]:
    """Per symbol, what the kill switch's open closing orders have yet to sell."""
    remaining: dict[str, float] = {}
    for row in book.account_orders(engine, broker, account, strategy):
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


def _resume(ctx: Context, reason: str, actor: str, scope: str) -> dict[str, Any]:
    """Lift the halt in force for ``scope`` (a strategy, or every one: ``*``)."""
    strategy = None if scope == ALL_STRATEGIES else scope
    previous = _in_force(ctx, strategy)
    if previous is None:
        state = status(ctx, strategy)
        state["message"] = "Trading was not halted by `mlops trading halt`: nothing to resume" + (
            " (TRADING_HALTED=true still halts it)." if ctx.settings.trading_halted else "."
        )
        return state
    _write_switch(ctx, False, reason, actor, scope)
    details = json.loads(previous["details"]) if previous["details"] else {}
    books = list(details.get("strategies", {}).values()) or [details]
    resumed = {
        "halted_at": previous["created_at"],
        "halted_by": previous["actor"],
        "reason": previous["reason"],
        "orders_canceled": sum(len(b.get("orders_canceled", [])) for b in books),
        "closing_orders": sum(len(b.get("closing_orders", [])) for b in books),
    }
    who = f" by {previous['actor']}" if previous["actor"] else ""
    why = f" ({previous['reason']})" if previous["reason"] else ""
    whose = "" if strategy is None else f" of strategy {strategy}"
    message = (
        f"Trading{whose} resumed: the halt of {previous['created_at']:%Y-%m-%d %H:%M}{who}"
        f"{why} is lifted; the orders it canceled stay canceled (a day already decided is not "
        "decided again), and the next `mlops trade` decides and sends orders"
    )
    if ctx.settings.trading_halted:
        message += ", but TRADING_HALTED=true still halts trading"
    log.info("%s (resumed by %s%s).", message, actor or "?", f": {reason}" if reason else "")
    state = status(ctx, strategy)
    state.update(resumed=resumed, message=message + ".")
    return state


def _in_force(ctx: Context, strategy: str | None) -> book.Row | None:
    """The newest halt in force for ``strategy`` (None: for any strategy); None when none is."""
    rows = [book.latest_halt(ctx.engine, name) for name in _names(ctx, strategy)]
    halts = [r for r in rows if r is not None and r["halted"]]
    return max(halts, key=lambda r: r["id"]) if halts else None


def _names(ctx: Context, strategy: str | None) -> list[str]:
    """``strategy``, or every strategy of the file and every one the switch ever named."""
    if strategy is not None:
        return [strategy]
    known = {s.name for s in strategies.load(ctx.settings)} | book.halt_names(ctx.engine)
    return sorted(known)


def status(ctx: Context, strategy: str | None = None) -> dict[str, Any]:
    """Whether trading is halted (for ``strategy``, else for any strategy), by whom, why;
    with several strategies, whether each one is."""
    latest = _in_force(ctx, strategy)
    halted = latest is not None
    state: dict[str, Any] = {
        "halted": halted or ctx.settings.trading_halted,
        "database_flag": halted,
        "reason": str(latest["reason"]) if latest else "",
        "by": str(latest["actor"]) if latest else "",
        "setting_TRADING_HALTED": ctx.settings.trading_halted,
    }
    names = _names(ctx, strategy)
    if strategy is not None:
        state["strategy"] = strategy
    elif names != [DEFAULT_STRATEGY]:
        state["strategies"] = {n: _in_force(ctx, n) is not None for n in names}
    return state
