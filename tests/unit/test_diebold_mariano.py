"""The Diebold-Mariano test against an independent implementation, and the paired tests
training runs on its holdout.

The independent reference: the DM statistic is the t-statistic of the mean loss
difference, i.e. of the constant in an OLS regression of the loss difference on a
constant, with a HAC (Newey-West) variance using a uniform kernel up to lag h - 1 and no
small-sample correction (statsmodels); the Harvey-Leybourne-Newbold factor
sqrt((n + 1 - 2h + h(h - 1) / n) / n) then scales it, and Student's t with n - 1 degrees
of freedom gives the p-values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from mlops.metrics import diebold_mariano
from mlops.training.stage import paired_tests


def reference(e1: np.ndarray, e2: np.ndarray, h: int, loss: str) -> tuple[float, float, float]:
    """Statistic, one-sided and two-sided p-values, computed with statsmodels."""
    d = np.abs(e1) - np.abs(e2) if loss == "absolute" else e1**2 - e2**2
    n = d.size
    fit = sm.OLS(d, np.ones(n)).fit(
        cov_type="HAC", cov_kwds={"maxlags": h - 1, "kernel": "uniform", "use_correction": False}
    )
    statistic = fit.params[0] / fit.bse[0] * np.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return (
        float(statistic),
        float(stats.t.cdf(statistic, n - 1)),
        float(2 * stats.t.sf(abs(statistic), n - 1)),
    )


def ma_errors(rng: np.random.Generator, n: int, h: int, scale: float) -> np.ndarray:
    """Errors of an h-step forecast: a moving average of order h - 1 (overlapping shocks)."""
    shocks = rng.normal(scale=scale, size=n + h - 1)
    return np.convolve(shocks, np.ones(h) / h, mode="valid")


@pytest.mark.parametrize("loss", ["absolute", "squared"])
@pytest.mark.parametrize(("n", "h"), [(60, 1), (60, 2), (40, 3), (250, 5), (8, 1)])
def test_statistic_and_p_values_match_statsmodels_within_1e_6(n: int, h: int, loss: str):
    rng = np.random.default_rng(n * 10 + h)
    e1, e2 = ma_errors(rng, n, h, 1.0), ma_errors(rng, n, h, 1.15)
    got = diebold_mariano(e1, e2, horizon=h, loss=loss)  # type: ignore[arg-type]
    statistic, p_one, p_two = reference(e1, e2, h, loss)
    assert got.n == n
    assert got.statistic == pytest.approx(statistic, abs=1e-6)
    assert got.p_value == pytest.approx(p_one, abs=1e-6)
    assert got.p_value_two_sided == pytest.approx(p_two, abs=1e-6)
    assert got.mean_loss_difference == pytest.approx(
        float(np.mean(np.abs(e1) - np.abs(e2) if loss == "absolute" else e1**2 - e2**2))
    )


def test_horizon_widens_the_variance_of_autocorrelated_losses():
    """With overlapping 5-step errors the loss differences are autocorrelated: counting
    the autocovariances (horizon 5) gives a less extreme statistic than pretending they
    are independent (horizon 1), and both still match the reference.
    """
    rng = np.random.default_rng(5)
    n, h = 200, 5
    e1, e2 = ma_errors(rng, n, h, 1.0), ma_errors(rng, n, h, 1.3)
    one, five = diebold_mariano(e1, e2, horizon=1), diebold_mariano(e1, e2, horizon=h)
    assert five.statistic == pytest.approx(reference(e1, e2, h, "absolute")[0], abs=1e-6)
    assert one.statistic < five.statistic < 0  # the first forecast is better either way
    assert one.p_value < five.p_value


def test_a_clearly_better_forecast_has_a_small_one_sided_p_value():
    rng = np.random.default_rng(1)
    truth_noise = rng.normal(size=120)
    good, bad = truth_noise * 0.5, truth_noise * 2.0 + rng.normal(size=120)
    test = diebold_mariano(good, bad)
    assert test.statistic < 0 and test.p_value < 0.001
    reverse = diebold_mariano(bad, good)
    assert reverse.p_value > 0.999
    assert reverse.p_value_two_sided == pytest.approx(test.p_value_two_sided)


def test_equal_losses_carry_no_evidence():
    errors = np.array([1.0, -2.0, 3.0, -0.5])
    test = diebold_mariano(errors, -errors)
    assert (test.statistic, test.p_value, test.p_value_two_sided) == (0.0, 0.5, 1.0)


@pytest.mark.parametrize(
    ("first", "second", "horizon"),
    [([1.0, 2.0], [1.0, 2.0], 1), ([1.0, 2.0, 3.0], [1.0, 2.0], 1), ([1, 2, 3], [3, 2, 1], 3)],
)
def test_bad_input_is_refused(first, second, horizon):
    with pytest.raises(ValueError):
        diebold_mariano(first, second, horizon=horizon)


def test_paired_tests_run_on_the_daily_mean_absolute_percentage_error():
    """Training's holdout test: one loss per day (the MAPE of that day's symbols), the
    candidate against each other forecast that exists.
    """
    rng = np.random.default_rng(3)
    days = pd.date_range("2017-03-01", periods=30, freq="B").repeat(4)
    actual = 100 + rng.normal(size=days.size).cumsum()
    holdout = pd.DataFrame({"date": days, "next_close": actual, "close": actual + 1.0})
    candidate = actual + rng.normal(scale=0.5, size=days.size)
    champion = actual + rng.normal(scale=0.7, size=days.size)
    found = paired_tests(
        holdout, candidate, {"naive": holdout["close"].to_numpy(), "champion": champion}
    )
    for name, other in (("naive", holdout["close"].to_numpy()), ("champion", champion)):
        daily = (
            pd.DataFrame(
                {
                    "day": days,
                    "c": np.abs(candidate - actual) / actual,
                    "o": np.abs(other - actual) / actual,
                }
            )
            .groupby("day")[["c", "o"]]
            .mean()
        )
        expected = diebold_mariano(daily["c"].to_numpy(), daily["o"].to_numpy())
        assert expected.n == 30
        assert found[f"dm_p_value_{name}"] == pytest.approx(expected.p_value, abs=1e-12)
        assert found[f"dm_statistic_{name}"] == pytest.approx(expected.statistic, abs=1e-12)
    without_champion = paired_tests(
        holdout, candidate, {"naive": holdout["close"].to_numpy(), "champion": None}
    )
    assert set(without_champion) == {"dm_p_value_naive", "dm_statistic_naive"}
