"""The promotion rule: beat the naive baseline and the champion on the same holdout."""

from mlops.training.promotion import decide


def m(mape: float) -> dict[str, float]:
    return {"mape": mape, "mae": mape * 100, "rmse": mape * 120}


def test_first_model_beating_naive_is_promoted():
    d = decide(m(0.009), m(0.010), None)
    assert d.promote
    assert "beats the naive" in d.reason


def test_model_losing_to_naive_is_not_promoted_even_without_champion():
    d = decide(m(0.011), m(0.010), None)
    assert not d.promote
    assert "does not beat the naive" in d.reason


def test_model_must_also_beat_the_champion():
    d = decide(m(0.009), m(0.010), m(0.008))
    assert not d.promote
    assert "does not beat the champion" in d.reason
    assert decide(m(0.007), m(0.010), m(0.008)).promote


def test_a_tie_does_not_win():
    assert not decide(m(0.010), m(0.010), None).promote
    assert not decide(m(0.008), m(0.010), m(0.008)).promote


def test_decision_carries_its_numbers():
    d = decide(m(0.007), m(0.010), m(0.008))
    assert (d.metric, d.candidate, d.baseline, d.champion) == ("mape", 0.007, 0.010, 0.008)
