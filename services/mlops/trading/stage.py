"""``mlops trade``: settle earlier orders, decide with the threshold strategy, place orders.

Reruns are safe: decisions are unique per (day, symbol, broker) and orders carry a
deterministic client order id, so the same day twice places no second order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from sqlalchemy import Engine, func, select, update

from mlops.context import Context
from mlops.contracts import datasets
from mlops.db.schema import equity_snapshots, orders, predictions, trade_decisions
from mlops.db.upsert import insert_new, upsert
from mlops.errors import DataError
from mlops.runs import utcnow
from mlops.trading import strategy
from mlops.trading.broker import Account, Broker, OrderStatus, PendingOrder, Side
from mlops.trading.brokers import make_broker

log = logging.getLogger(__name__)


@dataclass
class TradeResult:
    day: date
    broker: str
    model_version: str | None
    decisions: dict[str, str]
    orders_placed: list[str] = field(default_factory=list)
    orders_settled: int = 0
    cash: float = 0.0
    equity: float = 0.0
    benchmark_equity: float | None = None
    rerun: bool = False


def client_order_id(day: date, symbol: str, side: str) -> str:
    """The same decision always gets the same id, so a broker refuses a duplicate."""
    digest = hashlib.sha256(f"{day.isoformat()}|{symbol}|{side}".encode()).hexdigest()[:12]
    return f"mlops-{day:%Y%m%d}-{symbol}-{side}-{digest}"[:48]


def latest_signals(engine: Engine, day: date) -> tuple[list[strategy.Signal], str | None]:
    """The newest model version's predictions made on ``day``."""
    with engine.connect() as conn:
        newest = conn.execute(
            select(predictions.c.model_version)
            .where(predictions.c.prediction_date == day)
            .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
            .limit(1)
        ).scalar()
        if newest is None:
            return [], None
        rows = conn.execute(
            select(
                predictions.c.symbol, predictions.c.predicted_close, predictions.c.last_close
            ).where(predictions.c.prediction_date == day, predictions.c.model_version == newest)
        ).all()
    return [strategy.Signal(s, float(p), float(c)) for s, p, c in rows], newest


def run(ctx: Context, as_of: date | None = None) -> TradeResult:
    settings = ctx.settings
    version = datasets.latest_version(ctx.engine, as_of)
    _, bars = datasets.load(ctx.store, version)
    day = bars["date"].max().date()
    broker = make_broker(settings, ctx.engine)
    settled = broker.sync(bars, day)

    with ctx.engine.connect() as conn:
        already = conn.execute(
            select(func.count())
            .select_from(trade_decisions)
            .where(trade_decisions.c.decision_date == day, trade_decisions.c.broker == broker.name)
        ).scalar_one()
    signals, model_version = latest_signals(ctx.engine, day)
    if not already:
        if not signals:
            raise DataError(f"No predictions for {day}: run `mlops batch-infer` first.")
        account = broker.account()
        decisions = strategy.decide(
            signals,
            account.positions,
            account.cash,
            threshold=settings.trade_threshold,
            max_position_value=settings.trade_max_position_value,
        )
        _record(ctx.engine, day, broker.name, model_version, signals, decisions)
    placed = _submit_new(ctx.engine, broker, day)

    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(trade_decisions.c.symbol, trade_decisions.c.action).where(
                trade_decisions.c.decision_date == day, trade_decisions.c.broker == broker.name
            )
        ).all()
    account = broker.account()
    equity, benchmark = _snapshot(ctx, broker.name, day, bars, account)
    for symbol, action in rows:
        if action != strategy.Action.HOLD:
            log.info("%s %s on %s", action.upper(), symbol, day)
    return TradeResult(
        day=day,
        broker=broker.name,
        model_version=model_version,
        decisions={s: a for s, a in rows},
        orders_placed=placed,
        orders_settled=settled,
        cash=round(account.cash, 2),
        equity=round(equity, 2),
        benchmark_equity=None if benchmark is None else round(benchmark, 2),
        rerun=bool(already),
    )


def _record(
    engine: Engine,
    day: date,
    broker: str,
    model_version: str | None,
    signals: list[strategy.Signal],
    decisions: list[strategy.TradeDecision],
) -> None:
    """Decisions and their orders in one transaction: all of them or none."""
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
                "broker": broker,
                "reason": d.reason,
                "created_at": now,
            }
        )
        if d.action in (strategy.Action.BUY, strategy.Action.SELL):
            order_rows.append(
                {
                    "client_order_id": client_order_id(day, d.symbol, d.action),
                    "decision_date": day,
                    "symbol": d.symbol,
                    "side": d.action,
                    "quantity": d.quantity,
                    "broker": broker,
                    "status": OrderStatus.NEW,
                    "submitted_at": now,
                }
            )
    with engine.begin() as conn:
        insert_new(conn, trade_decisions, decision_rows, keys=["decision_date", "symbol", "broker"])
        insert_new(conn, orders, order_rows, keys=["client_order_id"])


def _submit_new(engine: Engine, broker: Broker, day: date) -> list[str]:
    """Send the day's orders not sent yet (all of them, or those a crash left behind)."""
    with engine.connect() as conn:
        pending = list(
            conn.execute(
                select(orders).where(
                    orders.c.broker == broker.name,
                    orders.c.decision_date == day,
                    orders.c.status == OrderStatus.NEW,
                )
            ).mappings()
        )
    placed = []
    for row in pending:
        result = broker.submit(
            PendingOrder(row["client_order_id"], row["symbol"], Side(row["side"]), row["quantity"])
        )
        with engine.begin() as conn:
            conn.execute(
                update(orders)
                .where(orders.c.id == row["id"])
                .values(
                    status=result.status,
                    broker_order_id=result.broker_order_id,
                    error=result.error,
                    submitted_at=utcnow(),
                )
            )
        placed.append(row["client_order_id"])
    return placed


def _snapshot(
    ctx: Context, broker: str, day: date, bars: pd.DataFrame, account: Account
) -> tuple[float, float | None]:
    """Equity at the day's closes, against buy-and-hold of the same symbols."""
    closes = last_closes(bars, day)
    positions = account.positions
    cash = float(account.cash)
    value = sum(q * closes.get(s, 0.0) for s, q in positions.items())
    with ctx.engine.connect() as conn:
        start = conn.execute(
            select(func.min(equity_snapshots.c.snapshot_date)).where(
                equity_snapshots.c.broker == broker
            )
        ).scalar()
    start_day = min(start, day) if start else day
    benchmark = buy_and_hold(bars, start_day, day, ctx.settings.paper_initial_cash)
    with ctx.engine.begin() as conn:
        upsert(
            conn,
            equity_snapshots,
            [
                {
                    "snapshot_date": day,
                    "broker": broker,
                    "cash": cash,
                    "positions_value": value,
                    "equity": cash + value,
                    "benchmark_equity": benchmark,
                    "positions": json.dumps(positions, sort_keys=True),
                    "created_at": utcnow(),
                }
            ],
            keys=["snapshot_date", "broker"],
        )
    return cash + value, benchmark


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
