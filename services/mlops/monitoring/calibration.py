"""The reliability curve as an evidently metric, for a classifier's monitoring report.

:class:`CalibrationError` (evidently 0.7.23's custom metric: a ``SingleValueMetric`` and
its ``SingleValueCalculation``) takes a dataset's 0/1 outcome column and probability
column; its value is the expected calibration error and its widgets are the ECE, the
reliability curve (each bin's mean predicted probability against the observed rate, the
diagonal for a calibrated forecast, the bins' counts on the points) and the bins as a
table. The numbers are :func:`mlops.metrics.reliability_curve` and
:func:`mlops.metrics.expected_calibration_error`, the ones monitoring stores.

Importing this module imports evidently (seconds): :mod:`mlops.monitoring.reports`
imports it only when it draws a classifier's report.
"""

from __future__ import annotations

from typing import Any

from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
from evidently.legacy.renderers.html_widgets import (
    CounterData,
    counter,
    plotly_figure,
    table_data,
)

from mlops.metrics import (
    CALIBRATION_BINS,
    ReliabilityBin,
    expected_calibration_error,
    reliability_curve,
)


class CalibrationError(SingleValueMetric):
    """The expected calibration error of ``probability`` against ``target`` (1 or 0)."""

    target: str
    probability: str
    bins: int = CALIBRATION_BINS

    def _default_tests(self, context: Any) -> list:
        return []

    def _default_tests_with_reference(self, context: Any) -> list:
        return []


class CalibrationErrorCalculation(SingleValueCalculation[CalibrationError]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
        actual = current_data.column(self.metric.target).data.to_numpy(dtype="float64")
        probability = current_data.column(self.metric.probability).data.to_numpy(dtype="float64")
        curve = reliability_curve(actual, probability, self.metric.bins)
        ece = expected_calibration_error(curve)
        result = self.result(value=float("nan") if ece is None else ece)
        result.widget = [
            counter(
                title="",
                counters=[
                    CounterData.float("Expected calibration error", ece or 0.0, 4),
                    CounterData.int("Forecasts", len(actual)),
                ],
            ),
            plotly_figure(title="Reliability curve", figure=reliability_figure(curve)),
            table_data(
                title="Reliability curve: the bins",
                column_names=["probability bin", "forecasts", "mean probability", "observed rate"],
                data=[_bin_row(b) for b in curve],
            ),
        ]
        return result

    def display_name(self) -> str:
        return "Expected calibration error"


def reliability_figure(curve: list[ReliabilityBin]) -> Any:
    """The non-empty bins' mean probability (x) against their observed rate (y), each
    point labelled with its count, beside the diagonal of a calibrated forecast."""
    import plotly.graph_objects as go

    shown = [b for b in curve if b.n]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="calibrated", line={"dash": "dash"})
    )
    figure.add_trace(
        go.Scatter(
            x=[b.mean_probability for b in shown],
            y=[b.observed_rate for b in shown],
            mode="lines+markers+text",
            text=[f"n={b.n}" for b in shown],
            textposition="top center",
            name="forecasts",
        )
    )
    figure.update_layout(
        xaxis={"title": "mean predicted probability of a rise", "range": [0, 1]},
        yaxis={"title": "observed share of rises", "range": [0, 1]},
    )
    return figure


def _bin_row(b: ReliabilityBin) -> list[str]:
    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    return [
        f"{b.low:.1f} - {b.high:.1f}",
        str(b.n),
        share(b.mean_probability),
        share(b.observed_rate),
    ]
