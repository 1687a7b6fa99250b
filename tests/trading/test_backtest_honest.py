"""The backtest says what it measured (issue 16): the sessions a model saw in training, the
dataset behind the window, short windows, the Sharpe ratio's uncertainty, every fill, and
the naive column's shortcut.

The end-to-end tests share one home with datasets as of 2017-06-06 and 2017-12-29. A
registered model is stood in for by its lineage (trained up to 2017-05-31, like the
session's tiny trained model) and forecasts made by hand: what is checked is the window
and the outputs, not the model (the slow test in test_backtest.py runs the real one).
"""

from __future__ import annotations

import json
import math
import random
import re
from datetime import date

import numpy as np
import pandas as pd
import pytest

from conftest import clean_environ, run_in_process
from mlops.contracts.models import ModelRef
from mlops.data_prep.sources import load_sample
from mlops.trading import backtest, performance, report, strategy
from mlops.trading.backtest import compare, trades_frame
from mlops.trading.simulation import Market, never_buys, simulate, walk

from .test_backtest import rules, sma_forecasts

TRAINED = date(2017, 5, 31)  # the stand-in model's last training day
FIRST_UNSEEN = date(2017, 6, 1)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return load_sample().sort_values(["symbol", "date"]).reset_index(drop=True)


def sample_days(first: str, last: str) -> int:
    days = load_sample()["date"]
    return days[(days >= first) & (days <= last)].nunique()


# The figures.


def test_sharpe_interval_is_lo_2002_and_sessions_are_counted(sample):
    from scipy.stats import norm

    comparison = compare(sample, sma_forecasts(sample), rules())
    naive = comparison.figures["naive"]
    assert naive["sharpe"] is naive["sharpe_ci_low"] is naive["sharpe_ci_high"] is None  # flat
    for name in ("model", "buy_and_hold"):
        sim, figures = comparison.runs[name], comparison.figures[name]
        equity = np.r_[100_000.0, sim.equity]
        returns = equity[1:] / equity[:-1] - 1
        sr = returns.mean() / returns.std(ddof=1)
        error = math.sqrt((1 + sr**2 / 2) / len(returns))
        z = norm.ppf(0.975)
        assert figures["sessions"] == len(comparison.market.days) == len(returns)
        assert figures["sharpe"] == pytest.approx(sr * math.sqrt(252), rel=1e-12)
        assert figures["sharpe_ci_low"] == pytest.approx((sr - z * error) * math.sqrt(252))
        assert figures["sharpe_ci_high"] == pytest.approx((sr + z * error) * math.sqrt(252))
    rows = {r["figure"]: r for r in report.table(comparison.figures, "v1")}
    model = comparison.figures["model"]
    shown = rows["Sharpe ratio, 95 % interval (Lo 2002, iid)"]["model v1"]
    assert shown == f"{model['sharpe_ci_low']:.2f} to {model['sharpe_ci_high']:.2f}"
    assert rows["sessions"]["buy-and-hold"] == str(len(comparison.market.days))


def test_short_windows_flag_their_annualised_figures(sample):
    forecasts = sma_forecasts(sample)
    days = sorted(sample["date"].unique())
    short = sample["date"] <= days[14]  # the first forecasts come after 10 sessions
    comparison = compare(sample[short], forecasts[short], rules())
    labels = [r["figure"] for r in report.table(comparison.figures, "v1")]
    flag = "[annualised from 15 sessions, under 60: unreliable]"
    flagged = {label.split(" [")[0] for label in labels if flag in label}
    assert flagged == {
        "CAGR",
        "annualised volatility",
        "Sharpe ratio",
        "Sharpe ratio, 95 % interval (Lo 2002, iid)",
        "Sortino ratio",
        "turnover (per year, x mean equity)",
    }
    assert "total return" in labels and "number of trades (fills)" in labels
    (note,) = report.notes(comparison)
    assert note.startswith("15 sessions, under 60: the annualised figures")
    long = compare(sample, forecasts, rules())
    assert not any("[annualised" in r["figure"] for r in report.table(long.figures, "v1"))
    assert report.notes(long) == []


# The trade list.


def test_trade_list_is_every_fill_with_each_round_trips_profit(sample):
    comparison = compare(sample, sma_forecasts(sample), rules(slippage_bps=5, commission=0.01))
    trades = trades_frame(comparison)
    assert list(trades.columns) == list(backtest.TRADE_COLUMNS)
    assert trades["day"].dtype == "datetime64[ns]" and trades["realised_pnl"].dtype == "float64"
    for name, sim in comparison.runs.items():
        mine = trades[trades["simulation"] == name]
        expected = [
            (pd.Timestamp(f.decided), pd.Timestamp(f.day), f.symbol, f.side, f.quantity, f.price)
            for f in sim.fills
        ]
        columns = ["decided", "day", "symbol", "side", "quantity", "price"]
        assert list(mine[columns].itertuples(index=False, name=None)) == expected
        assert mine["cost"].tolist() == [f.cost for f in sim.fills]
    assert set(trades["simulation"]) == {"model", "buy_and_hold"}  # naive never trades
    model = trades[trades["simulation"] == "model"]
    buys, sells = model[model["side"] == "buy"], model[model["side"] == "sell"]
    assert buys["entry_day"].isna().all() and buys["realised_pnl"].isna().all()
    assert len(sells) > 20 and sells["realised_pnl"].notna().all()
    # Each sell closes the whole position bought on its entry day: proceeds minus what
    # that buy paid, commissions included.
    for sell in sells.itertuples():
        entry = (buys["symbol"] == sell.symbol) & (buys["day"] == sell.entry_day)
        (buy,) = buys[entry].itertuples()
        assert buy.day < sell.day and buy.quantity == sell.quantity
        paid = buy.quantity * (buy.price + 0.01)
        assert sell.realised_pnl == pytest.approx(sell.quantity * (sell.price - 0.01) - paid)
    # All round trips add up to the realised profit: the cash gained plus what the
    # positions still open cost.
    sim = comparison.runs["model"]
    last_buy = buys.groupby("symbol").tail(1).set_index("symbol")
    last_sell = sells.groupby("symbol")["day"].max()
    still_open = [s for s in last_buy.index if last_buy.at[s, "day"] > last_sell.get(s, pd.NaT)]
    open_cost = sum(
        last_buy.at[s, "quantity"] * (last_buy.at[s, "price"] + 0.01) for s in still_open
    )
    cash = sim.equity[-1] - sim.invested[-1]
    assert sells["realised_pnl"].sum() == pytest.approx(cash - 100_000 + open_cost, abs=1e-6)
    assert sells["realised_pnl"].tolist() == pytest.approx(sim.round_trips)
    assert comparison.figures["model"]["trades"] == len(model)


# The naive column's shortcut, and the strategy's orders-only answer.


def test_naive_shortcut_equals_the_full_walk(sample, monkeypatch):
    market = Market.from_frame(sample, sample["close"])  # "tomorrow = today"
    full = walk(market, rules())
    assert never_buys(market, rules().threshold) and full.fills == [] and full.decisions == 0

    def refuse(*args, **kwargs):
        raise AssertionError("the naive column walked the sessions")

    monkeypatch.setattr(strategy, "decide", refuse)
    short = simulate(market, rules())
    assert short.days == full.days and short.fills == full.fills == []
    assert np.array_equal(short.equity, full.equity) and short.equity.dtype == full.equity.dtype
    assert np.array_equal(short.invested, full.invested)
    assert short.decisions == full.decisions and short.round_trips == full.round_trips == []
    assert performance.figures(short, 100_000.0) == performance.figures(full, 100_000.0)
    # One forecast at the threshold is enough to walk.
    nudged = sample["close"].copy()
    nudged.iloc[100] *= 1.01
    assert not never_buys(Market.from_frame(sample, nudged), rules().threshold)


def test_orders_only_decisions_are_the_orders_of_all_decisions():
    rng = random.Random(11)
    for _ in range(300):
        symbols = rng.sample([f"S{i:02d}" for i in range(30)], rng.randint(0, 30))
        signals = [
            strategy.Signal(s, c * (1 + rng.gauss(0, 0.01)), c)
            for s in symbols
            for c in [rng.uniform(5, 500)]
        ]
        held = rng.sample([f"S{i:02d}" for i in range(30)], rng.randint(0, 5))
        positions = {s: float(rng.randint(0, 20)) for s in held}
        cash = rng.choice([0.0, 50.0, 5_000.0, 1e6])
        kwargs = {"threshold": 0.005, "max_position_value": 10_000.0}
        every = strategy.decide(signals, positions, cash, **kwargs)
        orders = strategy.decide(signals, positions, cash, orders_only=True, **kwargs)
        assert [d for d in orders if d.action != "hold"] == [d for d in every if d.action != "hold"]
        assert all(d in every for d in orders)
        assert len(every) == len(set(symbols) | {s for s, q in positions.items() if q > 0})


# End to end: one home, two datasets.


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("backtest-home")
    env = clean_environ({"MLOPS_HOME": str(folder), "TRADE_THRESHOLD": "0.001"})
    assert run_in_process(env, "migrate").returncode == 0
    for day in ("2017-06-06", "2017-12-29"):
        assert run_in_process(env, "data-prep", "--as-of", day).returncode == 0
    return env


@pytest.fixture
def stand_in_model(monkeypatch):
    """``--model champion`` is a version trained up to TRAINED forecasting by hand."""
    tags = {"dataset_version": "stand-in", "as_of": TRAINED.isoformat()}
    ref = ModelRef(name="stock-close", version="7", run_id="", tags=tags)
    monkeypatch.setattr(backtest, "_model", lambda ctx, model: (ref, "stand-in"))
    monkeypatch.setattr(backtest, "_predict", lambda predictor, window: sma_forecasts(window))


def result_of(done) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout[done.stdout.rfind("\n{\n") + 1 :])


def context(env):
    from mlops.context import open_context
    from mlops.settings import load_settings

    return open_context(load_settings(MLOPS_HOME=env["MLOPS_HOME"]))


def test_window_reads_the_newest_dataset_that_reaches_to(home):
    ctx = context(home)
    from mlops.contracts import datasets

    newest = datasets.latest_version(ctx.engine)
    done = result_of(
        run_in_process(
            home, "backtest", "--model", "naive", "--from", "2017-06-01", "--to", "2017-09-28"
        )
    )
    assert (done["start"], done["end"]) == ("2017-06-01", "2017-09-28")
    assert done["sessions"] == sample_days("2017-06-01", "2017-09-28") == 84
    assert done["dataset_version"] == newest
    # A year that only the 2017-12-29 dataset holds, and a Saturday: its Friday.
    done = result_of(run_in_process(home, "backtest", "--model", "naive", "--to", "2016-12-31"))
    assert done["end"] == "2016-12-30" and done["sessions"] == 252
    beyond = run_in_process(home, "backtest", "--model", "naive", "--to", "2018-01-06")
    assert beyond.returncode != 0
    assert (
        "No published dataset reaches --to 2018-01-06 (the newest dataset ends on "
        "2017-12-29): run `mlops data-prep --as-of 2018-01-05` first." in beyond.stderr
    )
    crossed = run_in_process(
        home, "backtest", "--model", "naive", "--from", "2017-10-02", "--to", "2017-09-28"
    )
    assert crossed.returncode != 0
    assert "--from 2017-10-02 is after --to 2017-09-28" in crossed.stderr


def test_help_states_the_default_window(home):
    shown = run_in_process(home, "backtest", "--help")
    text = re.sub(r"[\s│]+", " ", shown.stdout)
    assert "default: the session after the model's training data ends" in text
    assert "for naive, a year of sessions before --to" in text and "--allow-in-sample" in text


def test_from_inside_the_training_data_is_refused(home, stand_in_model):
    refused = run_in_process(home, "backtest", "--from", "2017-01-03", "--to", "2017-09-28")
    assert refused.returncode != 0
    assert (
        "The window from 2017-01-03 reaches into model v7's training data (its last training "
        "day is 2017-05-31): the first out-of-sample session is 2017-06-01; start after it, or "
        "pass --allow-in-sample to backtest in sample." in refused.stderr
    )
    # By default: out of sample only.
    done = result_of(run_in_process(home, "backtest", "--to", "2017-09-28"))
    assert done["start"] == "2017-06-01" and done["in_sample_sessions"] == 0
    assert done["trained_through"] == "2017-05-31" and done["notes"] == []


def test_an_allowed_in_sample_run_says_so_everywhere(home, stand_in_model):
    from mlops.dashboard.app import create_app, render_sections, section
    from mlops.store import get_json, get_parquet

    done = run_in_process(
        home, "backtest", "--from", "2017-01-03", "--to", "2017-09-28", "--allow-in-sample"
    )
    result = result_of(done)
    in_sample, sessions = sample_days("2017-01-03", "2017-05-31"), result["sessions"]
    said = f"{in_sample} of {sessions} sessions in sample"
    assert result["in_sample_sessions"] == in_sample > 100 and sessions == in_sample + 84
    trades = int(result["figures"]["model"]["trades"])
    costs = "1 bp slippage and 0 per share"
    # The log line.
    (line,) = [x for x in done.stderr.splitlines() if "Backtest v7" in x]
    assert said in line and f"{trades} trades" in line and costs in line
    assert "risk-free rate 0" in line and "95 %" in line
    # The summary and its table.
    ctx = context(home)
    summary = get_json(ctx.store, result["summary_key"])
    assert summary["in_sample_sessions"] == in_sample and summary["risk_free_rate"] == 0
    assert summary["costs"] == {"slippage_bps": 1.0, "commission_per_share": 0.0}
    assert any(said in note for note in summary["notes"])
    assert summary["table"][-1]["model v7"] == f"{in_sample} of {sessions}"
    # The chart: the in-sample sessions shaded, the table, the costs and the rate.
    chart = ctx.store.get_bytes(result["chart_key"]).decode()
    assert 'class="in-sample"' in chart and f"in sample: {in_sample} of {sessions}" in chart
    assert said in chart and costs in chart and "risk-free rate 0" in chart
    assert "number of trades (fills)" in chart
    # The trade list.
    fills = get_parquet(ctx.store, result["trades_key"])
    assert (fills["simulation"] == "model").sum() == trades > 10
    # The dashboard: the section and the trade list page.
    shown = str(section(render_sections(ctx, "mape"), "backtests"))
    assert said in shown and costs in shown and "risk-free rate 0" in shown
    assert f"/backtests/{result['run_key']}/trades" in shown
    assert "number of trades (fills)" in shown
    client = create_app(ctx).server.test_client()
    page = client.get(f"/backtests/{result['run_key']}/trades")
    assert page.status_code == 200 and said in page.text
    assert page.text.count("<tr") == len(fills) + 1  # the header and one row per fill
    assert client.get("/backtests/nope/trades").status_code == 404
