"""Regression metrics on prices, shared by training and monitoring."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.ArrayLike


def regression_metrics(actual: Array, predicted: Array) -> dict[str, float]:
    """MAE, RMSE and MAPE (as a fraction) of predicted against actual prices."""
    y = np.asarray(actual, dtype="float64")
    p = np.asarray(predicted, dtype="float64")
    if y.shape != p.shape or y.size == 0:
        raise ValueError("actual and predicted must be non-empty and of the same shape")
    err = p - y
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err) / np.abs(y))),
    }
