"""Predictions: what batch inference hands to trading and monitoring (table ``predictions``).

One row per (symbol, prediction date, model name, model version): the predicted next
close, the close it was made from, the expected change and the version's ``role`` that
day: ``champion`` for the version holding the champion alias (the trading model's champion
alone feeds trading), ``challenger`` for a version scored in shadow beside it. The model's
own output is ``score``, of the kind ``score_kind``: ``price`` (a model of the next close),
``return`` (of the next return) or ``probability`` (a direction classifier's probability
that the next close is above the last one; its rows have no predicted close nor expected
change). Rows written before the score's kind existed say ``price`` and have no score.
Monitoring joins them with the close that came true (:func:`realized`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.contracts.columns import TARGET_COLUMN, TARGET_DATE_COLUMN

PREDICTION_KEY = ("symbol", "prediction_date", "model_name", "model_version")
CHAMPION_ROLE = "champion"
CHALLENGER_ROLE = "challenger"


def realized(preds: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
    """Predictions joined with the close of the next trading day, where it is known."""
    truth = bars[["symbol", "date", TARGET_COLUMN, TARGET_DATE_COLUMN]].dropna(
        subset=[TARGET_COLUMN]
    )
    truth = truth.rename(columns={"date": "prediction_date", TARGET_COLUMN: "actual_close"})
    preds = preds.assign(prediction_date=pd.to_datetime(preds["prediction_date"]))
    return preds.merge(truth, on=["symbol", "prediction_date"], how="inner")


def on_rows(keyed: pd.Series, rows: pd.DataFrame) -> np.ndarray:
    """Predictions indexed by (day, symbol), for each row (``date``, ``symbol``) of
    ``rows`` in their order; NaN where there is none.
    """
    index = pd.MultiIndex.from_arrays([rows["date"].to_numpy(), rows["symbol"].to_numpy()])
    return keyed.reindex(index).to_numpy(dtype="float64")
