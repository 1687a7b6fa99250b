"""The information coefficient: each session's cross-sectional correlation, checked
against scipy, and its summary (mean, standard deviation, ICIR, t-statistic)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops.metrics import daily_ic, information_coefficients, summarise_ic


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    days = np.repeat(pd.bdate_range("2020-01-01", periods=40), 7)
    realised = rng.normal(0, 0.02, days.size)
    predicted = 0.3 * realised + rng.normal(0, 0.02, days.size)
    frame = pd.DataFrame({"day": days, "predicted": predicted, "realised": realised})
    frame.loc[5, "predicted"] = np.nan  # a missing prediction is left out of its day
    return frame.sample(frac=1.0, random_state=1)  # order must not matter


def _scipy(frame: pd.DataFrame, test) -> pd.Series:
    out = {}
    for day, rows in frame.dropna().groupby("day"):
        out[day] = test(rows["predicted"], rows["realised"])[0]
    return pd.Series(out, dtype="float64")


@pytest.mark.parametrize(("rank", "test"), [(False, stats.pearsonr), (True, stats.spearmanr)])
def test_each_session_equals_scipy(panel, rank, test):
    ours = daily_ic(panel["day"], panel["predicted"], panel["realised"], rank=rank)
    expected = _scipy(panel, test)
    assert list(ours.index) == sorted(expected.index)
    np.testing.assert_allclose(ours.to_numpy(), expected.sort_index().to_numpy(), atol=1e-12)


def test_summary_is_mean_std_icir_and_t(panel):
    series = daily_ic(panel["day"], panel["predicted"], panel["realised"])
    ic = summarise_ic(series)
    values = series.to_numpy()
    assert ic.sessions == 40
    assert ic.mean == pytest.approx(values.mean())
    assert ic.std == pytest.approx(values.std(ddof=1))
    assert ic.ir == pytest.approx(values.mean() / values.std(ddof=1))
    assert ic.t_statistic == pytest.approx(stats.ttest_1samp(values, 0.0).statistic)
    assert ic.mean > 0.1  # the forecast carries signal


def test_sessions_without_spread_or_symbols_have_no_ic():
    frame = pd.DataFrame(
        {
            "day": ["a", "a", "a", "b", "c", "c"],
            "predicted": [0.01, 0.01, 0.01, 0.02, 0.01, 0.03],  # a: flat, b: one symbol
            "realised": [0.0, 0.02, -0.01, 0.01, -0.01, 0.02],
        }
    )
    series = daily_ic(frame["day"], frame["predicted"], frame["realised"])
    assert math.isnan(series["a"]) and math.isnan(series["b"])
    assert series["c"] == pytest.approx(1.0)
    figures = information_coefficients(frame["day"], frame["predicted"], frame["realised"])
    assert figures["ic_sessions"] == 1.0 and figures["ic_mean"] == pytest.approx(1.0)
    assert figures["ic_std"] is None and figures["ic_ir"] is None and figures["rank_ic_t"] is None
