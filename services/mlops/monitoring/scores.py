"""The figures monitoring writes per model, version and symbol: how each version's realized
predictions did, the naive forecast's on the same rows, and paired tests between them.

Paired tests (Diebold-Mariano, :func:`mlops.metrics.diebold_mariano`) take each day's mean
absolute percentage error over the symbols both forecasts scored, so the series is one
value per day (symbols' errors on a day are correlated, days much less) and every symbol
weighs the same whatever its price. ``dm_p_naive`` is the one-sided p-value of "the version
beats the naive forecast", ``dm_p_champion`` that of "the version beats its model's
champion"; either needs :data:`MIN_DM_DAYS` paired days.
"""

from __future__ import annotations

import pandas as pd

from mlops.metrics import diebold_mariano, directional_accuracy, regression_metrics

MIN_DM_DAYS = 5  # fewer paired days than this leave the test's variance meaningless
PAIR_KEY = ["symbol", "prediction_date"]


def figures(frame: pd.DataFrame) -> dict[str, float]:
    """MAE, RMSE, MAPE, WMAPE, directional accuracy, the naive forecast's figures and n of
    realized predictions (``predicted_close``, ``last_close``, ``actual_close``).
    """
    actual, predicted, last = frame["actual_close"], frame["predicted_close"], frame["last_close"]
    model = regression_metrics(actual, predicted)
    naive = regression_metrics(actual, last)
    return {
        **model,
        "directional_accuracy": directional_accuracy(actual, predicted, last),
        **{f"naive_{name}": value for name, value in naive.items()},
        "n": float(len(frame)),
    }


def daily_error(frame: pd.DataFrame, column: str) -> pd.Series:
    """Each day's mean absolute percentage error of ``column`` against the actual close."""
    ape = (frame[column] - frame["actual_close"]).abs() / frame["actual_close"].abs()
    return ape.groupby(frame["prediction_date"]).mean().sort_index()


def dm_p_value(first: pd.Series, second: pd.Series) -> float | None:
    """One-sided p-value that ``first`` (daily errors) beats ``second`` on the same days."""
    if len(first) < MIN_DM_DAYS:
        return None
    return diebold_mariano(first.to_numpy(), second.to_numpy(), loss="absolute").p_value


def paired_tests(rows: pd.DataFrame, champion_rows: pd.DataFrame | None) -> dict[str, float]:
    """``dm_p_naive`` and, given the champion's rows of the same model, ``dm_p_champion``."""
    tests: dict[str, float] = {}
    p_naive = dm_p_value(daily_error(rows, "predicted_close"), daily_error(rows, "last_close"))
    if p_naive is not None:
        tests["dm_p_naive"] = p_naive
    if champion_rows is not None and not champion_rows.empty:
        paired = rows.merge(
            champion_rows[[*PAIR_KEY, "predicted_close"]],
            on=PAIR_KEY,
            suffixes=("", "_champion"),
        )
        if not paired.empty:
            p_champion = dm_p_value(
                daily_error(paired, "predicted_close"),
                daily_error(paired, "predicted_close_champion"),
            )
            if p_champion is not None:
                tests["dm_p_champion"] = p_champion
    return tests
