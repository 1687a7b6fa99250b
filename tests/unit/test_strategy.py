"""The trading rules (threshold, rotation; all losers or the worst) on hand-made cases."""

import pytest

from mlops.trading.strategy import Signal, decide


def sig(symbol: str, change: float, close: float = 100.0) -> Signal:
    return Signal(symbol, close * (1 + change), close)


def actions(decisions):
    return {d.symbol: (d.action, d.quantity) for d in decisions}


def test_buys_only_the_highest_expected_gain_in_whole_shares():
    decisions = decide(
        [sig("AAA", 0.006), sig("BBB", 0.02, close=300.0), sig("CCC", 0.001)],
        positions={},
        cash=1_000.0,
        threshold=0.005,
        max_position_value=10_000.0,
    )
    assert actions(decisions) == {"AAA": ("hold", 0), "BBB": ("buy", 3.0), "CCC": ("hold", 0)}
    reasons = {d.symbol: d.reason for d in decisions}
    assert "BBB is higher" in reasons["AAA"]
    assert "within" in reasons["CCC"]


def test_gain_exactly_at_threshold_counts_and_loss_exactly_at_minus_threshold_does_not():
    change = 0.25 / 50.0  # exactly 0.5 % in binary-exact steps
    gain = decide(
        [Signal("AAA", 50.25, 50.0)], {}, 1_000.0, threshold=change, max_position_value=1e9
    )
    assert actions(gain)["AAA"][0] == "buy"
    loss = decide(
        [Signal("AAA", 49.75, 50.0)], {"AAA": 5.0}, 0.0, threshold=change, max_position_value=1e9
    )
    assert actions(loss)["AAA"] == ("hold", 0)


def test_sells_all_of_a_held_position_predicted_to_fall():
    decisions = decide(
        [sig("AAA", -0.01), sig("BBB", -0.001)],
        positions={"AAA": 7.0, "BBB": 3.0},
        cash=0.0,
        threshold=0.005,
        max_position_value=10_000.0,
    )
    assert actions(decisions) == {"AAA": ("sell", 7.0), "BBB": ("hold", 0)}


def test_held_symbol_is_not_bought_again_and_next_best_is_bought():
    decisions = decide(
        [sig("AAA", 0.03), sig("BBB", 0.01)],
        positions={"AAA": 1.0},
        cash=500.0,
        threshold=0.005,
        max_position_value=10_000.0,
    )
    assert actions(decisions) == {"AAA": ("hold", 0), "BBB": ("buy", 5.0)}


def test_budget_is_capped_by_max_position_value_and_cash():
    capped = decide([sig("AAA", 0.01)], {}, 50_000.0, threshold=0.005, max_position_value=1_000.0)
    assert actions(capped)["AAA"] == ("buy", 10.0)
    poor = decide([sig("AAA", 0.01)], {}, 99.0, threshold=0.005, max_position_value=1_000.0)
    assert actions(poor)["AAA"] == ("hold", 0)
    assert "buys no share" in poor[0].reason


def test_held_symbol_without_prediction_is_kept():
    decisions = decide([], {"YHOO": 10.0}, 0.0, threshold=0.005, max_position_value=1_000.0)
    assert actions(decisions) == {"YHOO": ("hold", 0)}
    assert "no prediction" in decisions[0].reason


@pytest.mark.parametrize("change", [-0.02, 0.0, 0.004])
def test_nothing_is_bought_below_the_threshold(change):
    decisions = decide([sig("AAA", change)], {}, 1e6, threshold=0.005, max_position_value=1e4)
    assert [d.action for d in decisions] == ["hold"]


# The rules of issue 17: rotation, and selling the worst loser only.

# 2017-06-06 with the champion at TRADE_THRESHOLD=0.001: GOOGL, not held, forecast +0.112 %;
# TSLA, held, forecast +0.076 %. Closes of that day.
GOOGL_0606 = sig("GOOGL", 0.00112, close=1003.0)
TSLA_0606 = sig("TSLA", 0.00076, close=352.85)


def test_threshold_rule_keeps_a_held_position_below_the_candidate():
    decisions = decide(
        [GOOGL_0606, TSLA_0606],
        {"TSLA": 28.0},
        90_000.0,
        threshold=0.001,
        max_position_value=10_000.0,
        rule="threshold",
    )
    assert actions(decisions) == {"GOOGL": ("buy", 9.0), "TSLA": ("hold", 0)}
    assert {d.symbol: d.reason for d in decisions}["TSLA"] == "held; predicted +0.076%: keep"


def test_rotation_sells_a_held_position_forecast_lower_than_the_candidate_the_same_day():
    decisions = decide(
        [GOOGL_0606, TSLA_0606],
        {"TSLA": 28.0},
        90_000.0,
        threshold=0.001,
        max_position_value=10_000.0,
        rule="rotation",
    )
    assert actions(decisions) == {"GOOGL": ("buy", 9.0), "TSLA": ("sell", 28.0)}
    reasons = {d.symbol: d.reason for d in decisions}
    assert reasons["TSLA"] == (
        "held, predicted +0.076%, below the candidate GOOGL's +0.112%: sell all (rotation)"
    )
    assert reasons["GOOGL"] == "highest predicted gain +0.112% (>= +0.100%): buy 9 at about 1003.00"


def test_rotation_keeps_what_is_forecast_at_least_as_high_and_needs_a_candidate():
    signals = [sig("AAA", 0.02), sig("BBB", 0.01), sig("CCC", 0.01), sig("DDD", -0.002)]
    held = {"AAA": 5.0, "CCC": 5.0, "DDD": 5.0}
    decisions = decide(
        signals, held, 10_000.0, threshold=0.005, max_position_value=1_000.0, rule="rotation"
    )
    # BBB is the candidate (AAA is held); CCC ties with it and is kept, DDD is below it.
    assert actions(decisions) == {
        "AAA": ("hold", 0),
        "BBB": ("buy", 10.0),
        "CCC": ("hold", 0),
        "DDD": ("sell", 5.0),
    }
    reasons = {d.symbol: d.reason for d in decisions}
    assert reasons["AAA"] == "held; predicted +2.000%, not below the candidate BBB's +1.000%: keep"
    # No candidate at or past the threshold: nothing to rotate into, only losers are sold.
    quiet = [sig("AAA", 0.004), sig("BBB", -0.001), sig("CCC", -0.01)]
    decisions = decide(
        quiet,
        {"BBB": 5.0, "CCC": 5.0},
        1e4,
        threshold=0.005,
        max_position_value=1e3,
        rule="rotation",
    )
    assert actions(decisions) == {"AAA": ("hold", 0), "BBB": ("hold", 0), "CCC": ("sell", 5.0)}
    assert {d.symbol: d.reason for d in decisions}["BBB"] == (
        "held; predicted -0.100%: keep (no candidate at +0.500% to rotate to)"
    )


def test_worst_loser_sells_exactly_one_and_all_losers_every_one():
    signals = [sig("AAA", -0.01), sig("BBB", -0.03), sig("CCC", -0.02), sig("DDD", -0.001)]
    held = {"AAA": 1.0, "BBB": 2.0, "CCC": 3.0, "DDD": 4.0}
    kwargs = {"threshold": 0.005, "max_position_value": 1e4}
    every = decide(signals, held, 0.0, sell="all_losers", **kwargs)
    assert actions(every) == {
        "AAA": ("sell", 1.0),
        "BBB": ("sell", 2.0),
        "CCC": ("sell", 3.0),
        "DDD": ("hold", 0),
    }
    worst = decide(signals, held, 0.0, sell="worst_loser", **kwargs)
    assert [d.symbol for d in worst if d.action == "sell"] == ["BBB"]
    assert actions(worst)["BBB"] == ("sell", 2.0)
    reasons = {d.symbol: d.reason for d in worst}
    assert reasons["BBB"] == (
        "held and predicted loss -3.000% is the worst below -0.500%: sell all (worst loser only)"
    )
    assert reasons["AAA"] == (
        "held and predicted loss -1.000% is below -0.500%, but BBB's -3.000% is worse: "
        "keep (worst loser only)"
    )
    # A loser that is not held is not the worst loser: the worst *held* one is sold.
    unheld = decide([*signals, sig("EEE", -0.09)], held, 0.0, sell="worst_loser", **kwargs)
    assert [d.symbol for d in unheld if d.action == "sell"] == ["BBB"]


def test_risk_limits_still_bind_under_rotation():
    from dataclasses import replace

    from mlops.trading.risk import Portfolio, RiskLimits, apply_limits

    signals = [GOOGL_0606, TSLA_0606, sig("AAPL", 0.002, close=153.0)]
    positions = {"TSLA": 28.0, "AAPL": 60.0}
    decisions = decide(
        signals, positions, 80_000.0, threshold=0.001, max_position_value=10_000.0, rule="rotation"
    )
    assert actions(decisions) == {
        "AAPL": ("hold", 0),
        "GOOGL": ("buy", 9.0),
        "TSLA": ("sell", 28.0),
    }
    prices = {s.symbol: s.last_close for s in signals}
    held = 28.0 * 352.85 + 60.0 * 153.0
    portfolio = Portfolio(80_000.0, 80_000.0 + held, held, 2, previous_equity=None)
    loose = RiskLimits(2, 1.0, 1e12, 0.0, 1.0)

    def checked(limits, book=portfolio):
        return actions(apply_limits(decisions, prices, book, limits))

    # The rotation's sell frees the second slot: the candidate is bought.
    assert checked(loose)["GOOGL"] == ("buy", 9.0)
    # One slot, still taken by AAPL after TSLA's sale: no buy; the sale stands.
    assert checked(replace(loose, max_open_positions=1)) == {
        "AAPL": ("hold", 0),
        "GOOGL": ("hold", 0),
        "TSLA": ("sell", 28.0),
    }
    # The order value cap cuts the buy.
    assert checked(replace(loose, max_order_value=5_000.0))["GOOGL"] == ("buy", 4.0)
    # The daily loss limit: no new position; the rotation's sale still goes.
    fallen = replace(portfolio, previous_equity=portfolio.equity / 0.9)
    blocked = checked(replace(loose, daily_loss_limit=0.05), fallen)
    assert blocked["GOOGL"] == ("hold", 0) and blocked["TSLA"] == ("sell", 28.0)


@pytest.mark.parametrize("rule", ["threshold", "rotation"])
@pytest.mark.parametrize("sell", ["all_losers", "worst_loser"])
def test_orders_only_decisions_are_the_orders_of_all_decisions_under_every_rule(rule, sell):
    import random

    rng = random.Random(17)
    for _ in range(300):
        symbols = rng.sample([f"S{i:02d}" for i in range(30)], rng.randint(0, 30))
        signals = [
            Signal(s, c * (1 + rng.gauss(0, 0.01)), c)
            for s in symbols
            for c in [rng.uniform(5, 500)]
        ]
        held = rng.sample([f"S{i:02d}" for i in range(30)], rng.randint(0, 5))
        positions = {s: float(rng.randint(0, 20)) for s in held}
        cash = rng.choice([0.0, 50.0, 5_000.0, 1e6])
        kwargs = {"threshold": 0.005, "max_position_value": 1e4, "rule": rule, "sell": sell}
        every = decide(signals, positions, cash, **kwargs)
        orders = decide(signals, positions, cash, orders_only=True, **kwargs)
        assert [d for d in orders if d.action != "hold"] == [d for d in every if d.action != "hold"]
        assert all(d in every for d in orders)


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="rule must be one of threshold, rotation"):
        decide([], {}, 0.0, threshold=0.005, max_position_value=1e4, rule="rotate")  # type: ignore[arg-type]
