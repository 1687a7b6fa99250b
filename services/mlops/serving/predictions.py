"""Running the loaded model on checked columns, and the three shapes of its answers.

The model's output is ``<target>_predictions``. For a model of ``next_return`` the
predicted close is ``close * (1 + return)``; for one of ``next_close`` it is the output
itself; the expected change is ``predicted / close - 1``. A result that is not a finite
number (inputs far outside what the model was trained on) is a 422 naming the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops.contracts.columns import TARGET_COLUMN, TARGET_RETURN_COLUMN
from mlops.contracts.portable import Predictor
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
    raw: np.ndarray  # the model's output, <target>_predictions
    predicted_close: np.ndarray | None
    expected_change: np.ndarray | None

    @property
    def raw_key(self) -> str:
        return f"{self.target}_predictions"


def answer(target: str, raw: np.ndarray, closes: Sequence[float] | None) -> Answer:
    """The predicted close and change beside the raw output; ApiError(422) if not finite."""
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
    if bad.any():
        rows = np.flatnonzero(bad)[:MAX_ERRORS].tolist()
        raise ApiError(
            422,
            f"record {rows[0]}: the prediction is not a finite number; its feature values are "
            "far outside what the model was trained on",
            [error_item(["body", i], "prediction is not finite", "value_error") for i in rows],
        )
    return Answer(target, raw, predicted, change)


# The answers' bodies (beside model_name and model_version).


def records_body(answer: Answer) -> dict[str, Any]:
    """``/predict`` with JSON records: one prediction per record."""
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
    out: dict[str, Any] = {answer.raw_key: float(answer.raw[0])}
    if answer.predicted_close is not None:
        out["predicted_close"] = float(answer.predicted_close[0])
    if answer.expected_change is not None:
        out["expected_change"] = float(answer.expected_change[0])
    return out


def table_body(answer: Answer, index: list[Any] | None) -> dict[str, Any]:
    """``/batch_predict``: a 'split' table with the request's index."""
    columns = [answer.raw_key]
    parts = [answer.raw.tolist()]
    if answer.predicted_close is not None:
        columns.append("predicted_close")
        parts.append(answer.predicted_close.tolist())
    if answer.expected_change is not None:
        columns.append("expected_change")
        parts.append(answer.expected_change.tolist())
    rows = len(answer.raw)
    return {
        "index": index if index is not None else list(range(rows)),
        "columns": columns,
        "data": [list(row) for row in zip(*parts, strict=True)],
    }
