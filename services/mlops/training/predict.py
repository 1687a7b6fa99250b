"""Predicted next close from a Ludwig model, whichever target the model was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops.data_prep.features import TARGET_RETURN_COLUMN


def predict_close(model: Any, config: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Predicted next close for each row of ``frame`` (a features frame).

    ``model`` is a ``LudwigModel`` or a predictor from ``mlops.inference.fast``; the fast
    predictor computes what ``LudwigModel.predict`` would, and falls back to it (with a
    warning) for a configuration it does not reproduce.
    """
    from mlops.inference.fast import as_predictor

    target = config["output_features"][0]["name"]
    values = as_predictor(model).predict_frame(frame.reset_index(drop=True))
    if target == TARGET_RETURN_COLUMN:
        return frame["close"].to_numpy(dtype="float64") * (1.0 + values)
    return values
