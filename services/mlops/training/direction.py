"""The direction classifier's figures and paired tests (a model of ``next_up``).

A classifier's forecast is the probability that the next close is above this one. Its
naive rival is the base-rate classifier: the same probability every day and symbol, the
share of rises in the training window (``train_up_rate``). The promotion metric is the
holdout's log loss (lower is better); Brier score, accuracy and AUC are reported beside
it. The paired test is the one-sided Diebold-Mariano test
(:func:`mlops.metrics.diebold_mariano`) on each day's mean log loss over the symbols
(symbols of one day move together: the test runs on the daily series).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops.contracts.columns import TARGET_UP_COLUMN
from mlops.contracts.portable import class_threshold
from mlops.contracts.predictor import as_predictor
from mlops.metrics import classification_metrics, diebold_mariano, log_losses
from mlops.training.splits import Splits

PROMOTION_METRIC = "log_loss"
# The figures of a classifier on each split (``up_rate``: the split's share of rises).
METRICS = ("log_loss", "brier", "accuracy", "auc", "ece", "up_rate")
SPLITS = ("train", "validation", "holdout")


def split_figures(
    model: Any, splits: Splits
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """The probabilities of a rise on every split, and the classifier's figures there."""
    predictor = as_predictor(model)
    threshold = class_threshold(predictor.config)
    predicted = {
        name: predictor.predict_frame(getattr(splits, name).reset_index(drop=True))
        for name in SPLITS
    }
    per_split = {
        name: classification_metrics(
            getattr(splits, name)[TARGET_UP_COLUMN], predicted[name], threshold
        )
        for name in SPLITS
    }
    return predicted, per_split


def base_rate(per_split: dict[str, dict[str, float]]) -> float:
    """The naive classifier's probability: the training window's share of rises."""
    return per_split["train"]["up_rate"]


def naive_figures(holdout: pd.DataFrame, rate: float) -> dict[str, float]:
    """The base-rate classifier's figures on the holdout."""
    return classification_metrics(holdout[TARGET_UP_COLUMN], np.full(len(holdout), rate))


def daily_log_loss(frame: pd.DataFrame, probability: np.ndarray) -> pd.Series:
    """Each day's mean log loss over the symbols of ``frame`` (``date``, ``next_up``)."""
    losses = log_losses(frame[TARGET_UP_COLUMN].to_numpy(dtype="float64"), probability)
    return pd.Series(losses).groupby(frame["date"].to_numpy()).mean().sort_index()


def paired_tests(
    holdout: pd.DataFrame, predicted: np.ndarray, others: dict[str, np.ndarray | None]
) -> dict[str, float]:
    """One-sided Diebold-Mariano tests of ``predicted`` against each of ``others`` (by
    name: ``naive``, ``champion``) on the days' mean log loss, as ``dm_p_value_<name>``
    and ``dm_statistic_<name>`` (a name with fewer than 3 days gets none).
    """
    candidate = daily_log_loss(holdout, predicted)
    found: dict[str, float] = {}
    for who, probability in others.items():
        if probability is None or len(candidate) < 3:
            continue
        other = daily_log_loss(holdout, np.asarray(probability, dtype="float64"))
        test = diebold_mariano(candidate.to_numpy(), other.to_numpy(), loss="absolute")
        found[f"dm_p_value_{who}"], found[f"dm_statistic_{who}"] = test.p_value, test.statistic
    return found
