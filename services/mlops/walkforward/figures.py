"""The walk-forward's figures, overall and per retrain period, from the predictions that
served: forecast quality (MAPE and WMAPE against the naive forecast with the
Diebold-Mariano p-value, directional accuracy, IC and Rank IC) and trading (the live
strategy and risk code over the champions' predictions, with costs, beside the naive
forecast and buy-and-hold: :func:`mlops.trading.backtest.compare`).

Every figure comes from the one definition the stages use (``mlops.metrics``,
``mlops.trading.performance``); only rows whose next close is known by ``--to`` are scored.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from mlops.contracts.columns import TARGET_COLUMN, TARGET_DATE_COLUMN
from mlops.contracts.predictions import on_rows
from mlops.metrics import (
    daily_ic,
    directional_accuracy,
    information_coefficients,
    regression_metrics,
)
from mlops.trading.backtest import Comparison
from mlops.training.stage import paired_tests
from mlops.walkforward.timeline import CHAMPION, Period


def window_rows(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """The dataset's rows of the decision sessions ``start``..``end``."""
    dates = frame["date"]
    rows = frame[(dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))]
    return rows.reset_index(drop=True)


def aligned(window: pd.DataFrame, served: pd.DataFrame, model: str, role: str) -> pd.Series:
    """``model``'s ``role`` predictions on the rows of ``window`` (NaN where none)."""
    mine = served[(served["model"] == model) & (served["role"] == role)]
    keyed = mine.set_index(["day", "symbol"])["prediction"]
    return pd.Series(on_rows(keyed, window), index=window.index)


def _scored(
    rows: pd.DataFrame, predicted: np.ndarray, end: date
) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows with a prediction whose next close is known by ``end``, and their
    predictions.
    """
    known = (
        ~np.isnan(predicted)
        & rows[TARGET_COLUMN].notna().to_numpy()
        & (rows[TARGET_DATE_COLUMN] <= pd.Timestamp(end)).to_numpy()
    )
    return rows[known].reset_index(drop=True), predicted[known]


def forecast_figures(rows: pd.DataFrame, predicted: np.ndarray, end: date) -> dict[str, Any]:
    """Forecast quality of ``predicted`` on ``rows`` whose next close is known by ``end``."""
    scored, p = _scored(rows, predicted, end)
    if scored.empty:
        return {"rows": 0, "sessions": 0}
    actual = scored[TARGET_COLUMN].to_numpy(dtype="float64")
    close = scored["close"].to_numpy(dtype="float64")
    model = regression_metrics(actual, p)
    naive = regression_metrics(actual, close)
    tests = paired_tests(scored, p, {"naive": close})
    return {
        "rows": len(scored),
        "sessions": int(scored["date"].nunique()),
        "mape": model["mape"],
        "wmape": model["wmape"],
        "naive_mape": naive["mape"],
        "naive_wmape": naive["wmape"],
        "dm_p_value_naive": tests.get("dm_p_value_naive"),
        "directional_accuracy": directional_accuracy(actual, p, close),
        **information_coefficients(scored["date"], p / close - 1.0, actual / close - 1.0),
    }


def daily_ic_rows(rows: pd.DataFrame, predicted: np.ndarray, end: date) -> pd.DataFrame:
    """Each scored session's IC and Rank IC (for the report's and dashboard's IC chart)."""
    scored, predicted_close = _scored(rows, predicted, end)
    close = scored["close"].to_numpy(dtype="float64")
    p = predicted_close / close - 1.0
    r = scored[TARGET_COLUMN].to_numpy(dtype="float64") / close - 1.0
    ic = daily_ic(scored["date"], p, r)
    rank = daily_ic(scored["date"], p, r, rank=True)
    return pd.DataFrame({"date": ic.index, "ic": ic.to_numpy(), "rank_ic": rank.to_numpy()})


def period_figures(
    periods: list[Period],
    window: pd.DataFrame,
    predicted: pd.Series,
    comparison: Comparison,
    initial_cash: float,
    end: date,
) -> list[dict[str, Any]]:
    """One row per retrain period of one model: who served, the gate, forecast and
    trading figures of its sessions.
    """
    days = comparison.market.days
    equity = comparison.runs["model"].equity
    hold = comparison.runs["buy_and_hold"].equity
    fills = comparison.runs["model"].fills
    rows = []
    for period in periods:
        inside = [i for i, d in enumerate(days) if period.first <= d <= period.last]
        if not inside:
            continue
        first, last = inside[0], inside[-1]
        before = float(equity[first - 1]) if first else initial_cash
        held_before = float(hold[first - 1]) if first else initial_cash
        mask = (window["date"] >= pd.Timestamp(period.first)) & (
            window["date"] <= pd.Timestamp(period.last)
        )
        forecast = forecast_figures(
            window[mask].reset_index(drop=True), predicted[mask].to_numpy(), end
        )
        rows.append(
            {
                **period.to_row(),
                "role": CHAMPION,
                "return": float(equity[last]) / before - 1.0,
                "buy_and_hold_return": float(hold[last]) / held_before - 1.0,
                "trades": sum(period.first <= f.decided <= period.last for f in fills),
                **{f"forecast_{k}": v for k, v in forecast.items()},
            }
        )
    return rows
