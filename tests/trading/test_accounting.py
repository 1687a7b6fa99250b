"""Equity snapshots are history (P6), and brokers are never mixed in one equity line (P8)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from mlops.db.schema import equity_snapshots
from mlops.runs import utcnow
from mlops.trading import stage as trade

from .helpers import DAY1, DAY2, DAY3, closes_on, make_ctx, predict, rows

ALL = ("AAPL", "GOOGL", "TSLA", "COKE", "YHOO")


def flat(**changes: float) -> dict[str, float]:
    return {s: changes.get(s, 0.0) for s in ALL}


def snapshot_of(ctx, day):
    (snap,) = rows(ctx, equity_snapshots, equity_snapshots.c.snapshot_date == day)
    return snap


def test_p6_rerunning_a_past_day_never_rewrites_its_snapshot(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path)
    predict(ctx, DAY1, flat(COKE=0.02))
    trade.run(ctx, as_of=DAY1)
    predict(ctx, DAY2, flat(AAPL=0.02))
    trade.run(ctx, as_of=DAY2)
    before = snapshot_of(ctx, DAY2)
    assert json.loads(before["positions"]) == {"COKE": pytest.approx(before_qty(ctx, "COKE"))}
    predict(ctx, DAY3, flat(GOOGL=0.02))
    trade.run(ctx, as_of=DAY3)  # AAPL fills on DAY3: holdings change after DAY2

    again = trade.run(ctx, as_of=DAY2)
    assert again.rerun and again.equity == pytest.approx(before["equity"], abs=0.01)
    assert snapshot_of(ctx, DAY2) == before  # same row, same figures, same created_at


def before_qty(ctx, symbol):
    from mlops.db.schema import orders

    (row,) = rows(ctx, orders, orders.c.symbol == symbol)
    return row["filled_quantity"]


def test_p6_a_past_day_first_traded_late_shows_that_days_holdings(make_settings, tmp_path):
    """DAY1 and DAY3 traded, then DAY2 for the first time: holdings as of DAY2 only."""
    ctx = make_ctx(make_settings, tmp_path)
    predict(ctx, DAY1, flat(COKE=0.02))
    trade.run(ctx, as_of=DAY1)
    predict(ctx, DAY2, flat(AAPL=0.02))
    predict(ctx, DAY3, flat(GOOGL=0.02))
    trade.run(ctx, as_of=DAY3)  # COKE fills on DAY2's open
    late = trade.run(ctx, as_of=DAY2)
    snap = snapshot_of(ctx, DAY2)
    assert set(json.loads(snap["positions"])) == {"COKE"}
    quantity = before_qty(ctx, "COKE")
    closes = closes_on(ctx, DAY2)
    assert late.equity == pytest.approx(snap["cash"] + quantity * closes["COKE"], abs=0.01)


def test_p8_dashboard_and_demo_keep_brokers_apart(make_settings, tmp_path):
    from mlops.dashboard import charts, create_app, load_figures
    from mlops.demo import latest_equity

    ctx = make_ctx(make_settings, tmp_path)
    now = utcnow()
    snaps = [
        (date(2017, 6, 1), "paper", "paper", 100_000.0),
        (date(2017, 6, 2), "paper", "paper", 100_500.0),
        (date(2017, 6, 1), "alpaca", "PA1", 5_000.0),
        (date(2017, 6, 2), "alpaca", "PA1", 4_900.0),
        (date(2017, 6, 5), "alpaca", "PA1", 4_950.0),
    ]
    with ctx.engine.begin() as conn:
        for day, broker, account, equity in snaps:
            conn.execute(
                equity_snapshots.insert().values(
                    snapshot_date=day,
                    broker=broker,
                    account=account,
                    cash=equity,
                    positions_value=0.0,
                    equity=equity,
                    benchmark_equity=equity,
                    positions="{}",
                    created_at=now,
                )
            )
    paper = load_figures(ctx.engine, "paper").equity
    assert set(paper["broker"]) == {"paper"} and len(paper) == 2
    figures = charts.equity_by_account(load_figures(ctx.engine).equity)
    assert [label for label, _ in figures] == ["alpaca PA1", "paper"]
    assert [len(figure.data[0].x) for _, figure in figures] == [3, 2]
    client = create_app(ctx).server.test_client()
    api = client.get("/api/equity", query_string={"broker": "alpaca"}).get_json()
    assert [r["equity"] for r in api] == [5_000.0, 4_900.0, 4_950.0]
    with ctx.engine.connect() as conn:
        assert tuple(latest_equity(conn, "paper")) == (100_500.0, 100_500.0)
        assert tuple(latest_equity(conn, "alpaca")) == (4_950.0, 4_950.0)
