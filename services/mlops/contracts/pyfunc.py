"""A registered version as an MLflow-native model: its ``python_function`` flavour.

Training logs each version with Ludwig's MLflow flavour (``ludwig``, the saved Ludwig
model) and points the generic ``python_function`` flavour at this module
(:func:`make_native`): ``mlflow.pyfunc.load_model``, ``mlflow models serve`` and
``mlflow models predict`` then load the version's portable export (NumPy alone, no Ludwig
import; it predicts what ``LudwigModel.predict`` does, checked at export) and answer as
the project's own ``mlops serve`` does:

* a regressor: the model's own column under Ludwig's name (``next_return_predictions``
  or ``next_close_predictions``, as before), and, given each row's ``close`` (an optional
  input of the signature), the ``predicted_close`` (``close x (1 + return)`` for a return
  model) and the ``expected_change`` (``predicted_close / close - 1``: the predicted
  return); a model of ``next_close`` has its ``predicted_close`` without ``close`` too;
* a direction classifier: Ludwig's columns ``next_up_predictions`` (at or above its
  threshold), ``next_up_probabilities_False`` / ``_True``, ``next_up_probability`` and
  ``next_up_probabilities``.

The version's signature is that of these inputs and outputs, so MLflow refuses a request
with a missing or mistyped column with its schema message (before the model runs). The
loader needs this package (``mlops``) where the model is loaded: the project's images and
its virtualenv (``--env-manager local``) have it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.contracts.columns import TARGET_COLUMN, is_classifier
from mlops.contracts.portable import PORTABLE_FOLDER, class_threshold

if TYPE_CHECKING:
    import pandas as pd

    from mlops.contracts.portable import Predictor

CLOSE = "close"
PREDICTED_CLOSE = "predicted_close"
EXPECTED_CHANGE = "expected_change"
PYFUNC = "python_function"


class NativeModel:
    """What ``mlflow.pyfunc`` calls: the predictor behind :func:`answer`."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return answer(self.predictor, model_input)


def _load_pyfunc(path: str) -> NativeModel:
    """MLflow's entry point (``loader_module``): ``path`` is the version's portable folder."""
    from mlops.contracts.predictor import load_dir

    return NativeModel(load_dir(path))


def answer(predictor: Predictor, frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the pyfunc answers for the rows of ``frame`` (see the module doc)."""
    import pandas as pd

    from mlops.contracts.models import predict_scores

    frame = frame.reset_index(drop=True)
    target = predictor.target
    raw = f"{target}_predictions"
    if is_classifier(target):
        p = predictor.predict_frame(frame)
        return pd.DataFrame(
            {
                raw: p >= class_threshold(predictor.config),
                f"{target}_probabilities_False": 1.0 - p,
                f"{target}_probabilities_True": p,
                f"{target}_probability": np.where(p > 0.5, p, 1.0 - p),
                f"{target}_probabilities": [[1.0 - x, x] for x in p.tolist()],
            }
        )
    if CLOSE in frame.columns and frame[CLOSE].notna().all():
        scores = predict_scores(predictor, frame)
        close = frame[CLOSE].to_numpy(dtype="float64")
        assert scores.predicted_close is not None  # a regressor's
        with np.errstate(all="ignore"):
            change = scores.predicted_close / close - 1.0
        return pd.DataFrame(
            {raw: scores.score, PREDICTED_CLOSE: scores.predicted_close, EXPECTED_CHANGE: change}
        )
    values = predictor.predict_frame(frame)
    out = {raw: values}
    if target == TARGET_COLUMN:
        out[PREDICTED_CLOSE] = values
    return pd.DataFrame(out)


def example_inputs(holdout: pd.DataFrame, inputs: list[str], target: str, rows: int) -> Any:
    """A few rows of the model's inputs as the input example, a regressor's with ``close``."""
    columns = list(inputs)
    if not is_classifier(target) and CLOSE not in columns:
        columns.append(CLOSE)
    return holdout[columns].head(rows).reset_index(drop=True)


def make_native(folder: Path, example: pd.DataFrame) -> None:
    """Point the MLflow model in ``folder`` (its ``MLmodel``, with the portable export in
    ``portable/``) at this module, with the signature of what it answers for ``example``
    (``close`` optional when the model does not read it)."""
    from mlflow.models import Model, ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    mlmodel = folder / "MLmodel"
    model = Model.load(str(mlmodel))
    native = _load_pyfunc(str(folder / PORTABLE_FOLDER))
    inferred = infer_signature(example, native.predict(example))
    reads = set(native.predictor.input_features)
    inputs = Schema(
        [
            ColSpec(c.type, c.name, required=c.name in reads)
            for c in inferred.inputs.inputs
            if isinstance(c, ColSpec)
        ]
    )
    model.signature = ModelSignature(inputs, inferred.outputs)
    flavour = model.flavors[PYFUNC]
    flavour["loader_module"] = __name__
    flavour["data"] = PORTABLE_FOLDER
    model.save(str(mlmodel))
