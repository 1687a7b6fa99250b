"""Risk limits on hand-made cases, and migrations 0002 and 0011 on a database holding
0001's rows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text

from mlops.db import migrate
from mlops.db.engine import make_engine
from mlops.trading.risk import Portfolio, RiskLimits, apply_limits
from mlops.trading.strategy import Action, TradeDecision

BUY = TradeDecision("AAA", Action.BUY, 50.0, 0.02, "highest predicted gain")
SELL = TradeDecision("BBB", Action.SELL, 10.0, -0.02, "predicted loss")
PRICES = {"AAA": 100.0, "BBB": 50.0}


def limits(**changes) -> RiskLimits:
    base = {
        "max_open_positions": 10,
        "max_gross_exposure": 1.0,
        "max_order_value": 1e9,
        "price_buffer": 0.0,
        "daily_loss_limit": 0.05,
    }
    return RiskLimits(**{**base, **changes})


def book(cash=100_000.0, held=0.0, positions=0, previous=None) -> Portfolio:
    return Portfolio(cash, cash + held, held, positions, previous)


def check(decisions, portfolio, **changes):
    return {
        d.symbol: (d.action, d.quantity)
        for d in apply_limits(decisions, PRICES, portfolio, limits(**changes))
    }


def test_nothing_binds_and_the_buy_passes_unchanged():
    assert check([BUY, SELL], book()) == {"AAA": ("buy", 50.0), "BBB": ("sell", 10.0)}


def test_order_value_cap_is_priced_with_the_buffer():
    out = apply_limits([BUY], PRICES, book(), limits(max_order_value=2_000, price_buffer=0.01))
    assert out[0].quantity == 19  # 2000 / 101 = 19.8
    assert "order value cap" in out[0].reason


def test_cash_and_gross_exposure_cap_the_buy():
    assert check([BUY], book(cash=1_000)) == {"AAA": ("buy", 10.0)}
    # 107k equity, 97k invested, at most 93 % invested: room for 2,510 (25 shares).
    rich = book(cash=10_000, held=97_000)
    assert check([BUY], rich, max_gross_exposure=0.93) == {"AAA": ("buy", 25.0)}
    # Selling BBB first frees 500 of exposure.
    assert check([BUY, SELL], rich, max_gross_exposure=0.93)["AAA"] == ("buy", 30.0)


def test_max_open_positions_counts_the_days_sells():
    assert check([BUY], book(positions=3), max_open_positions=3)["AAA"] == ("hold", 0.0)
    assert check([BUY, SELL], book(positions=3), max_open_positions=3)["AAA"] == ("buy", 50.0)


def test_daily_loss_limit_stops_new_positions_but_not_sells():
    hit = book(cash=94_000, previous=100_000)  # -6 %
    assert check([BUY, SELL], hit) == {"AAA": ("hold", 0.0), "BBB": ("sell", 10.0)}
    (held,) = [d for d in apply_limits([BUY], PRICES, hit, limits()) if d.symbol == "AAA"]
    assert "daily loss limit" in held.reason
    assert check([BUY], book(cash=96_000, previous=100_000))["AAA"] == ("buy", 50.0)


@pytest.fixture(params=["sqlite", "postgres"])
def old_database(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_database")
    engine = make_engine(url)
    migrate.upgrade(engine, "0001")
    now = datetime(2017, 6, 1, 22, tzinfo=UTC)
    day = date(2017, 6, 1)
    with engine.begin() as conn:
        for i, (broker, status, broker_id) in enumerate(
            [("paper", "new", None), ("paper", "filled", "p-1"), ("alpaca", "new", "a-1")]
        ):
            conn.execute(
                text(
                    "INSERT INTO orders (client_order_id, decision_date, symbol, side, quantity,"
                    " broker, status, broker_order_id, submitted_at)"
                    " VALUES (:cid, :day, 'AAPL', 'buy', 5, :broker, :status, :bid, :now)"
                ),
                {
                    "cid": f"c{i}",
                    "day": day,
                    "broker": broker,
                    "status": status,
                    "bid": broker_id,
                    "now": now,
                },
            )
        conn.execute(
            text(
                "INSERT INTO equity_snapshots (snapshot_date, broker, cash, positions_value,"
                " equity, positions, created_at) VALUES (:day, 'paper', 1, 0, 1, '{}', :now)"
            ),
            {"day": day, "now": now},
        )
    yield engine
    engine.dispose()


def test_migration_0002_keeps_old_rows_meaningful(old_database):
    engine = old_database
    assert migrate.upgrade(engine) == migrate.head_revision()
    with engine.connect() as conn:
        got = conn.execute(
            text(
                "SELECT client_order_id, status, account, broker_status, filled_quantity, attempts"
                " FROM orders ORDER BY client_order_id"
            )
        ).all()
        snap = conn.execute(text("SELECT account, source FROM equity_snapshots")).one()
        # Migration 0011: every row from before strategies is the default strategy's.
        strategies = {
            table: set(conn.execute(text(f"SELECT strategy FROM {table}")).scalars())
            for table in ("orders", "equity_snapshots")
        }
    assert [tuple(r) for r in got] == [
        ("c0", "planned", "paper", None, None, 0),  # ours, never sent: planned
        ("c1", "filled", "paper", "filled", 5.0, 1),
        ("c2", "new", "", "new", None, 1),  # Alpaca's own "new": kept, synced
    ]
    assert tuple(snap) == ("paper", "closes")
    assert strategies == {"orders": {"default"}, "equity_snapshots": {"default"}}
    migrate.upgrade(engine)  # idempotent
