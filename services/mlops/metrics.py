"""Regression metrics on prices, shared by training and monitoring."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.ArrayLike


def regression_metrics(actual: Array, predicted: Array) -> dict[str, float]:
    """MAE, RMSE, MAPE and WMAPE (fractions) of predicted against actual prices.

    WMAPE is the sum of absolute errors over the sum of absolute actuals: unlike MAPE it
    weighs each symbol by its price, so a cheap stock's percentage errors do not dominate.
    """
    y = np.asarray(actual, dtype="float64")
    p = np.asarray(predicted, dtype="float64")
    if y.shape != p.shape or y.size == 0:
        raise ValueError("actual and predicted must be non-empty and of the same shape")
    err = p - y
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err) / np.abs(y))),
        "wmape": float(np.sum(np.abs(err)) / np.sum(np.abs(y))),
    }


def directional_accuracy(actual: Array, predicted: Array, last: Array) -> float:
    """The share of forecasts that called the direction of the move from ``last`` right.

    A day the price did not move counts as right only for a forecast of no move.
    """
    y = np.asarray(actual, dtype="float64")
    p = np.asarray(predicted, dtype="float64")
    x = np.asarray(last, dtype="float64")
    if not (y.shape == p.shape == x.shape) or y.size == 0:
        raise ValueError("actual, predicted and last must be non-empty and of the same shape")
    return float(np.mean(np.sign(p - x) == np.sign(y - x)))
