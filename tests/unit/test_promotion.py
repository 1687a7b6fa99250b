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


def test_p_values_are_reported_but_not_required_by_default():
    d = decide(m(0.007), m(0.010), m(0.008), p_value_naive=0.2, p_value_champion=0.4)
    assert d.promote
    assert (d.p_value_naive, d.p_value_champion, d.max_p_value) == (0.2, 0.4, None)
    assert "Diebold-Mariano p 0.2000" in d.reason and "Diebold-Mariano p 0.4000" in d.reason


def test_with_a_maximum_p_value_significance_is_required_against_the_naive_forecast():
    d = decide(m(0.009), m(0.010), None, p_value_naive=0.12, max_p_value=0.05)
    assert not d.promote and d.beats_naive
    assert "not significantly against the naive forecast (p 0.1200 > 0.05)" in d.reason
    assert "PROMOTION_MAX_P_VALUE" in d.reason
    assert decide(m(0.009), m(0.010), None, p_value_naive=0.05, max_p_value=0.05).promote


def test_with_a_maximum_p_value_significance_is_required_against_the_champion_too():
    d = decide(
        m(0.007), m(0.010), m(0.008), p_value_naive=0.01, p_value_champion=0.3, max_p_value=0.05
    )
    assert not d.promote
    assert "the champion (p 0.3000 > 0.05)" in d.reason and "naive forecast (p" not in d.reason
    both = decide(
        m(0.007), m(0.010), m(0.008), p_value_naive=0.2, p_value_champion=0.3, max_p_value=0.05
    )
    assert "the naive forecast (p 0.2000 > 0.05) nor the champion (p 0.3000 > 0.05)" in both.reason
    assert decide(
        m(0.007), m(0.010), m(0.008), p_value_naive=0.01, p_value_champion=0.04, max_p_value=0.05
    ).promote


def test_a_missing_p_value_fails_a_required_significance():
    d = decide(m(0.009), m(0.010), None, max_p_value=0.5)
    assert not d.promote and "the naive forecast (no p-value)" in d.reason
    # Without a champion, its p-value is not asked for (and not kept).
    alone = decide(
        m(0.009), m(0.010), None, p_value_naive=0.01, p_value_champion=0.9, max_p_value=0.05
    )
    assert alone.promote and alone.p_value_champion is None


def test_losing_on_the_metric_is_said_first_whatever_the_p_values():
    d = decide(m(0.011), m(0.010), None, p_value_naive=0.99, max_p_value=0.05)
    assert not d.promote and not d.beats_naive
    assert (
        d.reason
        == "holdout mape 0.011000 does not beat the naive 0.010000 (Diebold-Mariano p 0.9900)"
    )


def _logged_run(metrics: dict[str, float], tags: dict[str, str]):
    from types import SimpleNamespace

    return SimpleNamespace(data=SimpleNamespace(metrics=metrics, tags=tags))


OLD_RUN = {  # what a training run logged before WMAPE and the Diebold-Mariano tests
    **{f"{s}_{k}": v for s in ("train", "validation", "holdout") for k, v in m(0.009).items()},
    **{f"baseline_holdout_{k}": v for k, v in m(0.010).items()},
}


def test_an_older_run_without_the_new_figures_is_read_back():
    from mlops.training.stage import _evaluation_from_run

    reason = "holdout mape 0.009000 beats the naive 0.010000"
    evaluation = _evaluation_from_run(
        _logged_run(OLD_RUN, {"promotion": "promoted", "promotion_reason": reason})
    )
    assert evaluation.tests == {} and evaluation.champion_holdout is None
    assert evaluation.per_split["holdout"] == m(0.009)
    assert evaluation.decision.promote and evaluation.decision.reason == reason
    assert evaluation.decision.p_value_naive is None and not evaluation.challenger


def test_a_run_with_the_tests_is_read_back_with_its_p_values():
    from mlops.training.stage import _evaluation_from_run

    metrics = {
        **OLD_RUN,
        "holdout_wmape": 0.0085,
        "baseline_holdout_wmape": 0.0095,
        **{f"champion_holdout_{k}": v for k, v in m(0.0085).items()},
        "dm_p_value_naive": 0.03,
        "dm_statistic_naive": -1.9,
        "dm_p_value_champion": 0.4,
        "dm_statistic_champion": -0.2,
    }
    evaluation = _evaluation_from_run(
        _logged_run(metrics, {"promotion": "rejected", "promotion_reason": "lost"})
    )
    assert evaluation.tests == {
        "dm_p_value_naive": 0.03,
        "dm_statistic_naive": -1.9,
        "dm_p_value_champion": 0.4,
        "dm_statistic_champion": -0.2,
    }
    assert evaluation.per_split["holdout"]["wmape"] == 0.0085
    decision = evaluation.decision
    assert not decision.promote and decision.reason == "lost"
    assert (decision.p_value_naive, decision.p_value_champion) == (0.03, 0.4)
    assert evaluation.challenger  # lost to the champion, beat the naive forecast
