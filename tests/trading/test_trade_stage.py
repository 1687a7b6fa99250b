"""The trade stage on the paper broker and on Alpaca's API (a local server, the real client)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import func, select

from mlops.context import Context, open_context
from mlops.contracts import datasets
from mlops.data_prep import stage as data_prep
from mlops.db import migrate
from mlops.db.engine import make_engine
from mlops.db.schema import equity_snapshots, orders, predictions, trade_decisions
from mlops.errors import ConfigError, DataError
from mlops.runs import utcnow
from mlops.trading import stage as trade

from .fake_alpaca import FakeAlpaca

DAY1, DAY2 = date(2017, 6, 1), date(2017, 6, 2)


def make_ctx(make_settings, tmp_path, **env) -> Context:
    settings = make_settings(tmp_path, **env)
    migrate.upgrade(make_engine(settings.db_url))
    return open_context(settings)


def predict(ctx: Context, day: date, changes: dict[str, float], version: str = "1") -> None:
    """Write predictions as batch-infer would, with chosen expected changes."""
    data_prep.run(ctx, as_of=day)

    _, frame = datasets.load(ctx.store, datasets.latest_version(ctx.engine, day))
    closes = frame[frame["date"] == pd.Timestamp(day)].set_index("symbol")["close"]
    rows = [
        {
            "symbol": symbol,
            "prediction_date": day,
            "model_name": "stock-close",
            "model_version": version,
            "predicted_close": float(closes[symbol]) * (1 + change),
            "last_close": float(closes[symbol]),
            "expected_change": change,
            "dataset_version": "test",
            "created_at": utcnow(),
        }
        for symbol, change in changes.items()
    ]
    with ctx.engine.begin() as conn:
        conn.execute(predictions.insert(), rows)


def count(ctx: Context, table) -> int:
    with ctx.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


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
    again = trade.run(ctx, as_of=DAY1)
    assert again.rerun and again.orders_placed == []
    assert count(ctx, orders) == 1 and count(ctx, trade_decisions) == 5

    # The next day the order fills at that day's open, for whole shares under the cap.
    predict(ctx, DAY2, {"AAPL": -0.01, "GOOGL": 0.0, "TSLA": 0.0, "COKE": 0.0, "YHOO": 0.0})
    second = trade.run(ctx, as_of=DAY2)
    with ctx.engine.connect() as conn:
        filled = conn.execute(select(orders).where(orders.c.side == "buy")).mappings().one()
    from mlops.data_prep.sources import load_sample

    bars = load_sample()
    aapl = bars[(bars["symbol"] == "AAPL")]
    day1_close = aapl[aapl["date"] == pd.Timestamp(DAY1)]["close"].item()
    day2 = aapl[aapl["date"] == pd.Timestamp(DAY2)]
    assert filled["status"] == "filled"
    assert filled["fill_date"] == DAY2
    assert filled["fill_price"] == pytest.approx(day2["open"].item())
    assert filled["quantity"] == int(10_000 // day1_close)
    # AAPL is held and predicted to fall 1 %: sell it all.
    assert second.decisions["AAPL"] == "sell"
    cash = 100_000 - filled["quantity"] * filled["fill_price"]
    equity = cash + filled["quantity"] * day2["close"].item()
    assert second.cash == pytest.approx(cash, abs=0.01)
    assert second.equity == pytest.approx(equity, abs=0.01)
    with ctx.engine.connect() as conn:
        snaps = conn.execute(select(equity_snapshots).order_by("snapshot_date")).mappings().all()
    assert [s["snapshot_date"] for s in snaps] == [DAY1, DAY2]
    assert snaps[0]["benchmark_equity"] == pytest.approx(100_000)


def test_order_for_a_symbol_without_next_bar_expires(make_settings, tmp_path):
    """YHOO stops trading after 2017-06-16: a day order placed that evening cannot fill."""
    ctx = make_ctx(make_settings, tmp_path)
    last = date(2017, 6, 16)
    predict(ctx, last, {"YHOO": 0.05, "AAPL": 0.0})
    assert trade.run(ctx, as_of=last).decisions["YHOO"] == "buy"
    predict(ctx, date(2017, 6, 19), {"AAPL": 0.0})
    trade.run(ctx, as_of=date(2017, 6, 19))
    with ctx.engine.connect() as conn:
        row = conn.execute(select(orders)).mappings().one()
    assert row["status"] == "expired"
    assert "no YHOO bar on 2017-06-19" in row["error"]


def test_trade_without_predictions_fails_clearly(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path)
    data_prep.run(ctx, as_of=DAY1)
    with pytest.raises(DataError, match="No predictions for 2017-06-01"):
        trade.run(ctx, as_of=DAY1)
    assert count(ctx, trade_decisions) == 0


def test_alpaca_orders_go_over_http_once_and_fills_are_synced(make_settings, tmp_path):
    with FakeAlpaca() as fake:
        ctx = make_ctx(
            make_settings,
            tmp_path,
            BROKER="alpaca",
            ALPACA_API_KEY="test-key",
            ALPACA_SECRET_KEY="test-secret",
            ALPACA_BASE_URL=fake.url,
        )
        predict(ctx, DAY1, {"AAPL": 0.0, "GOOGL": 0.02})
        result = trade.run(ctx, as_of=DAY1)
        assert result.broker == "alpaca"
        assert result.decisions == {"AAPL": "hold", "GOOGL": "buy"}
        assert fake.posts == 1
        (sent,) = fake.orders.values()
        assert sent["symbol"] == "GOOGL" and sent["side"] == "buy"
        assert sent["client_order_id"] == result.orders_placed[0]

        # A crash between recording and sending leaves the order "new": the rerun sends it
        # again with the same client order id, Alpaca refuses the duplicate, nothing doubles.
        with ctx.engine.begin() as conn:
            conn.execute(orders.update().values(status="new"))
        trade.run(ctx, as_of=DAY1)
        assert fake.posts == 2 and len(fake.orders) == 1
        with ctx.engine.connect() as conn:
            assert conn.execute(select(orders.c.status)).scalar_one() == "accepted"

        fake.fill_all(price=975.5)
        predict(ctx, DAY2, {"AAPL": 0.0, "GOOGL": 0.0})
        trade.run(ctx, as_of=DAY2)
        with ctx.engine.connect() as conn:
            row = conn.execute(select(orders)).mappings().one()
        assert row["status"] == "filled" and row["fill_price"] == pytest.approx(975.5)


def test_alpaca_api_error_is_one_sentence(make_settings, tmp_path):
    from mlops.errors import BrokerError

    with FakeAlpaca() as fake:
        fake.fail_account = True
        ctx = make_ctx(
            make_settings,
            tmp_path,
            BROKER="alpaca",
            ALPACA_API_KEY="k",
            ALPACA_SECRET_KEY="s",
            ALPACA_BASE_URL=fake.url,
        )
        predict(ctx, DAY1, {"AAPL": 0.02})
        with pytest.raises(BrokerError, match="Alpaca account could not be read"):
            trade.run(ctx, as_of=DAY1)
        assert count(ctx, orders) == 0


def test_live_endpoint_needs_live_trading_turned_on(make_settings, tmp_path):
    ctx = make_ctx(
        make_settings,
        tmp_path,
        BROKER="alpaca",
        ALPACA_API_KEY="k",
        ALPACA_SECRET_KEY="s",
        ALPACA_BASE_URL="https://api.alpaca.markets",
    )
    predict(ctx, DAY1, {"AAPL": 0.02})
    with pytest.raises(ConfigError, match="ALPACA_LIVE_TRADING"):
        trade.run(ctx, as_of=DAY1)
