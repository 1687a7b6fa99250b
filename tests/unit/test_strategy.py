"""The threshold strategy on hand-made cases."""

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
