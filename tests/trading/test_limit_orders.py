"""Limit orders (TRADE_ORDER_TYPE=limit, issue 18): a limit the session does not reach
does not fill, in the backtest, the paper broker and at Alpaca alike.

The backtest is checked to the cent against the event loop of test_rules (written from
the docs, no project code); the paper broker and the Alpaca stand-in on the sample's own
bars of June 2017.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from mlops.data_prep.sources import load_sample
from mlops.db.schema import orders
from mlops.errors import ConfigError
from mlops.trading import order_types
from mlops.trading import stage as trade
from mlops.trading.simulation import Costs, Market, Rules, simulate

from .fake_alpaca import FakeAlpaca
from .helpers import DAY1, DAY2, DAY3, alpaca_env, make_ctx, predict, rows
from .test_backtest import LOOSE, THRESHOLD
from .test_rules import BUDGET, CASH, FEE, SLIPPAGE, event_loop

DAY4 = DAY3.replace(day=6)
FLAT = {"AAPL": 0.0, "COKE": 0.0, "GOOGL": 0.0, "TSLA": 0.0, "YHOO": 0.0}


@pytest.fixture(scope="module")
def year() -> tuple[pd.DataFrame, pd.Series]:
    """Half a year's bars (2017-01 to 06) and forecasts within about +-1 % of the close (a
    candidate most days)."""
    sample = load_sample()
    half = (sample["date"].dt.year == 2017) & (sample["date"].dt.month <= 6)
    bars = sample[half].sort_values(["symbol", "date"])
    bars = bars.reset_index(drop=True)
    rng = np.random.default_rng(17)
    return bars, bars["close"] * (1 + rng.normal(0, 0.008, len(bars)))


def limit_rules(buffer_bps: float, time_in_force: str = "day", rule: str = "threshold") -> Rules:
    return Rules(
        THRESHOLD, BUDGET, LOOSE, CASH, Costs(SLIPPAGE, FEE), rule=rule,  # type: ignore[arg-type]
        order_type="limit", limit_buffer_bps=buffer_bps, time_in_force=time_in_force,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("buffer_bps", "time_in_force", "rule"),
    [(10.0, "day", "threshold"), (10.0, "opg", "threshold"), (0.0, "day", "rotation")],
)
def test_limit_backtest_agrees_with_an_independent_event_loop_to_the_cent(
    year, buffer_bps, time_in_force, rule
):
    bars, forecasts = year
    market = Market.from_frame(bars, forecasts)
    ours = simulate(market, limit_rules(buffer_bps, time_in_force, rule))
    theirs, equity = event_loop(
        bars,
        forecasts,
        rule,
        "all_losers",
        limit_bps=buffer_bps,
        opening_only=time_in_force == "opg",
    )
    mine = [(f.day, f.symbol, f.side, f.quantity) for f in ours.fills]
    assert mine == [fill[:4] for fill in theirs] and len(mine) > 30
    assert [f.price for f in ours.fills] == pytest.approx([fill[4] for fill in theirs], rel=1e-12)
    assert np.abs(ours.equity - equity).max() < 0.005  # to the cent, every session
    # Not vacuous: limits left orders unfilled that market orders fill, and (day orders)
    # some filled at the limit itself, inside the session's range, below a buy's open.
    market_rules = Rules(THRESHOLD, BUDGET, LOOSE, CASH, Costs(SLIPPAGE, FEE), rule=rule)  # type: ignore[arg-type]
    assert ours.decisions > len(ours.fills) and simulate(market, market_rules).fills != ours.fills
    index = {d: i for i, d in enumerate(market.days)}
    inside = [
        f
        for f in ours.fills
        if f.side == "buy" and f.price < market.open[index[f.day], market.symbols.index(f.symbol)]
    ]
    assert bool(inside) is (time_in_force == "day")


def test_a_market_without_high_and_low_cannot_be_traded_with_limits(year):
    bars, forecasts = year
    bare = bars.drop(columns=["high", "low"])
    with pytest.raises(ValueError, match="high and low"):
        simulate(Market.from_frame(bare, forecasts), limit_rules(10.0))


def test_limit_prices_are_on_the_tick_and_past_the_close_against_the_order():
    assert order_types.limit_price("buy", 988.29, 50) == 993.23  # 993.23145
    assert order_types.limit_price("sell", 988.29, 50) == 983.35  # 983.34855
    assert order_types.limit_price("buy", 0.51234, 0) == 0.5123
    with pytest.raises(ValueError, match="close"):
        order_types.limit_price("buy", float("nan"), 50)


def test_paper_broker_fills_a_limit_only_where_the_session_reaches_it(
    make_settings, tmp_path, caplog
):
    """On the sample's bars, with a 0 bp buffer (the limit is the decision's close):

    * 06-01 buy COKE at 231.21: 06-02 opens 232.78, low 231.22: not reached, expired;
    * 06-02 buy GOOGL at 996.12: 06-05 opens 997.89, low 995.45: filled at the limit;
    * 06-05 buy TSLA at 347.32: 06-06 opens 344.70, through it: filled at the open; sell
      GOOGL at 1003.88: 06-06 opens 1003.31, high 1008.61: filled at the limit.
    """
    ctx = make_ctx(make_settings, tmp_path, TRADE_ORDER_TYPE="limit", TRADE_LIMIT_BUFFER_BPS="0")
    predict(ctx, DAY1, {**FLAT, "COKE": 0.02})
    first = trade.run(ctx, as_of=DAY1)
    assert [(o.symbol, o.limit_price) for o in first.orders] == [("COKE", 231.21)]
    predict(ctx, DAY2, {**FLAT, "GOOGL": 0.02})
    with caplog.at_level(logging.WARNING):
        trade.run(ctx, as_of=DAY2)
    assert "buy limit 231.21 not reached (open 232.78, low 231.22) on 2017-06-02" in caplog.text
    predict(ctx, DAY3, {**FLAT, "GOOGL": -0.02, "TSLA": 0.02})
    trade.run(ctx, as_of=DAY3)
    predict(ctx, DAY4, FLAT)
    last = trade.run(ctx, as_of=DAY4)
    done = {
        (r["decision_date"].day, r["symbol"], r["side"]): (r["status"], r["fill_price"])
        for r in rows(ctx, orders)
    }
    assert done == {
        (1, "COKE", "buy"): ("expired", None),
        (2, "GOOGL", "buy"): ("filled", 996.12),
        (5, "TSLA", "buy"): ("filled", 344.70),
        (5, "GOOGL", "sell"): ("filled", 1003.88),
    }
    assert last.cash == pytest.approx(100_000 - 10 * 996.12 + 10 * 1003.88 - 28 * 344.70)


def test_opg_limit_fills_at_the_open_or_not_at_all(make_settings, tmp_path):
    """TRADE_TIME_IN_FORCE=opg makes the paper broker's limit a limit-on-open: the buy the
    day order filled at its limit on 2017-06-05 (above) expires, its open being above."""
    from mlops.trading.brokers import make_broker
    from mlops.trading.paper import PaperBroker

    opg = make_settings(tmp_path, TRADE_ORDER_TYPE="limit", TRADE_TIME_IN_FORCE="opg")
    broker = make_broker(opg, None, "default")  # type: ignore[arg-type]
    assert isinstance(broker, PaperBroker) and broker.opening_only
    row = {"symbol": "GOOGL", "side": "buy", "limit_price": 996.12, "quantity": 10.0}
    bar = pd.DataFrame({"open": [997.89], "high": [1007.4], "low": [995.45]})  # 2017-06-05
    missed = broker._session(row, bar, DAY3)
    assert (missed.status, missed.error) == (
        "expired",
        "buy limit 996.12 not reached at the open (997.89; opg) on 2017-06-05: day order expired",
    )


def test_alpaca_gets_a_limit_order_and_the_bar_decides_its_fill(make_settings, tmp_path, caplog):
    """Through alpaca-py over HTTP: the same client order id rules, a ``limit`` order with
    its limit price; the stand-in's session expires it when the range misses the limit,
    fills it at the limit when the range reaches it; the next run records either."""
    with FakeAlpaca() as fake:
        fake.after_close_of(DAY1)
        env = alpaca_env(fake, TRADE_ORDER_TYPE="limit", TRADE_LIMIT_BUFFER_BPS="50")
        ctx = make_ctx(make_settings, tmp_path, **env)
        predict(ctx, DAY1, {"AAPL": 0.0, "GOOGL": 0.02})
        (placed,) = trade.run(ctx, as_of=DAY1).orders_placed
        sent = fake.orders[placed]
        assert (sent["type"], sent["limit_price"], sent["side"]) == ("limit", "993.23", "buy")
        assert sent["time_in_force"] == "day" and float(sent["qty"]) == 10
        fake.trade_session({"GOOGL": (995.0, 996.0, 994.0)})  # never down to 993.23
        fake.after_close_of(DAY2)
        predict(ctx, DAY2, {"AAPL": 0.0, "GOOGL": 0.02})
        with caplog.at_level(logging.WARNING):
            second = trade.run(ctx, as_of=DAY2)
        assert f"{placed}" in caplog.text and "expired" in caplog.text
        (again,) = second.orders_placed
        assert fake.orders[again]["limit_price"] == "1001.1"  # 996.12 x 1.005 = 1001.1006
        fake.trade_session({"GOOGL": (1003.0, 1004.0, 1000.5)})  # the low reaches it
        fake.after_close_of(DAY3)
        predict(ctx, DAY3, {"AAPL": 0.0, "GOOGL": 0.0})
        trade.run(ctx, as_of=DAY3)
    done = {r["client_order_id"]: (r["status"], r["fill_price"]) for r in rows(ctx, orders)}
    assert done == {placed: ("expired", None), again: ("filled", 1001.1)}
    assert fake.positions == {"GOOGL": 10.0}


def test_an_unknown_order_type_is_a_configuration_error(make_settings, tmp_path):
    with pytest.raises(ConfigError, match="TRADE_ORDER_TYPE"):
        make_settings(tmp_path, TRADE_ORDER_TYPE="stop")
    with pytest.raises(ConfigError, match="TRADE_LIMIT_BUFFER_BPS"):
        make_settings(tmp_path, TRADE_LIMIT_BUFFER_BPS="-1")
