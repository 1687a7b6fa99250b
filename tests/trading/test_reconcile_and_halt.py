"""Reconciliation with the broker and the kill switch (issue 18, problems 1 and 3).

Against the real alpaca-py client over HTTP to the local stand-in, and the paper broker.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_in_process
from mlops.db.schema import orders, trading_halts
from mlops.trading import stage as trade
from mlops.trading.paper import PaperBroker
from mlops.trading.switch import set_halted

from .fake_alpaca import FakeAlpaca
from .helpers import DAY1, DAY2, DAY3, alpaca_env, make_ctx, predict, rows

BUY_COKE = {"AAPL": 0.0, "COKE": 0.03}


@pytest.fixture
def fake():
    with FakeAlpaca() as server:
        server.after_close_of(DAY1)
        yield server


def hand_placed(fake: FakeAlpaca, symbol: str) -> str:
    """An open order someone placed on the account by hand (not this system's id)."""
    order = fake._new_order(
        {"client_order_id": "by-hand-1", "symbol": symbol, "qty": 3, "side": "buy",
         "time_in_force": "day"}
    )  # fmt: skip
    fake.orders[order["client_order_id"]] = order
    return order["client_order_id"]


def test_a_fresh_database_against_a_traded_account_places_nothing_twice(
    make_settings, tmp_path, fake
):
    first = make_ctx(make_settings, tmp_path / "first", **alpaca_env(fake))
    predict(first, DAY1, BUY_COKE)
    assert trade.run(first, as_of=DAY1).decisions["COKE"] == "buy"
    fake.fill_all(price=40.0)
    (bought,) = fake.orders
    quantity = float(fake.orders[bought]["qty"])

    # The volume is lost: a new database, the same account, the next day.
    fake.after_close_of(DAY2)
    fresh = make_ctx(make_settings, tmp_path / "fresh", **alpaca_env(fake))
    predict(fresh, DAY2, BUY_COKE)
    result = trade.run(fresh, as_of=DAY2)
    assert fake.posts == 1, "COKE was bought a second time"
    assert result.reconciliation.adopted == [bought]
    assert result.reconciliation.differences == [] and result.reconciliation.not_traded == []
    assert result.decisions["COKE"] == "hold"  # held by this system: not bought again
    (adopted,) = rows(fresh, orders, orders.c.client_order_id == bought)
    assert adopted["status"] == "filled" and adopted["filled_quantity"] == quantity
    assert adopted["decision_date"] == DAY1 and adopted["side"] == "buy"

    # Re-trading the first day from the fresh database: already decided, nothing sent.
    predict(fresh, DAY1, BUY_COKE)
    again = trade.run(fresh, as_of=DAY1)
    assert fake.posts == 1 and again.decisions == {"COKE": "buy"} and again.orders_placed == []


def test_an_unexplained_position_or_order_is_reported_and_its_symbol_not_traded(
    make_settings, tmp_path, fake, subprocess_env
):
    fake.positions, fake.marks = {"COKE": 7.0}, {"COKE": 40.0}
    hand = hand_placed(fake, "AAPL")
    env = alpaca_env(fake)
    ctx = make_ctx(make_settings, tmp_path, **env)
    predict(ctx, DAY1, {"AAPL": 0.02, "COKE": 0.03, "GOOGL": 0.0})
    cli_env = subprocess_env(MLOPS_HOME=str(tmp_path), **env)

    checked = run_in_process(cli_env, "trading", "reconcile")
    assert checked.returncode == 0, checked.stderr
    found = json.loads(checked.stdout)
    assert found["not_traded"] == ["AAPL", "COKE"]
    assert [(d["kind"], d["symbol"]) for d in found["differences"]] == [
        ("order", "AAPL"),
        ("position", "COKE"),
    ]
    assert "alpaca holds 7 COKE that this system did not buy: COKE is not traded." in (
        checked.stderr
    )
    assert f"alpaca has an open order {hand} (buy 3 AAPL) that this system did not place" in (
        checked.stderr
    )

    strict = run_in_process(
        {**cli_env, "RECONCILE_STRICT": "true"}, "trade", "--as-of", "2017-06-01"
    )
    assert strict.returncode == 5 and fake.posts == 0, strict.stderr
    error = strict.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 2 differences between the book and alpaca account PA0000TEST")
    assert error.endswith("RECONCILE_STRICT=true stops the run: nothing was decided or sent.")

    traded = run_in_process(cli_env, "trade", "--as-of", "2017-06-01")
    assert traded.returncode == 0 and fake.posts == 0, traded.stderr
    result = json.loads(traded.stdout)
    assert result["decisions"] == {"AAPL": "hold", "COKE": "hold", "GOOGL": "hold"}
    assert result["reconciliation"]["not_traded"] == ["AAPL", "COKE"]


def test_halt_cancels_this_systems_open_orders_and_resume_says_what_it_resumes(
    make_settings, tmp_path, fake, subprocess_env
):
    env = alpaca_env(fake)
    ctx = make_ctx(make_settings, tmp_path, **env)
    predict(ctx, DAY1, BUY_COKE)
    (mine,) = trade.run(ctx, as_of=DAY1).orders_placed
    hand = hand_placed(fake, "AAPL")
    cli_env = subprocess_env(MLOPS_HOME=str(tmp_path), **env)

    halted = run_in_process(cli_env, "trading", "halt", "--reason", "broker outage")
    assert halted.returncode == 0, halted.stderr
    assert ("DELETE", f"/v2/orders/{fake.orders[mine]['id']}") in fake.requests
    state = json.loads(halted.stdout)
    assert state["halted"] is True and state["by"].startswith("cli:")
    assert state["orders_canceled"] == [mine]
    assert fake.orders[mine]["status"] == "canceled"
    assert fake.orders[hand]["status"] == "accepted"  # not this system's: left alone
    (row,) = rows(ctx, orders)
    assert row["status"] == "canceled" and "kill switch" in row["error"]
    (halt,) = rows(ctx, trading_halts)
    assert halt["actor"] == state["by"] and halt["reason"] == "broker outage"
    assert json.loads(halt["details"])["orders_canceled"] == [mine]

    resumed = run_in_process(cli_env, "trading", "resume", "--reason", "back")
    message = json.loads(resumed.stdout)["message"]
    assert message.startswith("Trading resumed: the halt of ")
    assert f"by {state['by']} (broker outage) is lifted" in message
    assert json.loads(resumed.stdout)["resumed"]["orders_canceled"] == 1
    again = json.loads(run_in_process(cli_env, "trading", "resume").stdout)
    assert again["message"] == "Trading was not halted by `mlops trading halt`: nothing to resume."


def test_halt_flatten_closes_this_systems_positions(make_settings, tmp_path, fake):
    fake.positions, fake.marks = {"ZZZZ": 5.0}, {"ZZZZ": 50.0}  # bought by hand
    ctx = make_ctx(make_settings, tmp_path, **alpaca_env(fake))
    predict(ctx, DAY1, BUY_COKE)
    (bought,) = trade.run(ctx, as_of=DAY1).orders_placed
    fake.fill_all(price=40.0)
    quantity = float(fake.orders[bought]["qty"])

    state = set_halted(ctx, True, "flat", actor="test", flatten=True)
    (closing,) = state["closing_orders"]
    assert "-close-" in closing and state["positions_left_alone"] == ["5 ZZZZ"]
    sell = fake.orders[closing]
    assert (sell["symbol"], sell["side"], float(sell["qty"])) == ("COKE", "sell", quantity)
    assert fake.posts == 2
    # Halting again while the closing order is open sends nothing more, cancels nothing.
    again = set_halted(ctx, True, "flat", actor="test", flatten=True)
    assert again["closing_orders"] == [] and again["orders_canceled"] == [] and fake.posts == 2
    fake.fill_all(price=41.0)
    assert fake.positions == {"COKE": 0.0, "ZZZZ": 5.0}


def test_paper_halt_cancels_and_flatten_sells_at_the_next_open(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path)
    predict(ctx, DAY1, {"AAPL": 0.03, "COKE": 0.0})
    trade.run(ctx, as_of=DAY1)  # buy AAPL, filled at DAY2's open
    predict(ctx, DAY2, {"AAPL": 0.0, "COKE": 0.03})
    (coke,) = trade.run(ctx, as_of=DAY2).orders_placed
    assert PaperBroker(ctx.engine, 100_000.0).account().positions.keys() == {"AAPL"}

    state = set_halted(ctx, True, "review", actor="test", flatten=True)
    assert state["orders_canceled"] == [coke]
    (closing,) = state["closing_orders"]
    predict(ctx, DAY3, {"AAPL": 0.0, "COKE": 0.03})
    halted = trade.run(ctx, as_of=DAY3)  # halted: no decision, but the sale fills
    assert halted.halted and halted.decisions == {}
    assert PaperBroker(ctx.engine, 100_000.0).account().positions == {}
    by_id = {r["client_order_id"]: r for r in rows(ctx, orders)}
    assert by_id[coke]["status"] == "canceled" and by_id[coke]["filled_quantity"] is None
    assert by_id[closing]["status"] == "filled" and by_id[closing]["fill_date"] == DAY3


def test_a_run_halted_by_the_setting_cancels_open_orders(make_settings, tmp_path, fake):
    ctx = make_ctx(make_settings, tmp_path, **alpaca_env(fake))
    predict(ctx, DAY1, BUY_COKE)
    (mine,) = trade.run(ctx, as_of=DAY1).orders_placed
    stopped = make_ctx(make_settings, tmp_path, **alpaca_env(fake, TRADING_HALTED="true"))
    result = trade.run(stopped, as_of=DAY1)
    assert ("DELETE", f"/v2/orders/{fake.orders[mine]['id']}") in fake.requests
    assert fake.orders[mine]["status"] == "canceled"
    assert result.halted == "TRADING_HALTED is true" and result.orders_canceled == [mine]
