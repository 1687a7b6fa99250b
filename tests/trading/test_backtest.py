"""The backtest (P11): cross-checked with an independent library, no look-ahead, costs.

The simulation runs the live strategy and risk code; here it is fed predictions made by
hand so each property is checked on its own, then `mlops backtest` runs end to end.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from datetime import date

import numpy as np
import pandas as pd
import pytest

from conftest import run_in_process
from mlops.data_prep.sources import load_sample
from mlops.errors import ConfigError
from mlops.trading.backtest import compare
from mlops.trading.risk import RiskLimits
from mlops.trading.simulation import Costs, Market, Rules, simulate

LOOSE = RiskLimits(
    max_open_positions=10,
    max_gross_exposure=1.0,
    max_order_value=1e12,
    price_buffer=0.0,
    daily_loss_limit=1.0,
)
THRESHOLD = 0.005


def rules(slippage_bps: float = 1.0, commission: float = 0.0, limits=LOOSE) -> Rules:
    return Rules(THRESHOLD, 10_000.0, limits, 100_000.0, Costs(slippage_bps, commission))


def sma_forecasts(bars: pd.DataFrame) -> pd.Series:
    """+1 % above the 10-day mean, -1 % below it: trades often, uses only the past."""
    out = []
    for _, rows in bars.groupby("symbol", sort=False):
        sma = rows["close"].rolling(10).mean()
        guess = np.where(rows["close"] > sma, rows["close"] * 1.01, rows["close"] * 0.99)
        out.append(pd.Series(np.where(sma.isna(), np.nan, guess), index=rows.index))
    return pd.concat(out).reindex(bars.index)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return load_sample().sort_values(["symbol", "date"]).reset_index(drop=True)


def test_one_symbol_agrees_with_backtesting_py(sample):
    """Same trades, same sizes, same fill days and final equity within 0.01 %."""
    from backtesting import Backtest, Strategy

    bars = sample[sample["symbol"] == "AAPL"].reset_index(drop=True)
    forecasts = sma_forecasts(bars)
    slippage = 2.0 / 10_000
    ours = simulate(Market.from_frame(bars, forecasts), rules(slippage_bps=2.0, commission=0.005))

    class Mirror(Strategy):
        def init(self) -> None:
            pass

        def next(self) -> None:
            guess, close = self.data.Pred[-1], self.data.Close[-1]
            if np.isnan(guess):
                return
            change = (guess - close) / close
            if not self.position and change >= THRESHOLD:
                self.buy(size=math.floor(10_000.0 / close))
            elif self.position and change < -THRESHOLD:
                self.position.close()

    data = bars.rename(columns=str.capitalize).set_index("Date")
    data["Pred"] = forecasts.to_numpy()
    test = Backtest(
        data[["Open", "High", "Low", "Close", "Volume", "Pred"]],
        Mirror,
        cash=100_000.0,
        spread=0.0,
        # Our costs as its commission: slippage on the open, and per share.
        commission=lambda size, price: abs(size) * (price * slippage + 0.005),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = test.run()
    theirs = stats["_trades"]
    buys = [f for f in ours.fills if f.side == "buy"]
    sells = [f for f in ours.fills if f.side == "sell"]
    assert len(theirs) == len(sells) > 20
    assert [f.day for f in buys[: len(sells)]] == [t.date() for t in theirs["EntryTime"]]
    assert [f.day for f in sells] == [t.date() for t in theirs["ExitTime"]]
    assert [f.quantity for f in sells] == theirs["Size"].tolist()
    entry_opens = [f.price / (1 + slippage) for f in buys[: len(sells)]]
    assert entry_opens == pytest.approx(theirs["EntryPrice"].tolist(), rel=1e-9)
    final = stats["Equity Final [$]"]
    assert ours.equity[-1] == pytest.approx(final, rel=1e-4)
    assert abs(ours.equity[-1] / final - 1) < 1e-6  # in fact to the cent


def test_truncating_history_after_a_day_changes_no_earlier_trade(sample):
    rng = np.random.default_rng(7)
    forecasts = sample["close"] * (1 + rng.normal(0, 0.01, len(sample)))
    full = simulate(Market.from_frame(sample, forecasts), rules())
    cut = date(2016, 6, 15)
    kept = sample["date"] <= pd.Timestamp(cut)
    part = simulate(Market.from_frame(sample[kept], forecasts[kept]), rules())
    before = [f for f in full.fills if f.day <= cut]
    assert part.fills == before and len(before) > 50
    assert part.equity == pytest.approx(full.equity[: len(part.equity)])
    # And the future did not leak into a decision: shuffling it changes nothing before D.
    shuffled = forecasts.copy()
    shuffled[~kept] = rng.permutation(shuffled[~kept].to_numpy())
    again = simulate(Market.from_frame(sample, shuffled), rules())
    assert [f for f in again.fills if f.day <= cut] == before


def test_costs_lower_returns_monotonically(sample):
    forecasts = sma_forecasts(sample)
    finals = [
        compare(sample, forecasts, rules(slippage_bps=bps, commission=fee)).figures["model"]
        for bps, fee in [(0, 0), (1, 0), (5, 0), (5, 0.01), (20, 0.01), (50, 0.05)]
    ]
    returns = [f["total_return"] for f in finals]
    costs = [f["costs"] for f in finals]
    assert all(a > b for a, b in itertools.pairwise(returns)), returns
    assert costs[0] == 0 and all(a < b for a, b in itertools.pairwise(costs))
    assert all(f["trades"] == finals[0]["trades"] for f in finals)


def test_figures_side_by_side(sample):
    comparison = compare(sample, sma_forecasts(sample), rules())
    model, naive, hold = (comparison.figures[c] for c in ("model", "naive", "buy_and_hold"))
    assert naive["trades"] == 0 and naive["total_return"] == 0  # "no change": never trades
    assert hold["trades"] == 5 and hold["exposure"] == pytest.approx(1.0, abs=0.01)
    assert model["trades"] > 100 and 0 <= model["hit_rate"] <= 1
    assert model["max_drawdown"] < 0 < model["volatility"]
    equity = comparison.runs["model"].equity
    assert model["final_equity"] == pytest.approx(equity[-1])
    assert model["total_return"] == pytest.approx(equity[-1] / 100_000 - 1)


def test_risk_limits_bind_in_the_backtest_too(sample):
    tight = RiskLimits(1, 1.0, 1e12, 0.0, 1.0)  # one open position at a time
    sim = simulate(Market.from_frame(sample, sma_forecasts(sample)), rules(limits=tight))
    held: dict[str, float] = {}
    for fill in sim.fills:
        held[fill.symbol] = held.get(fill.symbol, 0) + (1 if fill.side == "buy" else -1)
        assert sum(1 for v in held.values() if v > 0) <= 1


def test_mlops_backtest_naive_writes_table_chart_and_row(make_settings, tmp_path, subprocess_env):
    from mlops.dashboard.app import create_app, render_sections, section
    from mlops.db.schema import backtest_runs

    from .helpers import make_ctx, rows

    env = subprocess_env(MLOPS_HOME=str(tmp_path), TRADE_THRESHOLD="0.001")
    assert run_in_process(env, "migrate").returncode == 0
    assert run_in_process(env, "data-prep", "--as-of", "2017-12-29").returncode == 0
    done = run_in_process(env, "backtest", "--model", "naive", "--from", "2017-01-03")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.rfind("\n{\n") + 1 :])
    assert result["start"] == "2017-01-03" and result["end"] == "2017-12-29"
    days = load_sample()["date"]
    in_window = days[(days >= "2017-01-03") & (days <= "2017-12-29")].nunique()
    assert result["symbols"] == 5 and result["sessions"] == in_window == 250  # no 2017-11-08
    ctx = make_ctx(make_settings, tmp_path)
    (row,) = rows(ctx, backtest_runs)
    assert row["run_key"] == result["run_key"]
    summary = ctx.store.get_bytes(result["summary_key"])
    assert json.loads(summary)["table"][0]["figure"] == "final equity"
    client = create_app(ctx).server.test_client()
    backtests = str(section(render_sections(ctx, "mape"), "backtests"))
    assert f"/backtests/{row['run_key']}/chart" in backtests and "final equity" in backtests
    chart = client.get(f"/backtests/{row['run_key']}/chart")
    assert chart.status_code == 200 and "<polyline" in chart.text
    assert client.get("/backtests/nope/chart").status_code == 404


@pytest.mark.slow
def test_champion_backtest_logs_its_table_and_chart_to_the_models_run(
    make_settings, tmp_path, tmp_path_factory
):
    """The registry's champion predicts each session from that session's features."""
    from inference.trained_model import train_once
    from mlops.data_prep import stage as data_prep
    from mlops.trading import backtest

    from .helpers import make_ctx

    trained = train_once(tmp_path_factory.getbasetemp())
    tracking = trained.settings().tracking_uri
    ctx = make_ctx(make_settings, tmp_path, MLFLOW_TRACKING_URI=tracking, TRADE_THRESHOLD="0.001")
    data_prep.run(ctx, as_of=date(2017, 12, 29))
    result = backtest.run(ctx, model="champion")
    assert result.model_version == "1" and result.mlflow_run_id
    # Out of sample by default: from the first session after the model's data.
    assert result.start == date(2017, 6, 1) and result.in_sample_sessions == 0
    assert set(result.figures) == {"model", "naive", "buy_and_hold"}
    logged = {
        a.path
        for a in ctx.mlflow.list_artifacts(result.mlflow_run_id, f"backtests/{result.run_key}")
    }
    assert logged == {
        f"backtests/{result.run_key}/summary.json",
        f"backtests/{result.run_key}/equity.html",
    }
    # A registered version by number is the same model.
    again = backtest.run(ctx, model="1", start=date(2017, 6, 1))
    assert again.figures == result.figures
    # Into its training data only when asked, and then counted.
    with pytest.raises(ConfigError, match=r"last training day is 2017-05-31.*is 2017-06-01"):
        backtest.run(ctx, model="champion", start=date(2017, 1, 3))
    inside = backtest.run(ctx, model="champion", start=date(2017, 1, 3), allow_in_sample=True)
    days = load_sample()["date"]
    seen = days[(days >= "2017-01-03") & (days <= "2017-05-31")].nunique()
    assert inside.in_sample_sessions == seen and inside.sessions == seen + result.sessions
    assert inside.notes[0].startswith(f"{seen} of {inside.sessions} sessions in sample")


def test_close_only_bars_have_no_open_to_fill_at_one_sentence() -> None:
    from mlops.trading.paper import PaperBroker

    bars = pd.DataFrame(
        {"date": pd.to_datetime(["2017-01-03"]), "symbol": ["SPX"], "close": [2257.83]}
    )
    with pytest.raises(ConfigError, match=r"^A backtest fills orders at the next session's open"):
        Market.from_frame(bars, pd.Series([2260.0]))
    with pytest.raises(ConfigError, match=r"do not have: trade such a universe with BROKER=alpaca"):
        PaperBroker(None, 100_000.0).sync(bars, date(2017, 1, 4))  # type: ignore[arg-type]
