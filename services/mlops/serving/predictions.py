"""Running the loaded model on checked columns, and the three shapes of its answers.

The model's output is ``<target>_predictions``. For a model of ``next_return`` the
predicted close is ``close * (1 + return)``; for one of ``next_close`` it is the output
itself; the expected change is ``predicted / close - 1``. A direction classifier (a model
of ``next_up``) answers its ``probability`` that the next close is above the last one and
its ``predicted_class`` (``true`` at or above the model's threshold), also under Ludwig's
names ``next_up_probabilities_True`` and ``next_up_predictions``. A result that is not a
finite number (inputs far outside what the model was trained on) is a 422 naming the
records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops.contracts.columns import TARGET_COLUMN, TARGET_RETURN_COLUMN, is_classifier
from mlops.contracts.portable import DEFAULT_THRESHOLD, Predictor
from mlops.serving.api_errors import MAX_ERRORS, ApiError, error_item

# Up to this many rows a prediction of a thread-safe array predictor runs on the event
# loop (it takes well under a millisecond); larger ones, and Ludwig's own predict (slow,
# one call at a time), go to the thread pool.
INLINE_ROWS = 256
INLINE_KINDS = frozenset({"portable", "fast"})


async def run_model(predictor: Predictor, columns: dict[str, list[Any]], rows: int) -> np.ndarray:
    """The model's raw output for the checked columns (one value per row)."""
    inputs = {name: columns[name] for name in predictor.input_features}
    if rows <= INLINE_ROWS and predictor.kind in INLINE_KINDS:
        return predictor.predict_columns(inputs)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(predictor.predict_columns, inputs)


@dataclass
class Answer:
    target: str
    raw: np.ndarray  # the model's output: <target>_predictions, a classifier's probability
    predicted_close: np.ndarray | None
    expected_change: np.ndarray | None
    predicted_class: np.ndarray | None = None  # a classifier's: raw >= its threshold

    @property
    def raw_key(self) -> str:
        return f"{self.target}_predictions"

    def columns(self) -> dict[str, list[Any]]:
        """The answer's fields, each a list of one value per row, in the bodies' order."""
        if self.predicted_class is not None:
            classes = self.predicted_class.tolist()
            probabilities = self.raw.tolist()
            return {
                "probability": probabilities,
                "predicted_class": classes,
                f"{self.target}_probabilities_True": probabilities,
                self.raw_key: classes,
            }
        out: dict[str, list[Any]] = {self.raw_key: self.raw.tolist()}
        if self.predicted_close is not None:
            out["predicted_close"] = self.predicted_close.tolist()
        if self.expected_change is not None:
            out["expected_change"] = self.expected_change.tolist()
        return out


def answer(
    target: str,
    raw: np.ndarray,
    closes: Sequence[float] | None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Answer:
    """The predicted close and change beside the raw output (a classifier: its predicted
    class); ApiError(422) if not finite.
    """
    if is_classifier(target):
        _refuse_not_finite(~np.isfinite(raw))
        return Answer(target, raw, None, None, raw >= threshold)
    close = np.asarray(closes, dtype=np.float64) if closes is not None else None
    predicted: np.ndarray | None = None
    with np.errstate(all="ignore"):  # non-finite results are refused below
        if target == TARGET_RETURN_COLUMN and close is not None:
            predicted = close * (1.0 + raw)
        elif target == TARGET_COLUMN:
            predicted = raw
        change = predicted / close - 1.0 if predicted is not None and close is not None else None
    bad = ~np.isfinite(raw)
    for extra in (predicted, change):
        if extra is not None:
            bad |= ~np.isfinite(extra)
    _refuse_not_finite(bad)
    return Answer(target, raw, predicted, change)


def _refuse_not_finite(bad: np.ndarray) -> None:
    if bad.any():
        rows = np.flatnonzero(bad)[:MAX_ERRORS].tolist()
        raise ApiError(
            422,
            f"record {rows[0]}: the prediction is not a finite number; its feature values are "
            "far outside what the model was trained on",
            [error_item(["body", i], "prediction is not finite", "value_error") for i in rows],
        )


# The answers' bodies (beside model_name and model_version).


def records_body(answer: Answer) -> dict[str, Any]:
    """``/predict`` with JSON records: one prediction per record."""
    if answer.predicted_class is not None:
        columns = answer.columns()
        return {
            "predictions": [
                dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)
            ]
        }
    assert answer.predicted_close is not None and answer.expected_change is not None
    return {
        "predictions": [
            {"predicted_close": c, "expected_change": e, answer.raw_key: r}
            for c, e, r in zip(
                answer.predicted_close.tolist(),
                answer.expected_change.tolist(),
                answer.raw.tolist(),
                strict=True,
            )
        ]
    }


def form_body(answer: Answer) -> dict[str, Any]:
    """``/predict`` with a form: ``ludwig serve``'s answer for its one record."""
    return {name: values[0] for name, values in answer.columns().items()}


def table_body(answer: Answer, index: list[Any] | None) -> dict[str, Any]:
    """``/batch_predict``: a 'split' table with the request's index."""
    fields = answer.columns()
    columns, parts = list(fields), list(fields.values())
    rows = len(answer.raw)
    return {
        "index": index if index is not None else list(range(rows)),
        "columns": columns,
        "data": [list(row) for row in zip(*parts, strict=True)],
    }
