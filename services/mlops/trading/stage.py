"""``mlops trade``: settle earlier orders, decide with the trading rule, place orders.

In order: the exchange calendar (a day without a session is closed: nothing happens);
reconciliation with the broker (:mod:`mlops.trading.reconcile`: this system's orders the
book lacks are adopted; a symbol whose position or open orders the book cannot explain is
not traded, or with ``RECONCILE_STRICT=true`` the run stops); the broker's clock (with a
broker that has one: predictions that are not for the latest completed session are stale
and send nothing); sync every order the broker has that is not final; the kill switch
(a halted run decides nothing and cancels this system's open orders); the rule
(``TRADE_RULE``, ``TRADE_SELL``, see :mod:`mlops.trading.strategy`) and the risk limits
(once per day and broker account); placing the day's planned orders (see
:mod:`mlops.trading.lifecycle`); the day's equity snapshot, kept once and never
rewritten. When no forecast of the day reaches ``TRADE_THRESHOLD`` the stage says so (a
warning, and ``threshold_not_reached`` in the result, with the largest expected change):
nothing can be bought that day.
A direction classifier as the trading model is traded on its probability of a rise
against ``TRADE_PROBABILITY_THRESHOLD`` (:mod:`mlops.trading.strategy`), said the same way.

One strategy per run (:mod:`mlops.contracts.strategies`; without a strategies file, the
default one, with the settings as they are): its model, rule, thresholds, risk limits and
broker account are its settings', and its decisions, orders, snapshots and kill switch are
its own, so two strategies trade the same day, also at the same time.

Reruns are safe: decisions are unique per (day, symbol, broker, account, strategy) and
orders carry a client order id unique to the strategy's broker account, so the same day
twice places nothing twice. When an order the strategy decided could not be placed
(refused, or not confirmed after the retries) the stage says so per order and ends with
exit code 12 (:class:`~mlops.trading.broker.OrdersNotPlacedError`), after recording
everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import date

import pandas as pd
from sqlalchemy import Engine, select

from mlops import market_calendar
from mlops.context import Context
from mlops.contracts import datasets
from mlops.contracts.columns import PROBABILITY
from mlops.contracts.predictions import CHAMPION_ROLE
from mlops.contracts.strategies import DEFAULT_STRATEGY, Strategy, default_strategy
from mlops.db.schema import predictions
from mlops.errors import DataError
from mlops.runs import utcnow
from mlops.settings import Settings
from mlops.trading import book, execution, order_types, strategy
from mlops.trading.broker import (
    Account,
    Broker,
    OrdersNotPlacedError,
    OrderUpdate,
)
from mlops.trading.brokers import make_broker
from mlops.trading.lifecycle import NOT_PLACED, OrderState, client_order_id
from mlops.trading.reconcile import Reconciliation, ReconciliationError, reconcile
from mlops.trading.risk import Portfolio, RiskLimits, apply_limits

log = logging.getLogger(__name__)
STRICT_STOP = "RECONCILE_STRICT=true stops the run: nothing was decided or sent."


@dataclass
class OrderOutcome:
    """One of the day's orders as it stands after the run."""

    client_order_id: str
    symbol: str
    side: str
    quantity: float
    status: str
    broker_status: str | None = None
    filled_quantity: float | None = None
    fill_price: float | None = None
    error: str | None = None
    limit_price: float | None = None  # a limit order's limit; None: a market order


@dataclass
class TradeResult:
    day: date
    broker: str
    model_version: str | None
    decisions: dict[str, str]
    account: str = ""
    strategy: str = DEFAULT_STRATEGY
    # Sent by this run and taken by the broker; the day's orders the broker refused or
    # that could not be placed; those not confirmed yet (the next run retries them).
    orders_placed: list[str] = field(default_factory=list)
    orders_rejected: list[str] = field(default_factory=list)
    orders_pending: list[str] = field(default_factory=list)
    orders: list[OrderOutcome] = field(default_factory=list)
    orders_settled: int = 0
    cash: float | None = None
    equity: float | None = None
    benchmark_equity: float | None = None
    snapshot: str = ""  # new | kept (the day had one) | skipped (why)
    rerun: bool = False
    market_closed: str | None = None
    halted: str | None = None
    # The day's largest expected change of any forecast (a classifier's: the largest
    # probability of a rise, in largest_probability), and, when it is below the threshold
    # (nothing can be bought), the sentence that says so.
    largest_expected_change: float | None = None
    threshold_not_reached: str | None = None
    largest_probability: float | None = None
    # A missed day (mlops daily --catch-up) whose predictions the broker's clock calls
    # stale: not traded, and why.
    not_traded: str | None = None
    # The book against the broker before deciding: adopted orders, the differences, and
    # the symbols this run did not trade because of them.
    reconciliation: Reconciliation | None = None
    # Halted: this system's open orders the run canceled at the broker.
    orders_canceled: list[str] = field(default_factory=list)


def latest_signals(
    engine: Engine, day: date, model_name: str
) -> tuple[list[strategy.Signal], str | None]:
    """The predictions ``model_name``'s champion made on ``day`` (never a challenger's).

    Batch inference marks the version that held the champion alias when it scored (and
    re-marks them after a promotion); should a day still hold two champion batches, the
    newest is taken.
    """
    champion_rows = (
        predictions.c.prediction_date == day,
        predictions.c.model_name == model_name,
        predictions.c.role == CHAMPION_ROLE,
    )
    with engine.connect() as conn:
        newest = conn.execute(
            select(predictions.c.model_version)
            .where(*champion_rows)
            .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
            .limit(1)
        ).scalar()
        if newest is None:
            return [], None
        rows = conn.execute(
            select(
                predictions.c.symbol,
                predictions.c.predicted_close,
                predictions.c.last_close,
                predictions.c.score_kind,
                predictions.c.score,
            ).where(*champion_rows, predictions.c.model_version == newest)
        ).all()
    return [_signal(*row) for row in rows], newest


def _signal(
    symbol: str, close: float | None, last: float, kind: str, score: float | None
) -> strategy.Signal:
    """A prediction row as a signal: a classifier's probability, a regressor's close."""
    if kind == PROBABILITY:
        return strategy.Signal(symbol, None, float(last), probability=float(score or 0.0))
    return strategy.Signal(symbol, float(close or 0.0), float(last))


def threshold_for(settings: Settings, signals: list[strategy.Signal]) -> float:
    """The threshold of the signals' kind: TRADE_PROBABILITY_THRESHOLD for a classifier's
    probabilities, TRADE_THRESHOLD for a regressor's expected changes.
    """
    if strategy.is_probability(signals):
        return settings.trade_probability_threshold
    return settings.trade_threshold


def run(
    ctx: Context,
    as_of: date | None = None,
    *,
    allow_older_dataset: bool = False,
    missed_day: bool = False,
    strategy: Strategy | None = None,
) -> TradeResult:
    """Trade the day ``as_of`` (default: the latest in the data) with ``strategy`` (default:
    the settings as they are); see the module. Never from an older dataset than the day
    asked for, unless ``allow_older_dataset``. A ``missed_day`` (a catch-up's past session)
    the broker's clock calls stale is not traded: the result says why, and the run succeeds
    (its orders still waiting to be sent are an error as on any day).
    """
    chosen = strategy or default_strategy(ctx.settings)
    ctx = replace(ctx, settings=chosen.settings)
    if as_of is not None and (closed := market_calendar.closed_day(as_of, "nothing to trade")):
        name = ctx.settings.broker
        return TradeResult(as_of, name, None, {}, strategy=chosen.name, market_closed=closed)
    version = datasets.version_for_day(ctx.engine, as_of, allow_older=allow_older_dataset)
    _, bars = datasets.load(ctx.store, version)
    day = bars["date"].max().date()
    broker = make_broker(ctx.settings, ctx.engine, chosen.name)
    account_id = broker.account_id()
    checked = reconcile(ctx.engine, broker, account_id, ctx.settings)
    already = book.decided(ctx.engine, day, broker.name, account_id, broker.strategy)
    stale = _refuse_stale(ctx.engine, broker, account_id, day, bool(already), missed_day)
    if stale and missed_day and not already:
        return _missed(broker, account_id, day, stale, checked)
    settled = broker.sync(bars, day) + _close_old_planned(ctx.engine, broker, account_id, day)
    halted = _halted(ctx, broker.strategy)
    canceled = _stop_if_halted(ctx, broker, account_id, halted)
    if checked.not_traded and ctx.settings.reconcile_strict and not halted:
        raise ReconciliationError(f"{checked.sentence()}; {STRICT_STOP}", result=checked)
    signals, model_version = latest_signals(ctx.engine, day, ctx.settings.model_name)
    if not already and not halted:
        _decide(ctx, broker, account_id, day, bars, signals, model_version, checked)
    placed = [] if halted or stale else _submit_planned(ctx.engine, broker, account_id, day)
    result = TradeResult(
        day=day,
        broker=broker.name,
        account=account_id,
        strategy=broker.strategy,
        model_version=model_version,
        decisions=book.decided(ctx.engine, day, broker.name, account_id, broker.strategy),
        orders_placed=placed,
        orders_settled=settled,
        rerun=bool(already),
        halted=halted,
        reconciliation=checked,
        orders_canceled=canceled,
    )
    _threshold_reach(result, signals, threshold_for(ctx.settings, signals))
    _outcomes(ctx.engine, result)
    _snapshot(ctx, broker, result, bars, stale)
    if result.orders_rejected or result.orders_pending:
        raise OrdersNotPlacedError(_not_placed_sentence(result), result=result)
    return result


def _threshold_reach(result: TradeResult, signals: list[strategy.Signal], threshold: float) -> None:
    """The day's largest expected change (a classifier's: probability of a rise); a warning
    when it is below the threshold.
    """
    top = strategy.strongest(signals)
    if top is None:
        return
    if strategy.is_probability(signals):
        result.largest_probability = top.score
        setting, level, largest = (
            "TRADE_PROBABILITY_THRESHOLD",
            f"{threshold:.3f}",
            f"probability of a rise is {top.score:.3f}",
        )
    else:
        result.largest_expected_change = top.score
        setting, level, largest = (
            "TRADE_THRESHOLD",
            f"+{threshold:.3%}",
            f"expected change is {top.score:+.3%}",
        )
    if top.score < threshold:
        result.threshold_not_reached = (
            f"No forecast for {result.day} reaches {setting} {level}: the largest "
            f"{largest} ({top.symbol}), so nothing can be bought today"
        )
        log.warning("%s.", result.threshold_not_reached)


def _refuse_stale(
    engine: Engine, broker: Broker, account_id: str, day: date, decided: bool, missed: bool
) -> str | None:
    """Why the day is stale by the broker's clock (None: it is not); stale predictions
    that would decide or send an order are refused, unless the day is a catch-up's
    ``missed`` one not decided yet (it is then not traded at all)."""
    stale = _stale(broker, day)
    planned = [
        r
        for r in book.day_orders(engine, day, broker.name, account_id, broker.strategy)
        if r["status"] == OrderState.PLANNED
    ]
    if stale and (not decided or planned) and not (missed and not decided):
        raise DataError(f"{stale}: no order was sent.")
    return stale


def _missed(
    broker: Broker, account_id: str, day: date, stale: str, checked: Reconciliation
) -> TradeResult:
    """A catch-up's missed day that is stale by the broker's clock: not traded, saying so."""
    log.warning("%s: a missed day, not traded.", stale)
    return TradeResult(
        day=day,
        broker=broker.name,
        account=account_id,
        strategy=broker.strategy,
        model_version=None,
        decisions={},
        not_traded=f"{stale}: a missed day, not traded",
        reconciliation=checked,
    )


def _stale(broker: Broker, day: date) -> str | None:
    """Why predictions for ``day`` are stale by the broker's clock; None when they are not."""
    clock = broker.clock()
    if clock is None:  # the paper broker: the replayed day is "now"
        return None
    latest = market_calendar.latest_completed_session(clock.timestamp)
    if latest == day:
        return None
    return (
        f"The predictions are for {day}, but by {broker.name}'s clock "
        f"({clock.timestamp:%Y-%m-%d %H:%M %Z}) the latest completed session is {latest}; "
        "orders from stale predictions would be sized on old closes"
    )


def _halted(ctx: Context, strategy: str) -> str | None:
    if ctx.settings.trading_halted:
        why = "TRADING_HALTED is true"
    else:
        halted, reason = book.halt_state(ctx.engine, strategy)
        if not halted:
            return None
        why = f"`mlops trading halt`: {reason}" if reason else "`mlops trading halt`"
    log.warning("Trading is halted (%s): no decision and no order.", why)
    return why


def _stop_if_halted(ctx: Context, broker: Broker, account_id: str, halted: str | None) -> list[str]:
    """A halted run cancels this system's open orders (a halt from the dashboard or by
    ``TRADING_HALTED`` reaches the broker this way); the ids canceled."""
    if halted is None:
        return []
    done = execution.cancel_open(
        ctx.engine, broker, account_id, f"canceled by the kill switch ({halted})"
    )
    if done.canceled or done.pending:
        log.warning(
            "Halted: %d open orders of this system canceled on %s%s.",
            len(done.canceled),
            broker.name,
            f", {len(done.pending)} cancels not confirmed yet" if done.pending else "",
        )
    return done.canceled + done.pending


def _decide(
    ctx: Context,
    broker: Broker,
    account_id: str,
    day: date,
    bars: pd.DataFrame,
    signals: list[strategy.Signal],
    model_version: str | None,
    checked: Reconciliation,
) -> None:
    """The strategy on the positions it opened, then the risk limits; recorded at once.

    Symbols reconciliation left out are neither bought nor sold: a "hold" with the reason.
    """
    settings = ctx.settings
    if not signals:
        raise DataError(
            f"No predictions for {day} from the champion of {settings.model_name}: "
            "run `mlops batch-infer` first."
        )
    account = broker.account(day)
    owned = book.owned_positions(ctx.engine, broker.name, account_id, broker.strategy)
    if settings.trade_manage_all_positions:
        positions = dict(account.positions)
    else:
        positions = {s: min(q, owned.get(s, 0.0)) for s, q in account.positions.items()}
        positions = {s: q for s, q in positions.items() if q > 0}
    blocked = set(checked.not_traded)
    decisions = strategy.decide(
        [s for s in signals if s.symbol not in blocked],
        {s: q for s, q in positions.items() if s not in blocked},
        account.cash,
        threshold=threshold_for(settings, signals),
        max_position_value=settings.trade_max_position_value,
        rule=settings.trade_rule,
        sell=settings.trade_sell,
    )
    prices = {s.symbol: s.last_close for s in signals}
    closes = last_closes(bars, day)
    held = _held_value(account, closes)
    previous = book.previous_snapshot(ctx.engine, day, broker.name, account_id, broker.strategy)
    portfolio = Portfolio(
        cash=account.cash,
        equity=account.equity if account.equity is not None else account.cash + held,
        held_value=held,
        open_positions=len(account.positions),
        previous_equity=None if previous is None else float(previous["equity"]),
    )
    limited = apply_limits(decisions, prices, portfolio, RiskLimits.from_settings(settings))
    _say_risk_cuts(decisions, limited)
    limited += _not_traded(signals, account.positions, checked)
    _record(ctx.engine, day, broker, account_id, model_version, signals, limited, settings)


def _not_traded(
    signals: list[strategy.Signal], held: dict[str, float], checked: Reconciliation
) -> list[strategy.TradeDecision]:
    """A "hold" for each symbol reconciliation left out that has a signal or a position."""
    scores = {s.symbol: s.score for s in signals}
    why = {d.symbol: d.finding for d in checked.differences if d.blocks}
    return [
        strategy.TradeDecision(
            symbol, strategy.Action.HOLD, 0.0, scores.get(symbol), f"not traded: {why[symbol]}"
        )
        for symbol in checked.not_traded
        if symbol in scores or symbol in held
    ]


def _say_risk_cuts(
    decided: list[strategy.TradeDecision], checked: list[strategy.TradeDecision]
) -> None:
    """A warning for every buy the risk limits cut or stopped (the reason is recorded in
    ``trade_decisions`` too): an order smaller than the strategy's, or none, never passes
    in silence.
    """
    for before, after in zip(decided, checked, strict=True):
        if before.action != strategy.Action.BUY or after.quantity >= before.quantity:
            continue
        why = after.reason[len(before.reason) :].lstrip("; ")
        if after.action == strategy.Action.BUY:
            log.warning(
                "BUY %s cut from %g to %g shares by the risk limits (%s).",
                before.symbol,
                before.quantity,
                after.quantity,
                why,
            )
        else:
            log.warning(
                "BUY %g %s stopped by the risk limits (%s).", before.quantity, before.symbol, why
            )


def _held_value(account: Account, closes: dict[str, float]) -> float:
    if account.position_values:
        return float(sum(account.position_values.values()))
    return float(sum(q * closes.get(s, 0.0) for s, q in account.positions.items()))


def _record(
    engine: Engine,
    day: date,
    broker: Broker,
    account: str,
    model_version: str | None,
    signals: list[strategy.Signal],
    decisions: list[strategy.TradeDecision],
    settings: Settings,
) -> None:
    by_symbol = {s.symbol: s for s in signals}
    now = utcnow()
    decision_rows, order_rows = [], []
    for d in decisions:
        signal = by_symbol.get(d.symbol)
        decision_rows.append(
            {
                "decision_date": day,
                "symbol": d.symbol,
                "action": d.action,
                "quantity": d.quantity,
                "expected_change": d.expected_change,
                "predicted_close": signal.predicted_close if signal else None,
                "last_close": signal.last_close if signal else None,
                "model_version": model_version,
                "broker": broker.name,
                "account": account,
                "strategy": broker.strategy,
                "reason": d.reason,
                "created_at": now,
            }
        )
        if d.action in (strategy.Action.BUY, strategy.Action.SELL):
            order_rows.append(
                {
                    "client_order_id": client_order_id(
                        broker.name, account, day, d.symbol, d.action, strategy=broker.strategy
                    ),
                    "decision_date": day,
                    "symbol": d.symbol,
                    "side": d.action,
                    "quantity": d.quantity,
                    # TRADE_ORDER_TYPE=limit: the limit, from the decision's close.
                    "limit_price": order_types.limit_for(
                        settings, d.action, signal.last_close if signal else None
                    ),
                    "broker": broker.name,
                    "account": account,
                    "strategy": broker.strategy,
                    "status": OrderState.PLANNED,
                    "attempts": 0,
                    "submitted_at": now,
                }
            )
    book.record(engine, decision_rows, order_rows)


def _submit_planned(engine: Engine, broker: Broker, account_id: str, day: date) -> list[str]:
    """Send the day's orders the broker has not confirmed; the ids it took now."""
    planned = book.day_orders(engine, day, broker.name, account_id, broker.strategy)
    return execution.send(engine, broker, planned)


def _close_old_planned(engine: Engine, broker: Broker, account_id: str, day: date) -> int:
    """Earlier days' orders never confirmed: what the broker has, else ``unplaced``."""
    closed = 0
    for row in book.planned_before(engine, day, broker.name, account_id, broker.strategy):
        found = broker.lookup(row["client_order_id"]) if row["attempts"] > 0 else None
        if found is None:
            found = OrderUpdate(
                status=OrderState.UNPLACED,
                error=f"not sent before its session passed (decided {row['decision_date']})",
            )
        closed += book.apply(engine, row, found)
    return closed


def _outcomes(engine: Engine, result: TradeResult) -> None:
    """The day's orders as they stand, one log line each, sorted into the result's lists."""
    for row in book.day_orders(engine, result.day, result.broker, result.account, result.strategy):
        outcome = OrderOutcome(
            client_order_id=row["client_order_id"],
            symbol=row["symbol"],
            side=row["side"],
            quantity=float(row["quantity"]),
            status=row["status"],
            broker_status=row["broker_status"],
            filled_quantity=row["filled_quantity"],
            fill_price=row["fill_price"],
            error=row["error"],
            limit_price=row["limit_price"],
        )
        result.orders.append(outcome)
        what = f"{outcome.side.upper()} {outcome.quantity:g} {outcome.symbol} ({result.day})"
        if outcome.status in NOT_PLACED:
            result.orders_rejected.append(outcome.client_order_id)
            log.error("%s was NOT placed on %s: %s.", what, result.broker, outcome.error)
        elif outcome.status == OrderState.PLANNED:
            result.orders_pending.append(outcome.client_order_id)
            log.error("%s is not confirmed by %s: %s.", what, result.broker, outcome.error)
        else:
            fill = ""
            if outcome.filled_quantity:
                fill = f", {outcome.filled_quantity:g} filled at {outcome.fill_price:.4f}"
            log.info("%s: %s at %s%s.", what, outcome.status, result.broker, fill)


def _not_placed_sentence(result: TradeResult) -> str:
    not_placed = {*result.orders_rejected, *result.orders_pending}
    bad = [o for o in result.orders if o.client_order_id in not_placed]
    parts = "; ".join(f"{o.side} {o.quantity:g} {o.symbol}: {o.error or o.status}" for o in bad)
    return (
        f"{len(bad)} of {len(result.orders)} orders decided for {result.day} on "
        f"{result.broker} were not placed ({parts}); rejected ones are recorded as such, "
        "unconfirmed ones are retried by the next run"
    )


def _snapshot(
    ctx: Context, broker: Broker, result: TradeResult, bars: pd.DataFrame, stale: str | None
) -> None:
    """The day's equity against buy-and-hold, kept once per (day, broker account, strategy)."""
    day, account_id, strategy = result.day, result.account, result.strategy
    kept = book.snapshot(ctx.engine, day, broker.name, account_id, strategy)
    if kept is None and stale:
        result.snapshot = "skipped: the broker's account is not as of this day"
        return
    if kept is None:
        account = broker.account(day)
        closes = last_closes(bars, day)
        held = _held_value(account, closes)
        equity = account.equity if account.equity is not None else account.cash + held
        first = book.first_snapshot(ctx.engine, broker.name, account_id, strategy)
        start, start_equity = day, equity
        if first is not None and first["snapshot_date"] < day:
            start, start_equity = first["snapshot_date"], float(first["equity"])
        row = {
            "snapshot_date": day,
            "broker": broker.name,
            "account": account_id,
            "strategy": strategy,
            "cash": float(account.cash),
            "positions_value": equity - float(account.cash),
            "equity": equity,
            "benchmark_equity": buy_and_hold(bars, start, day, start_equity),
            "positions": account.positions,
            "source": "broker" if account.equity is not None else "closes",
            "created_at": utcnow(),
        }
        book.keep_snapshot(ctx.engine, row)
        kept = book.snapshot(ctx.engine, day, broker.name, account_id, strategy)
        result.snapshot = "new"
    else:
        result.snapshot = "kept"
    assert kept is not None
    result.cash = round(float(kept["cash"]), 2)
    result.equity = round(float(kept["equity"]), 2)
    bench = kept["benchmark_equity"]
    result.benchmark_equity = None if bench is None else round(float(bench), 2)


def last_closes(bars: pd.DataFrame, day: date) -> dict[str, float]:
    """Each symbol's last known close on or before ``day`` (a delisted symbol keeps its last)."""
    known = bars[bars["date"] <= pd.Timestamp(day)].sort_values("date")
    return known.groupby("symbol")["close"].last().astype(float).to_dict()


def buy_and_hold(bars: pd.DataFrame, start: date, day: date, cash: float) -> float | None:
    """Value on ``day`` of ``cash`` split equally over the symbols trading on ``start``."""
    first = bars[bars["date"] == pd.Timestamp(start)]
    if first.empty:
        return None
    shares = {
        s: (cash / len(first)) / c for s, c in zip(first["symbol"], first["close"], strict=True)
    }
    closes = last_closes(bars, day)
    return float(sum(q * closes[s] for s, q in shares.items()))
