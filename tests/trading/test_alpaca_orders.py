"""Trading against Alpaca's API: the real alpaca-py client and a local stand-in over HTTP.

Each test names the problem of issue 9 it covers (P1 ... P11).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

import pytest

from mlops.db.schema import equity_snapshots, orders, trade_decisions
from mlops.errors import ConfigError, DataError
from mlops.trading import stage as trade
from mlops.trading.alpaca import AlpacaBroker, is_live_url
from mlops.trading.broker import OrdersNotPlacedError, PendingOrder, Side
from mlops.trading.lifecycle import BROKER_STATUSES, OrderState, client_order_id, from_broker

from .fake_alpaca import FakeAlpaca
from .helpers import DAY1, DAY2, DAY3, alpaca_env, count, make_ctx, predict, rows

BUY_GOOGL = {"AAPL": 0.0, "GOOGL": 0.02}
FLAT = {"AAPL": 0.0, "GOOGL": 0.0}


@pytest.fixture
def fake():
    with FakeAlpaca() as server:
        server.after_close_of(DAY1)
        yield server


def alpaca_ctx(make_settings, tmp_path, fake, **env):
    return make_ctx(make_settings, tmp_path, **alpaca_env(fake, **env))


def order_row(ctx):
    (row,) = rows(ctx, orders, orders.c.broker == "alpaca")
    return row


@pytest.mark.parametrize("time_in_force", ["day", "opg"])
def test_orders_are_good_for_the_time_in_force_setting(
    make_settings, tmp_path, fake, time_in_force
):
    """TRADE_TIME_IN_FORCE reaches Alpaca as alpaca-py sends it (day by default)."""
    env = {} if time_in_force == "day" else {"TRADE_TIME_IN_FORCE": time_in_force}
    ctx = alpaca_ctx(make_settings, tmp_path, fake, **env)
    predict(ctx, DAY1, BUY_GOOGL)
    assert trade.run(ctx, as_of=DAY1).orders_placed
    (order,) = fake.orders.values()
    assert (order["symbol"], order["time_in_force"]) == ("GOOGL", time_in_force)


def test_an_unknown_time_in_force_is_a_configuration_error(make_settings, tmp_path):
    from mlops.errors import ConfigError

    with pytest.raises(ConfigError, match="TRADE_TIME_IN_FORCE"):
        make_settings(tmp_path, TRADE_TIME_IN_FORCE="gtc")


def test_orders_go_over_http_once_and_fills_are_synced(make_settings, tmp_path, fake):
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    result = trade.run(ctx, as_of=DAY1)
    assert result.broker == "alpaca" and result.account == "PA0000TEST"
    assert result.decisions == {"AAPL": "hold", "GOOGL": "buy"}
    assert fake.posts == 1
    (sent,) = fake.orders.values()
    assert sent["symbol"] == "GOOGL" and sent["side"] == "buy"
    assert result.orders_placed == [sent["client_order_id"]]
    assert result.orders[0].status == "accepted"

    # A crash after the attempt was marked, before the reply was recorded: the rerun asks
    # Alpaca for the id first and records what it says; nothing is posted twice.
    with ctx.engine.begin() as conn:
        conn.execute(orders.update().values(status="planned", broker_order_id=None))
    trade.run(ctx, as_of=DAY1)
    assert fake.posts == 1 and len(fake.orders) == 1
    assert order_row(ctx)["status"] == "accepted"

    fake.fill_all(price=975.5)
    fake.after_close_of(DAY2)
    predict(ctx, DAY2, FLAT)
    trade.run(ctx, as_of=DAY2)
    row = order_row(ctx)
    assert row["status"] == "filled" and row["fill_price"] == pytest.approx(975.5)
    assert row["filled_quantity"] == row["quantity"] and row["filled_at"] is not None


def test_p1_client_order_ids_are_unique_per_broker_account(make_settings, tmp_path, fake):
    """Paper traded 2017-06-01 on this home; Alpaca's order for the same decision is sent."""
    changes = {"AAPL": 0.0, "COKE": 0.03}
    paper = make_ctx(make_settings, tmp_path)
    predict(paper, DAY1, changes)
    assert trade.run(paper, as_of=DAY1).decisions["COKE"] == "buy"

    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    result = trade.run(ctx, as_of=DAY1)
    assert result.decisions["COKE"] == "buy"
    assert fake.posts == 1 and [o["symbol"] for o in fake.orders.values()] == ["COKE"]
    ids = {r["broker"]: r["client_order_id"] for r in rows(ctx, orders)}
    assert set(ids) == {"paper", "alpaca"} and ids["paper"] != ids["alpaca"]
    assert result.orders_placed == [ids["alpaca"]]

    # Another Alpaca account, or another strategy, gets other ids for the same decision;
    # the default strategy's are those from before strategies existed.
    def cid(account: str, strategy: str = "default") -> str:
        return client_order_id("alpaca", account, DAY1, "COKE", "buy", strategy=strategy)

    assert cid("PA1") != cid("PA2") and cid("PA1", "red") not in (cid("PA1"), cid("PA2"))
    tag = hashlib.sha256(b"alpaca|PA1").hexdigest()[:6]
    digest = hashlib.sha256(b"alpaca|PA1|2017-06-01|COKE|buy").hexdigest()[:10]
    assert cid("PA1") == f"mlops-alpaca-{tag}-20170601-COKE-buy-{digest}"
    assert cid("PA1", "red").startswith(f"mlops-alpaca-{tag}-red-20170601-COKE-buy-")
    assert len(ids["alpaca"]) <= 64


@pytest.mark.parametrize("fault", [500, 503, 520, 429, "drop"])
def test_p2_transient_errors_are_retried_with_the_same_id(make_settings, tmp_path, fake, fault):
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    fake.fail("POST", "/v2/orders", fault, fault)
    result = trade.run(ctx, as_of=DAY1)
    assert fake.posts == 3 and len(fake.orders) == 1
    assert result.orders_placed == list(fake.orders)
    assert order_row(ctx)["status"] == "accepted"


def test_p2_an_http_status_says_whether_to_try_again() -> None:
    from mlops.trading.alpaca import is_transient

    assert [
        c for c in (400, 403, 404, 408, 422, 429, 500, 501, 502, 505, 520, 599) if is_transient(c)
    ] == [408, 429, 500, 502, 520, 599]
    assert not is_transient(None)


def test_p2_retries_exhausted_exit_12_and_the_rerun_places_it(make_settings, tmp_path, fake):
    ctx = alpaca_ctx(make_settings, tmp_path, fake, ALPACA_MAX_ATTEMPTS="2")
    predict(ctx, DAY1, BUY_GOOGL)
    fake.fail("POST", "/v2/orders", 500, 500)
    with pytest.raises(OrdersNotPlacedError, match="not confirmed after 2 attempts") as caught:
        trade.run(ctx, as_of=DAY1)
    assert caught.value.exit_code == 12
    pending = caught.value.result
    assert pending.orders_pending and not pending.orders_placed
    row = order_row(ctx)
    assert row["status"] == "planned" and row["attempts"] == 1
    # Not stored as rejected forever: the rerun retries the same id and places it.
    again = trade.run(ctx, as_of=DAY1)
    assert again.orders_placed == pending.orders_pending
    assert order_row(ctx)["status"] == "accepted" and len(fake.orders) == 1
    assert order_row(ctx)["error"] is None  # the old failure no longer describes it


def test_p3_refused_order_is_reported_and_ends_in_orders_not_placed(
    make_settings, tmp_path, fake, caplog
):
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    fake.fail("POST", "/v2/orders", (403, "insufficient buying power"))
    caplog.set_level(logging.INFO, logger="mlops")
    with pytest.raises(OrdersNotPlacedError, match="insufficient buying power") as caught:
        trade.run(ctx, as_of=DAY1)
    result = caught.value.result
    assert result.orders_placed == [] and result.orders_pending == []
    assert result.orders_rejected == [order_row(ctx)["client_order_id"]]
    assert order_row(ctx)["status"] == "unplaced"
    assert "HTTP 403" in order_row(ctx)["error"]
    # The log speaks from the order's result: no line claims a BUY went through.
    lines = [r.getMessage() for r in caplog.records]
    assert any("was NOT placed" in line and "GOOGL" in line for line in lines)
    assert not any(line.startswith("BUY") and "NOT" not in line for line in lines)


def test_p4_alpaca_new_is_synced_and_never_posted_again(make_settings, tmp_path, fake):
    fake.initial_status = "new"  # accepted, not filled: what Alpaca says outside hours
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    assert trade.run(ctx, as_of=DAY1).orders[0].status == "new"
    trade.run(ctx, as_of=DAY1)
    trade.run(ctx, as_of=DAY1)
    assert fake.posts == 1
    assert ("GET", "/v2/orders:by_client_order_id") in fake.requests  # synced
    assert order_row(ctx)["broker_status"] == "new"
    fake.fill_all(price=960.0)
    fake.after_close_of(DAY2)
    predict(ctx, DAY2, FLAT)
    trade.run(ctx, as_of=DAY2)
    assert order_row(ctx)["status"] == "filled" and fake.posts == 1


def test_p5_partial_fills_are_recorded_until_filled(make_settings, tmp_path, fake):
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    trade.run(ctx, as_of=DAY1)
    cid = order_row(ctx)["client_order_id"]
    fake.fill(cid, 3, 970.0)
    fake.after_close_of(DAY2)
    predict(ctx, DAY2, FLAT)
    trade.run(ctx, as_of=DAY2)
    row = order_row(ctx)
    assert row["status"] == "partially_filled"
    assert row["filled_quantity"] == 3 and row["fill_price"] == pytest.approx(970.0)
    fake.fill(cid, 100, 980.0)  # the rest
    fake.after_close_of(DAY3)
    predict(ctx, DAY3, FLAT)
    trade.run(ctx, as_of=DAY3)
    row = order_row(ctx)
    total = row["quantity"]
    assert row["status"] == "filled" and row["filled_quantity"] == total
    assert row["fill_price"] == pytest.approx((3 * 970 + (total - 3) * 980) / total, rel=1e-6)
    assert row["filled_at"] is not None and row["fill_date"] is not None


def test_an_order_canceled_after_it_was_placed_is_told_by_the_run_that_learns_it(
    make_settings, tmp_path, fake, caplog
):
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    trade.run(ctx, as_of=DAY1)
    cid = order_row(ctx)["client_order_id"]
    fake.fill(cid, 3, 970.0)
    fake.set_status(cid, "canceled")  # e.g. canceled by hand in Alpaca's dashboard
    fake.after_close_of(DAY2)
    predict(ctx, DAY2, FLAT)
    caplog.set_level(logging.INFO, logger="mlops")
    trade.run(ctx, as_of=DAY2)
    row = order_row(ctx)
    assert (row["status"], row["filled_quantity"]) == ("canceled", 3)
    told = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m for m in told if cid in m] == [
        f"Order {cid} (buy {row['quantity']:g} GOOGL, decided {DAY1}) ended canceled "
        f"with 3 of {row['quantity']:g} filled."
    ]
    caplog.clear()
    trade.run(ctx, as_of=DAY2)  # said once: a final order is not synced again
    assert not [r for r in caplog.records if cid in r.getMessage()]


def test_p5_lost_reply_is_looked_up_by_client_order_id(make_settings, tmp_path, fake, caplog):
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    fake.fail("POST", "/v2/orders", "lost")  # Alpaca takes it, the reply never arrives
    with caplog.at_level("INFO", logger="mlops.trading.alpaca"):
        result = trade.run(ctx, as_of=DAY1)
    assert fake.posts == 1 and len(fake.orders) == 1
    assert result.orders_placed == list(fake.orders)
    assert order_row(ctx)["status"] == "accepted"
    # Issue 18: the look-up that resolved it left no line; now it is said.
    said = [r.getMessage() for r in caplog.records if "its reply was lost" in r.getMessage()]
    assert len(said) == 1 and "not sent again" in said[0] and "GOOGL" in said[0]


def test_p2_a_timeout_is_a_lost_reply_resolved_by_look_up(make_settings, tmp_path, fake):
    """Alpaca takes the order but answers after the client's timeout: no second order."""
    ctx = alpaca_ctx(make_settings, tmp_path, fake, ALPACA_TIMEOUT_SECONDS="0.3")
    predict(ctx, DAY1, BUY_GOOGL)
    fake.fail("POST", "/v2/orders", "slow")
    result = trade.run(ctx, as_of=DAY1)
    assert fake.posts == 1 and len(fake.orders) == 1
    assert result.orders_placed == list(fake.orders)
    assert order_row(ctx)["status"] == "accepted"


def test_p5_a_422_duplicate_records_what_the_broker_has(make_settings, tmp_path, fake):
    """The broker filled an order our database lost track of: 422, look-up, filled."""
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    trade.run(ctx, as_of=DAY1)
    fake.fill_all(price=990.0)
    with ctx.engine.begin() as conn:  # e.g. a database restored from before the send
        conn.execute(orders.update().values(status="planned", attempts=0, broker_order_id=None))
    # Sent again as such, Alpaca answers 422 (the id is taken): the look-up records it.
    row = order_row(ctx)
    sent = AlpacaBroker(ctx.engine, ctx.settings).submit(
        PendingOrder(row["client_order_id"], row["symbol"], Side.BUY, row["quantity"])
    )
    assert fake.posts == 2 and len(fake.orders) == 1  # the second POST got the 422
    assert sent.status == "filled" and sent.fill_price == pytest.approx(990.0)
    # A trade run reconciles first: the broker's listing settles the order, no POST.
    result = trade.run(ctx, as_of=DAY1)
    assert fake.posts == 2 and len(fake.orders) == 1
    row = order_row(ctx)
    assert row["status"] == "filled" and row["fill_price"] == pytest.approx(990.0)
    assert result.orders_rejected == []


def test_p7_equity_cash_and_positions_come_from_the_broker(make_settings, tmp_path, fake):
    """5,000 of cash and a position outside the data: valued by the broker, left alone."""
    fake.cash = 5_000.0
    fake.positions = {"ZZZZ": 10.0}
    fake.marks = {"ZZZZ": 50.0}
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, FLAT)
    result = trade.run(ctx, as_of=DAY1)
    assert result.equity == pytest.approx(5_500.0) and result.cash == pytest.approx(5_000.0)
    assert result.benchmark_equity == pytest.approx(5_500.0)  # not PAPER_INITIAL_CASH
    (snap,) = rows(ctx, equity_snapshots)
    assert snap["source"] == "broker" and snap["positions_value"] == pytest.approx(500.0)
    # Not opened by mlops: reconciliation reports it and the run does not trade it.
    assert result.decisions["ZZZZ"] == "hold" and result.reconciliation.not_traded == ["ZZZZ"]
    (held,) = rows(ctx, trade_decisions, trade_decisions.c.symbol == "ZZZZ")
    assert held["reason"] == "not traded: alpaca holds 10 ZZZZ that this system did not buy"


def test_positions_not_opened_by_the_strategy_are_left_alone(make_settings, tmp_path, fake):
    fake.positions, fake.marks = {"AAPL": 10.0}, {"AAPL": 150.0}
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, {"AAPL": -0.03, "GOOGL": 0.0})
    assert trade.run(ctx, as_of=DAY1).decisions["AAPL"] == "hold"
    assert fake.posts == 0
    managed = alpaca_ctx(make_settings, tmp_path / "all", fake, TRADE_MANAGE_ALL_POSITIONS="1")
    predict(managed, DAY1, {"AAPL": -0.03, "GOOGL": 0.0})
    assert trade.run(managed, as_of=DAY1).decisions["AAPL"] == "sell"
    assert [o["side"] for o in fake.orders.values()] == ["sell"]


@pytest.mark.parametrize(
    "url",
    [
        "https://api.alpaca.markets",
        "https://API.ALPACA.MARKETS",
        "https://api.alpaca.markets/?paper=true",
        "https://api.alpaca.markets./v2",
        "https://paper-api.alpaca.markets@api.alpaca.markets",
        "https://Api.Alpaca.Markets:443#paper",
    ],
)
def test_p9_live_host_needs_live_trading_turned_on(make_settings, tmp_path, url):
    env = {"BROKER": "alpaca", "ALPACA_API_KEY": "k", "ALPACA_SECRET_KEY": "s"}
    ctx = make_ctx(make_settings, tmp_path, ALPACA_BASE_URL=url, **env)
    with pytest.raises(ConfigError, match="ALPACA_LIVE_TRADING"):
        AlpacaBroker(ctx.engine, ctx.settings)
    live = make_settings(tmp_path, ALPACA_BASE_URL=url, ALPACA_LIVE_TRADING="true", **env)
    assert AlpacaBroker(ctx.engine, live).client is not None
    assert is_live_url(url)


def test_p9_paper_and_stand_in_hosts_are_not_live():
    assert not is_live_url("https://paper-api.alpaca.markets")
    assert not is_live_url("http://127.0.0.1:8000/api.alpaca.markets")
    assert not is_live_url(None)


def test_p10_stale_predictions_are_refused_by_the_broker_clock(make_settings, tmp_path, fake):
    """The clock says 2017-06-01 evening: predictions for 2017-06-02 are not for "now"."""
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY2, BUY_GOOGL)
    with pytest.raises(DataError, match="latest completed session is 2017-06-01"):
        trade.run(ctx, as_of=DAY2)
    fake.clock_now = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)  # the real endpoint's "now"
    with pytest.raises(DataError, match="no order was sent"):
        trade.run(ctx, as_of=DAY2)
    assert fake.posts == 0 and count(ctx, trade_decisions) == 0
    # A stand-in whose clock says it is that day's evening trades it.
    fake.after_close_of(DAY2)
    assert trade.run(ctx, as_of=DAY2).orders_placed


def test_a_missed_day_of_a_catch_up_is_not_traded_and_says_so(make_settings, tmp_path, fake):
    """`mlops daily --catch-up` runs a past session's trade with --missed-day: by Alpaca's
    clock its predictions are stale, so nothing is decided or sent, and the run succeeds
    saying why (a paper broker, without a clock, would replay it)."""
    fake.clock_now = datetime(2017, 6, 5, 22, 0, tzinfo=UTC)  # Monday evening
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY2, BUY_GOOGL)
    result = trade.run(ctx, as_of=DAY2, missed_day=True)
    assert result.not_traded is not None
    assert "latest completed session is 2017-06-05" in result.not_traded
    assert result.not_traded.endswith("a missed day, not traded")
    assert fake.posts == 0 and count(ctx, trade_decisions) == 0


def test_p10_market_open_next_morning_still_trades_yesterdays_close(make_settings, tmp_path, fake):
    fake.clock_now = datetime(2017, 6, 2, 15, 0, tzinfo=UTC)  # 11:00 New York, session open
    ctx = alpaca_ctx(make_settings, tmp_path, fake)
    predict(ctx, DAY1, BUY_GOOGL)
    assert trade.run(ctx, as_of=DAY1).orders_placed


def test_every_alpaca_status_is_mapped():
    from alpaca.trading.enums import OrderStatus

    assert {s.value for s in OrderStatus} == set(BROKER_STATUSES)
    assert from_broker("new") == OrderState.NEW != OrderState.PLANNED
    assert from_broker("FILLED") == OrderState.FILLED


def test_an_account_alpaca_cannot_read_is_one_sentence_and_records_nothing(
    make_settings, tmp_path, fake
):
    from mlops.errors import BrokerError

    fake.fail_account = True
    ctx = alpaca_ctx(make_settings, tmp_path, fake, ALPACA_MAX_ATTEMPTS="3")
    predict(ctx, DAY1, BUY_GOOGL)
    with pytest.raises(BrokerError, match="Alpaca failed reading the account after 3 attempts"):
        trade.run(ctx, as_of=DAY1)
    assert count(ctx, orders) == 0 and count(ctx, trade_decisions) == 0
    assert fake.requests.count(("GET", "/v2/account")) == 3
