"""The trade stage on the paper broker: strategy, fills at the next open, reruns, kill switch."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from mlops.data_prep import stage as data_prep
from mlops.db.schema import equity_snapshots, orders, trade_decisions
from mlops.errors import DataError
from mlops.trading import stage as trade
from mlops.trading.switch import set_halted, status

from .helpers import DAY1, DAY2, count, make_ctx, predict, rows

FLAT = {"AAPL": 0.0, "GOOGL": 0.0, "TSLA": 0.0, "COKE": 0.0, "YHOO": 0.0}


def test_paper_trade_buys_best_fills_next_open_and_reruns_place_nothing(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path, TRADE_THRESHOLD="0.005")
    predict(ctx, DAY1, {"AAPL": 0.02, "GOOGL": 0.01, "TSLA": -0.03, "COKE": 0.001, "YHOO": 0.0})
    first = trade.run(ctx, as_of=DAY1)
    assert first.decisions == {
        "AAPL": "buy",
        "COKE": "hold",
        "GOOGL": "hold",
        "TSLA": "hold",
        "YHOO": "hold",
    }
    assert len(first.orders_placed) == 1
    assert first.orders_rejected == first.orders_pending == []
    again = trade.run(ctx, as_of=DAY1)
    assert again.rerun and again.orders_placed == []
    assert count(ctx, orders) == 1 and count(ctx, trade_decisions) == 5
    # Every symbol's decision keeps its reason (the backtest skips those it never trades).
    reasons = {r["symbol"]: r["reason"] for r in rows(ctx, trade_decisions)}
    assert reasons["AAPL"].startswith("highest predicted gain +2.000%")
    assert reasons["GOOGL"] == "predicted gain +1.000%, but AAPL is higher"
    assert reasons["TSLA"] == "predicted loss -3.000%; not held"
    assert reasons["COKE"] == reasons["YHOO"].replace("+0.000%", "+0.100%")
    assert reasons["YHOO"] == "predicted +0.000% is within ±0.500%"

    # The next day the order fills at that day's open, for whole shares under the cap.
    predict(ctx, DAY2, {**FLAT, "AAPL": -0.01})
    second = trade.run(ctx, as_of=DAY2)
    (filled,) = rows(ctx, orders, orders.c.side == "buy")
    from mlops.data_prep.sources import load_sample

    bars = load_sample()
    aapl = bars[(bars["symbol"] == "AAPL")]
    day1_close = aapl[aapl["date"] == pd.Timestamp(DAY1)]["close"].item()
    day2 = aapl[aapl["date"] == pd.Timestamp(DAY2)]
    assert filled["status"] == "filled" and filled["broker_status"] == "filled"
    assert filled["fill_date"] == DAY2
    assert filled["fill_price"] == pytest.approx(day2["open"].item())
    assert filled["quantity"] == filled["filled_quantity"] == int(10_000 // day1_close)
    # AAPL is held and predicted to fall 1 %: sell it all.
    assert second.decisions["AAPL"] == "sell"
    cash = 100_000 - filled["filled_quantity"] * filled["fill_price"]
    equity = cash + filled["filled_quantity"] * day2["close"].item()
    assert second.cash == pytest.approx(cash, abs=0.01)
    assert second.equity == pytest.approx(equity, abs=0.01)
    snaps = rows(ctx, equity_snapshots)
    assert [s["snapshot_date"] for s in snaps] == [DAY1, DAY2]
    assert {s["account"] for s in snaps} == {"paper"}
    assert snaps[0]["benchmark_equity"] == pytest.approx(100_000)


def test_order_for_a_symbol_without_next_bar_expires(make_settings, tmp_path):
    """YHOO stops trading after 2017-06-16: a day order placed that evening cannot fill."""
    ctx = make_ctx(make_settings, tmp_path)
    last = date(2017, 6, 16)
    predict(ctx, last, {"YHOO": 0.05, "AAPL": 0.0})
    assert trade.run(ctx, as_of=last).decisions["YHOO"] == "buy"
    predict(ctx, date(2017, 6, 19), {"AAPL": 0.0})
    trade.run(ctx, as_of=date(2017, 6, 19))
    (row,) = rows(ctx, orders)
    assert row["status"] == "expired"
    assert "no YHOO bar on 2017-06-19" in row["error"]


def test_trade_without_predictions_fails_clearly(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path)
    data_prep.run(ctx, as_of=DAY1)
    with pytest.raises(DataError, match="No predictions for 2017-06-01"):
        trade.run(ctx, as_of=DAY1)
    assert count(ctx, trade_decisions) == 0


def test_only_the_trading_champions_predictions_trade(make_settings, tmp_path):
    """Challengers of the trading model and other models' champions are scored in shadow,
    later than the champion: their predictions never decide a trade.
    """
    ctx = make_ctx(make_settings, tmp_path)
    champion = {**FLAT, "AAPL": 0.02}
    predict(ctx, DAY1, champion, version="1")
    predict(ctx, DAY1, {**FLAT, "TSLA": 0.05}, version="2", role="challenger")
    predict(ctx, DAY1, {**FLAT, "GOOGL": 0.05}, version="1", model_name="stock-close-mlp")
    result = trade.run(ctx, as_of=DAY1)
    assert result.model_version == "1"
    assert result.decisions == {
        "AAPL": "buy",
        "COKE": "hold",
        "GOOGL": "hold",
        "TSLA": "hold",
        "YHOO": "hold",
    }
    assert [r["symbol"] for r in rows(ctx, orders)] == ["AAPL"]


def test_a_challenger_alone_does_not_trade(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path)
    predict(ctx, DAY1, {**FLAT, "TSLA": 0.05}, version="2", role="challenger")
    with pytest.raises(DataError, match="from the champion of stock-close"):
        trade.run(ctx, as_of=DAY1)
    assert count(ctx, trade_decisions) == 0


def test_kill_switch_stops_every_order_until_resumed(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path)
    predict(ctx, DAY1, {**FLAT, "AAPL": 0.02})
    set_halted(ctx, True, "broker outage")
    assert status(ctx)["halted"] and status(ctx)["reason"] == "broker outage"
    halted = trade.run(ctx, as_of=DAY1)
    assert halted.halted and "broker outage" in halted.halted
    assert halted.decisions == {} and count(ctx, orders) == 0
    set_halted(ctx, False, "back")
    resumed = trade.run(ctx, as_of=DAY1)
    assert resumed.halted is None and resumed.decisions["AAPL"] == "buy"
    assert len(resumed.orders_placed) == 1


def test_kill_switch_setting_halts_too(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path, TRADING_HALTED="true")
    predict(ctx, DAY1, {**FLAT, "AAPL": 0.02})
    result = trade.run(ctx, as_of=DAY1)
    assert result.halted == "TRADING_HALTED is true" and count(ctx, orders) == 0


def test_risk_limits_apply_in_the_stage(make_settings, tmp_path, caplog):
    """A per-order cap of 1,000 with a 1 % buffer: AAPL at ~153 buys 6 shares, not 65;
    the cut is said in a warning, not only recorded (issue 18: it was silent).
    """
    ctx = make_ctx(make_settings, tmp_path, RISK_MAX_ORDER_VALUE="1000")
    predict(ctx, DAY1, {**FLAT, "AAPL": 0.02})
    with caplog.at_level("WARNING", logger="mlops.trading.stage"):
        trade.run(ctx, as_of=DAY1)
    (cut,) = [r.getMessage() for r in caplog.records if "risk limits" in r.getMessage()]
    assert cut.startswith("BUY AAPL cut from 65 to 6 shares") and "order value cap" in cut
    (decision,) = rows(ctx, trade_decisions, trade_decisions.c.action == "buy")
    (order,) = rows(ctx, orders)
    close = decision["last_close"]
    assert order["quantity"] == decision["quantity"] == int(1000 // (close * 1.01))
    assert "order value cap" in decision["reason"]
