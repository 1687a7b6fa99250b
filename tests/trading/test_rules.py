"""The trading rules of issue 17 (TRADE_RULE, TRADE_SELL) live and in the backtest, and the
line that says when no forecast reaches the threshold.

The backtest of each rule is checked against an event loop written here from the rules'
description alone (no project code), to the cent; the live stage is checked on the
issue's example (2017-06-06: GOOGL forecast +0.112 %, TSLA held at +0.076 %).
"""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from conftest import clean_environ, run_in_process
from mlops.contracts.models import ModelRef
from mlops.data_prep.sources import load_sample
from mlops.db.schema import trade_decisions
from mlops.trading import backtest, report
from mlops.trading import stage as trade
from mlops.trading.backtest import compare
from mlops.trading.simulation import Costs, Market, Rules, never_buys, reach, simulate, walk

from .helpers import make_ctx, predict, rows
from .test_backtest import LOOSE, THRESHOLD, sma_forecasts

COMBINATIONS = [
    ("threshold", "all_losers"),
    ("threshold", "worst_loser"),
    ("rotation", "all_losers"),
    ("rotation", "worst_loser"),
]
SLIPPAGE, FEE, BUDGET, CASH = 2.0, 0.005, 10_000.0, 100_000.0


def rules(rule: str = "threshold", sell: str = "all_losers") -> Rules:
    return Rules(THRESHOLD, BUDGET, LOOSE, CASH, Costs(SLIPPAGE, FEE), rule=rule, sell=sell)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return load_sample().sort_values(["symbol", "date"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def noisy(sample) -> pd.Series:
    """Forecasts within about +-1 % of the close: a candidate most days, rotations often."""
    rng = np.random.default_rng(17)
    return sample["close"] * (1 + rng.normal(0, 0.008, len(sample)))


def event_loop(
    bars: pd.DataFrame,
    forecasts: pd.Series,
    rule: str,
    sell: str,
    limit_bps: float | None = None,
    opening_only: bool = False,
):
    """The rules as the docs state them, session by session; (fills, equity at each close).

    Each session: the previous session's orders fill at the open, sells first (by symbol),
    then the buy, cut to the cash (no bar: the order expires); equity at the close (a
    symbol without a bar keeps its last close); then the decision on the session's
    forecasts. The candidate: the highest expected change at or past the threshold among
    the symbols not held (the first symbol of a tie), bought with up to the budget of the
    cash in whole shares at the close. Sold whole: under rotation with a candidate, every
    held symbol forecast lower than the candidate; otherwise the held symbols forecast to
    fall past the threshold, all of them or only the worst (the first symbol of a tie).

    ``limit_bps`` (TRADE_ORDER_TYPE=limit, docs/trading.md "Execution"): each order is a
    limit at the decision's close moved by that many basis points against it (a buy
    above, a sell below; in cents). It fills at the open, moved by the slippage but never
    past the limit, when the open is through the limit; else, unless ``opening_only``
    (opg), at the limit when the session's low (a buy) or high (a sell) reaches it; else
    not at all.
    """
    slip = SLIPPAGE / 10_000
    table = bars.assign(forecast=forecasts.to_numpy())
    sessions = {
        day.date(): {
            r.symbol: (r.open, r.close, r.forecast, r.high, r.low)
            for r in rows.itertuples(index=False)
        }
        for day, rows in table.groupby("date", sort=True)
    }

    def offered(side: str, bar: tuple, decided_close: float) -> float | None:
        open_, _, _, high, low = bar
        if limit_bps is None:
            return open_ * (1 + slip) if side == "buy" else open_ * (1 - slip)
        if side == "buy":
            limit = round(decided_close * (1 + limit_bps / 10_000), 2)
            if open_ <= limit:
                return min(open_ * (1 + slip), limit)
            return limit if low <= limit and not opening_only else None
        limit = round(decided_close * (1 - limit_bps / 10_000), 2)
        if open_ >= limit:
            return max(open_ * (1 - slip), limit)
        return limit if high >= limit and not opening_only else None

    cash, shares, last = CASH, {}, {}
    sells: list[str] = []
    buy: tuple[str, int] | None = None
    decided: dict[str, float] = {}  # the decision day's closes
    fills, equity = [], []
    days = list(sessions)
    for n, day in enumerate(days):
        bars_today = sessions[day]
        for symbol in sorted(sells):
            if symbol in bars_today and symbol in shares:
                price = offered("sell", bars_today[symbol], decided.get(symbol, math.nan))
                if price is None:
                    continue
                quantity = shares.pop(symbol)
                cash += quantity * (price - FEE)
                fills.append((day, symbol, "sell", quantity, price))
        if buy is not None and buy[0] in bars_today:
            symbol, wanted = buy
            price = offered("buy", bars_today[symbol], decided[symbol])
            quantity = 0 if price is None else min(wanted, math.floor(cash / (price + FEE)))
            if quantity >= 1:
                cash -= quantity * (price + FEE)
                shares[symbol] = shares.get(symbol, 0) + quantity
                fills.append((day, symbol, "buy", float(quantity), price))
        last.update({s: bar[1] for s, bar in bars_today.items()})
        equity.append(cash + sum(q * last[s] for s, q in shares.items()))
        if n == len(days) - 1:
            break
        decided = {s: bar[1] for s, bar in bars_today.items()}
        change = {
            s: (bar[2] - bar[1]) / bar[1] for s, bar in bars_today.items() if not math.isnan(bar[2])
        }
        open_to_buy = sorted(
            ((-c, s) for s, c in change.items() if s not in shares and c >= THRESHOLD)
        )
        candidate = open_to_buy[0][1] if open_to_buy else None
        held = [s for s in shares if s in change]
        losers = sorted((change[s], s) for s in held if change[s] < -THRESHOLD)
        if sell == "worst_loser":
            losers = losers[:1]
        sells = [s for _, s in losers]
        if rule == "rotation" and candidate is not None:
            sells = [s for s in held if change[s] < change[candidate]]
        buy = None
        if candidate is not None:
            quantity = math.floor(min(cash, BUDGET) / bars_today[candidate][1])
            buy = (candidate, quantity) if quantity >= 1 else None
    return fills, np.array(equity)


@pytest.mark.parametrize(("rule", "sell"), COMBINATIONS)
def test_each_rule_agrees_with_an_independent_event_loop_to_the_cent(sample, noisy, rule, sell):
    ours = simulate(Market.from_frame(sample, noisy), rules(rule, sell))
    theirs, equity = event_loop(sample, noisy, rule, sell)
    mine = [(f.day, f.symbol, f.side, f.quantity) for f in ours.fills]
    assert mine == [fill[:4] for fill in theirs] and len(mine) > 100
    assert [f.price for f in ours.fills] == pytest.approx([fill[4] for fill in theirs], rel=1e-12)
    assert np.abs(ours.equity - equity).max() < 0.005  # to the cent, every session


def test_rotation_sells_what_the_threshold_rule_keeps(sample, noisy):
    """The rotation's sales of positions forecast to rise (below the candidate): many, and
    none under the threshold rule, which sells only forecast losses."""
    market = Market.from_frame(sample, noisy)
    change = (market.predicted - market.close) / market.close
    index = {d: i for i, d in enumerate(market.days)}

    def forecast_at_sale(fill):
        return change[index[fill.decided], market.symbols.index(fill.symbol)]

    for rule, expected in (("threshold", False), ("rotation", True)):
        sells = [f for f in simulate(market, rules(rule)).fills if f.side == "sell"]
        rising = [f for f in sells if forecast_at_sale(f) >= -THRESHOLD]
        assert bool(rising) is expected and (len(rising) > 50 or not expected)
    worst = [f for f in simulate(market, rules("threshold", "worst_loser")).fills]
    decided = pd.Series([f.decided for f in worst if f.side == "sell"])
    assert decided.value_counts().max() == 1  # one sale a session at most


@pytest.mark.parametrize(("rule", "sell"), COMBINATIONS)
def test_naive_column_never_buys_under_any_rule_and_its_shortcut_is_the_walk(sample, rule, sell):
    naive = Market.from_frame(sample, sample["close"])
    assert never_buys(naive, THRESHOLD)
    full = walk(naive, rules(rule, sell))
    short = simulate(naive, rules(rule, sell))
    assert full.fills == short.fills == [] and full.decisions == 0
    assert np.array_equal(full.equity, short.equity)
    comparison = compare(sample, sma_forecasts(sample), rules(rule, sell))
    assert comparison.figures["naive"]["trades"] == 0
    assert comparison.figures["naive"]["sessions_past_threshold"] == 0
    assert comparison.figures["model"]["trades"] > 20


# The live stage, on the example.


@pytest.mark.parametrize("rule", ["threshold", "rotation"])
def test_live_rotation_sells_tsla_the_day_googl_is_bought(make_settings, tmp_path, rule):
    ctx = make_ctx(make_settings, tmp_path, TRADE_THRESHOLD="0.001", TRADE_RULE=rule)
    flat = {"AAPL": 0.0, "COKE": 0.0, "GOOGL": 0.0, "YHOO": 0.0}
    predict(ctx, date(2017, 6, 5), {**flat, "TSLA": 0.01})
    assert trade.run(ctx, as_of=date(2017, 6, 5)).decisions["TSLA"] == "buy"
    predict(ctx, date(2017, 6, 6), {**flat, "GOOGL": 0.00112, "TSLA": 0.00076})
    done = trade.run(ctx, as_of=date(2017, 6, 6))
    reasons = {
        r["symbol"]: r["reason"]
        for r in rows(ctx, trade_decisions, trade_decisions.c.decision_date == date(2017, 6, 6))
    }
    assert done.decisions["GOOGL"] == "buy" and done.threshold_not_reached is None
    assert done.largest_expected_change == pytest.approx(0.00112)
    if rule == "threshold":
        assert done.decisions["TSLA"] == "hold"
        assert reasons["TSLA"] == "held; predicted +0.076%: keep"
    else:
        assert done.decisions["TSLA"] == "sell"
        assert reasons["TSLA"] == (
            "held, predicted +0.076%, below the candidate GOOGL's +0.112%: sell all (rotation)"
        )
        assert {o.symbol: o.side for o in done.orders} == {"GOOGL": "buy", "TSLA": "sell"}


# The settings.


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("TRADE_RULE", "rotate", "'threshold' or 'rotation'"),
        ("TRADE_SELL", "worst", "'all_losers' or 'worst_loser'"),
    ],
)
def test_an_unknown_rule_or_sell_is_a_configuration_error(tmp_path, name, value, allowed):
    done = run_in_process(clean_environ({"MLOPS_HOME": str(tmp_path), name: value}), "trade")
    assert done.returncode == 2
    (line,) = [x for x in done.stderr.splitlines() if name in x]
    assert line.endswith(f"Setting {name} is invalid: Input should be {allowed} (got {value!r}).")


def test_rule_settings_are_read_in_any_case(make_settings, tmp_path):
    settings = make_settings(tmp_path, TRADE_RULE=" Rotation", TRADE_SELL="WORST_LOSER")
    assert (settings.trade_rule, settings.trade_sell) == ("rotation", "worst_loser")
    chosen = backtest.rules_from(settings)
    assert (chosen.rule, chosen.sell) == ("rotation", "worst_loser")
    default = backtest.rules_from(make_settings(tmp_path))
    assert (default.rule, default.sell) == ("threshold", "all_losers")


# "A default that trades or says why not."


def test_the_backtest_says_when_no_forecast_reaches_the_threshold(sample):
    timid = sample["close"] * 1.004  # +0.4 %: never the 0.5 % threshold
    timid.iloc[700] = sample["close"].iloc[700] * 1.0045  # the largest, on one day
    quiet = compare(sample, timid, rules())
    day, symbol = sample["date"].iloc[700].date(), sample["symbol"].iloc[700]
    assert quiet.runs["model"].fills == []
    assert quiet.figures["model"]["sessions_past_threshold"] == 0
    assert quiet.figures["model"]["largest_expected_change"] == pytest.approx(0.0045)
    note = report.threshold_note(quiet)
    assert note == (
        "No forecast of the model reached the buy threshold +0.500% in any of the "
        f"{len(quiet.market.days)} sessions (the largest expected change was +0.450%, "
        f"{symbol} on {day}): the strategy never bought, and its column is cash throughout."
    )
    assert note in report.notes(quiet)
    table = {r["figure"]: r for r in report.table(quiet.figures, "v1")}
    assert table["sessions with a forecast at or past the threshold"]["model v1"] == "0"
    assert table["largest expected change forecast"]["model v1"] == "+0.450%"
    assert table["largest expected change forecast"]["buy-and-hold"] == "-"
    busy = compare(sample, sma_forecasts(sample), rules())
    assert report.threshold_note(busy) is None and busy.figures["model"]["trades"] > 0
    assert (
        busy.figures["model"]["sessions_past_threshold"]
        == reach(busy.market, THRESHOLD).sessions
        > 100
    )
    assert not any("No forecast" in n for n in report.notes(busy))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("rules-home")
    env = clean_environ({"MLOPS_HOME": str(folder)})
    assert run_in_process(env, "migrate").returncode == 0
    assert run_in_process(env, "data-prep", "--as-of", "2017-12-29").returncode == 0
    return env


def stand_in(monkeypatch, forecasts) -> None:
    """``--model champion``: version 7, trained up to 2017-05-31, forecasting by hand."""
    tags = {"dataset_version": "stand-in", "as_of": "2017-05-31"}
    ref = ModelRef(name="stock-close", version="7", run_id="", tags=tags)
    monkeypatch.setattr(backtest, "_model", lambda ctx, model: (ref, "stand-in"))
    monkeypatch.setattr(backtest, "_predict", lambda predictor, window: forecasts(window))


def result_of(done) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout[done.stdout.rfind("\n{\n") + 1 :])


def test_mlops_backtest_warns_when_the_champion_never_reaches_the_threshold(home, monkeypatch):
    stand_in(monkeypatch, lambda window: window["close"] * 1.001)
    done = run_in_process(home, "backtest")
    result = result_of(done)
    assert result["sessions"] == 147 and result["figures"]["model"]["trades"] == 0
    said = result["threshold_not_reached"]
    assert said.startswith(
        "No forecast of the model reached the buy threshold +0.500% in any of the 147 sessions"
    )
    warning, info = [x for x in done.stderr.splitlines() if "No forecast of the model" in x]
    assert "WARNING" in warning and warning.endswith(said)
    assert "INFO" in info and "Backtest v7" in info  # the summary line says it too
    assert said in result["notes"]
    assert (result["rule"], result["sell"], result["threshold"]) == (
        "threshold",
        "all_losers",
        0.005,
    )
    stand_in(monkeypatch, sma_forecasts)
    rotated = run_in_process({**home, "TRADE_RULE": "rotation"}, "backtest")
    result = result_of(rotated)
    assert result["threshold_not_reached"] is None and result["figures"]["model"]["trades"] > 0
    assert result["rule"] == "rotation" and "No forecast" not in rotated.stderr
    assert "Rule: rotation at a threshold of 0.500%, sell all_losers." in rotated.stderr


def test_mlops_trade_warns_when_no_forecast_of_the_day_reaches_the_threshold(
    make_settings, tmp_path
):
    ctx = make_ctx(make_settings, tmp_path)
    env = clean_environ({"MLOPS_HOME": str(tmp_path)})
    predict(ctx, date(2017, 6, 1), {"AAPL": 0.003, "GOOGL": 0.001, "TSLA": -0.02})
    done = run_in_process(env, "trade", "--as-of", "2017-06-01")
    result = result_of(done)
    said = (
        "No forecast for 2017-06-01 reaches TRADE_THRESHOLD +0.500%: the largest expected "
        "change is +0.300% (AAPL), so nothing can be bought today"
    )
    assert result["threshold_not_reached"] == said
    assert result["largest_expected_change"] == pytest.approx(0.003)
    (warning,) = [x for x in done.stderr.splitlines() if "No forecast" in x]
    assert "WARNING" in warning and warning.endswith(said + ".")
    assert set(result["decisions"].values()) == {"hold"}
    predict(ctx, date(2017, 6, 2), {"AAPL": 0.003, "GOOGL": 0.02})
    done = run_in_process(env, "trade", "--as-of", "2017-06-02")
    result = result_of(done)
    assert result["threshold_not_reached"] is None and "No forecast" not in done.stderr
    assert result["largest_expected_change"] == pytest.approx(0.02)
    assert result["decisions"]["GOOGL"] == "buy"
