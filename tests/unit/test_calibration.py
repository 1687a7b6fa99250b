"""The reliability curve's bins and the expected calibration error, by hand."""

from __future__ import annotations

import pytest

from mlops.metrics import expected_calibration_error, reliability_curve


def test_bins_are_right_closed_with_their_counts_and_empty_bins_kept():
    # 0.5 is in the bin (0.4, 0.5]; 0.0 in the first; 1.0 in the last.
    probability = [0.0, 0.05, 0.5, 0.52, 0.58, 1.0]
    actual = [0, 0, 1, 0, 1, 1]
    curve = reliability_curve(actual, probability)
    assert len(curve) == 10
    assert [b.n for b in curve] == [2, 0, 0, 0, 1, 2, 0, 0, 0, 1]
    assert curve[1].mean_probability is None and curve[1].observed_rate is None
    assert (curve[4].low, curve[4].high, curve[4].observed_rate) == (
        pytest.approx(0.4),
        pytest.approx(0.5),
        1.0,
    )
    assert curve[5].mean_probability == pytest.approx(0.55) and curve[5].observed_rate == 0.5
    # ECE: the bins' gaps weighted by their counts.
    expected = (2 * 0.025 + 1 * 0.5 + 2 * 0.05 + 1 * 0.0) / 6
    assert expected_calibration_error(curve) == pytest.approx(expected)


def test_no_forecast_has_no_error():
    assert expected_calibration_error(reliability_curve([], [])) is None
