"""Evidently reports: the quality of realized predictions (a regressor's, or a direction
classifier's with its reliability curve) and feature drift."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from mlops.contracts.columns import DRIFT_FEATURES

DRIFT_COLUMNS = DRIFT_FEATURES


def _html(snapshot: object) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        snapshot.save_html(str(path))  # type: ignore[attr-defined]
        return path.read_bytes()


def quality_report(joined: pd.DataFrame) -> bytes:
    """HTML of evidently's regression preset on predicted against actual closes."""
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import RegressionPreset

    frame = joined[["actual_close", "predicted_close"]].astype("float64").reset_index(drop=True)
    definition = DataDefinition(
        numerical_columns=["actual_close", "predicted_close"],
        regression=[Regression(target="actual_close", prediction="predicted_close")],
    )
    snapshot = Report([RegressionPreset()]).run(
        Dataset.from_pandas(frame, data_definition=definition), None
    )
    return _html(snapshot)


def classification_report(rose: pd.Series, probability: pd.Series) -> tuple[bytes, float | None]:
    """HTML of evidently's classification preset on a direction classifier's realized
    predictions (its ``probability`` of a rise against whether the close ``rose``, 1 or
    0), with the reliability curve and the expected calibration error
    (:class:`mlops.monitoring.calibration.CalibrationError`), and that error.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    from mlops.monitoring.calibration import CalibrationError

    frame = pd.DataFrame(
        {
            "rose": rose.astype("int64").to_numpy(),
            "probability": probability.astype("float64").to_numpy(),
        }
    )
    definition = DataDefinition(
        numerical_columns=["probability"],
        categorical_columns=["rose"],
        classification=[
            BinaryClassification(target="rose", prediction_probas="probability", pos_label=1)
        ],
    )
    calibration = CalibrationError(target="rose", probability="probability")
    metrics: list = [calibration]
    if frame["rose"].nunique() == 2:  # the preset needs both outcomes (its AUC, its curves)
        metrics.insert(0, ClassificationPreset())
    snapshot = Report(metrics).run(Dataset.from_pandas(frame, data_definition=definition), None)
    return _html(snapshot), calibration_error(snapshot.dict())


def calibration_error(payload: dict) -> float | None:
    """The expected calibration error from a classifier report's metrics."""
    for metric in payload.get("metrics", []):
        if str(metric.get("metric_name", "")).startswith("CalibrationError"):
            value = float(metric["value"])
            return None if value != value else value
    raise ValueError("The classifier report has no CalibrationError metric.")


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, method: str = "ks"
) -> tuple[bytes, float]:
    """HTML of evidently's drift preset and the share of drifted columns.

    The default two-sample Kolmogorov-Smirnov test suits the small current window
    (a few symbols times a few weeks); distance measures flag nearly everything there.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(reference.columns)
    definition = DataDefinition(numerical_columns=columns)
    snapshot = Report([DataDriftPreset(num_method=method)]).run(
        Dataset.from_pandas(current.reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference.reset_index(drop=True), data_definition=definition),
    )
    share = drifted_share(snapshot.dict())
    return _html(snapshot), share


def drifted_share(payload: dict) -> float:
    """The share of drifted columns from a drift snapshot's metrics."""
    for metric in payload.get("metrics", []):
        if str(metric.get("metric_name", "")).startswith("DriftedColumnsCount"):
            return float(metric["value"]["share"])
    raise ValueError("The drift report has no DriftedColumnsCount metric.")
