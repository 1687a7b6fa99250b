"""A direction classifier as the trading model: its probability of a rise is the signal,
against TRADE_PROBABILITY_THRESHOLD (buy at or above it, sell below 1 minus it), under
both rules and the same risk limits, live (`mlops trade`) and in the backtest's
simulation. Hand-made signals throughout.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from mlops.db.schema import predictions, trade_decisions
from mlops.runs import utcnow
from mlops.trading import stage as trade
from mlops.trading.risk import RiskLimits
from mlops.trading.simulation import Costs, Market, Rules, reach, walk
from mlops.trading.strategy import Signal, decide

from .helpers import closes_on, make_ctx, rows

CLASSIFIER = "stock-direction"


def up(symbol: str, probability: float, close: float = 100.0) -> Signal:
    return Signal(symbol, None, close, probability=probability)


def actions(decisions):
    return {d.symbol: (str(d.action), d.quantity) for d in decisions}


def test_threshold_rule_buys_the_likeliest_rise_and_sells_below_one_minus_it():
    decisions = decide(
        [up("AAA", 0.56), up("BBB", 0.61, close=300.0), up("CCC", 0.50), up("DDD", 0.44)],
        positions={"CCC": 4.0, "DDD": 2.0},
        cash=1_000.0,
        threshold=0.55,
        max_position_value=10_000.0,
    )
    assert actions(decisions) == {
        "AAA": ("hold", 0),
        "BBB": ("buy", 3.0),
        "CCC": ("hold", 0),
        "DDD": ("sell", 2.0),
    }
    reasons = {d.symbol: d.reason for d in decisions}
    assert (
        reasons["BBB"] == "highest predicted gain P(rise) 0.610 (>= 0.550): buy 3 at about 300.00"
    )
    assert reasons["AAA"] == "predicted gain P(rise) 0.560, but BBB is higher"
    assert reasons["CCC"] == "held; predicted P(rise) 0.500: keep"
    assert reasons["DDD"] == "held and predicted loss P(rise) 0.440 is below 0.450: sell all"
    # A classifier predicts no close: the decisions carry no expected change.
    assert all(d.expected_change is None for d in decisions)


def test_the_levels_are_inclusive_as_the_regressors_are():
    at = decide([up("AAA", 0.55)], {}, 1_000.0, threshold=0.55, max_position_value=1e9)
    assert actions(at)["AAA"][0] == "buy"
    kept = decide([up("AAA", 0.45)], {"AAA": 1.0}, 0.0, threshold=0.55, max_position_value=1e9)
    assert actions(kept)["AAA"] == ("hold", 0)  # 0.45 is not below 1 - 0.55
    quiet = decide([up("AAA", 0.549)], {}, 1_000.0, threshold=0.55, max_position_value=1e9)
    assert quiet[0].reason == "predicted P(rise) 0.549 is between 0.450 and 0.550"


def test_rotation_sells_a_held_position_less_likely_to_rise_than_the_candidate():
    signals = [up("AAA", 0.62), up("BBB", 0.58), up("CCC", 0.66), up("DDD", 0.30), up("EEE", 0.40)]
    held = {"BBB": 5.0, "CCC": 1.0, "DDD": 2.0, "EEE": 3.0}
    rotated = decide(
        signals, held, 1_000.0, threshold=0.55, max_position_value=1e9, rule="rotation"
    )
    assert actions(rotated) == {
        "AAA": ("buy", 10.0),
        "BBB": ("sell", 5.0),
        "CCC": ("hold", 0),  # more likely to rise than the candidate: kept
        "DDD": ("sell", 2.0),
        "EEE": ("sell", 3.0),
    }
    reason = {d.symbol: d.reason for d in rotated}["BBB"]
    assert reason == (
        "held, predicted P(rise) 0.580, below the candidate AAA's P(rise) 0.620: sell all "
        "(rotation)"
    )
    # No candidate: under worst_loser exactly one loser goes, the least likely to rise.
    no_candidate = [s for s in signals if s.symbol != "AAA"]
    worst = decide(
        no_candidate, held, 0.0, threshold=0.55, max_position_value=1e9, sell="worst_loser"
    )
    assert [d.symbol for d in worst if str(d.action) == "sell"] == ["DDD"]


def test_signals_of_both_kinds_are_never_mixed():
    with pytest.raises(ValueError, match="mix"):
        decide([up("AAA", 0.6), Signal("BBB", 101.0, 100.0)], {}, 1.0, threshold=0.5,
               max_position_value=1.0)  # fmt: skip


def _market(probabilities: np.ndarray) -> Market:
    days = [date(2017, 6, d) for d in (1, 2, 5)]
    close = np.array([[100.0, 50.0], [101.0, 49.0], [102.0, 48.0]])
    return Market(days, ["AAA", "BBB"], close.copy(), close, close.copy(), probabilities, True)


@pytest.mark.parametrize("rule", ["threshold", "rotation"])
def test_the_backtest_trades_probabilities_under_the_risk_limits(rule):
    market = _market(np.array([[0.60, 0.52], [0.40, 0.70], [0.50, 0.50]]))
    capped = RiskLimits(max_order_value=1_000.0, price_buffer=0.0)
    rules = Rules(0.005, 10_000.0, capped, 100_000.0, Costs(0.0), rule=rule)  # type: ignore[arg-type]
    assert rules.level(market) == 0.55  # the probability threshold, not TRADE_THRESHOLD
    sim = walk(market, rules)
    fills = [(f.day.day, f.symbol, f.side, f.quantity) for f in sim.fills]
    # Day 1: AAA at 0.60 bought, cut by the order cap to 1,000 / 100 = 10 shares (not 100).
    # Day 2: AAA at 0.40 is a loser under either rule; BBB at 0.70 bought, 1,000 / 49.
    assert fills == [(2, "AAA", "buy", 10.0), (5, "AAA", "sell", 10.0), (5, "BBB", "buy", 20.0)]
    found = reach(market, rules.level(market))
    assert (found.sessions, found.largest, found.symbol) == (2, 0.70, "BBB")


def _predict_probabilities(ctx, day: date, probabilities: dict[str, float]) -> None:
    """The day's dataset and a classifier champion's rows, as batch-infer writes them."""
    from mlops.data_prep import stage as data_prep

    data_prep.run(ctx, as_of=day)
    closes = closes_on(ctx, day)
    with ctx.engine.begin() as conn:
        conn.execute(
            predictions.insert(),
            [
                {
                    "symbol": symbol,
                    "prediction_date": day,
                    "model_name": CLASSIFIER,
                    "model_version": "1",
                    "role": "champion",
                    "predicted_close": None,
                    "last_close": float(closes[symbol]),
                    "expected_change": None,
                    "score_kind": "probability",
                    "score": p,
                    "dataset_version": "test",
                    "created_at": utcnow(),
                }
                for symbol, p in probabilities.items()
            ],
        )


@pytest.mark.parametrize("rule", ["threshold", "rotation"])
def test_mlops_trade_trades_a_classifier_champion_within_the_risk_limits(
    make_settings, tmp_path, rule
):
    ctx = make_ctx(
        make_settings, tmp_path, MODEL_NAME=CLASSIFIER, TRADE_RULE=rule, RISK_MAX_ORDER_VALUE="2500"
    )
    flat = {"AAPL": 0.5, "COKE": 0.5, "GOOGL": 0.5, "YHOO": 0.5}
    first, second = date(2017, 6, 5), date(2017, 6, 6)
    _predict_probabilities(ctx, first, {**flat, "TSLA": 0.62})
    bought = trade.run(ctx, as_of=first)
    assert bought.decisions["TSLA"] == "buy" and bought.largest_probability == 0.62
    (decision,) = rows(ctx, trade_decisions, trade_decisions.c.action == "buy")
    assert decision["quantity"] == int(2500 // (decision["last_close"] * 1.01))  # the cap
    assert decision["predicted_close"] is None and decision["expected_change"] is None
    _predict_probabilities(ctx, second, {**flat, "GOOGL": 0.64, "TSLA": 0.57})
    done = trade.run(ctx, as_of=second)
    assert done.decisions["GOOGL"] == "buy"
    assert done.decisions["TSLA"] == ("sell" if rule == "rotation" else "hold")
    quiet = date(2017, 6, 7)
    _predict_probabilities(ctx, quiet, {**flat, "TSLA": 0.53, "GOOGL": 0.54})
    said = trade.run(ctx, as_of=quiet).threshold_not_reached
    assert said == (
        "No forecast for 2017-06-07 reaches TRADE_PROBABILITY_THRESHOLD 0.550: the largest "
        "probability of a rise is 0.540 (GOOGL), so nothing can be bought today"
    )


def test_the_probability_threshold_is_a_checked_setting(make_settings, tmp_path):
    from mlops.errors import ConfigError

    assert make_settings(tmp_path).trade_probability_threshold == 0.55
    with pytest.raises(ConfigError, match="TRADE_PROBABILITY_THRESHOLD"):
        make_settings(tmp_path, TRADE_PROBABILITY_THRESHOLD="0.4")
