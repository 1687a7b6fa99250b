"""Predicted next close from a Ludwig model, whichever target the model was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops.data_prep.features import TARGET_RETURN_COLUMN


def predict_close(model: Any, config: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Predicted next close for each row of ``frame`` (a features frame)."""
    target = config["output_features"][0]["name"]
    inputs = [f["name"] for f in config["input_features"]]
    predictions, _ = model.predict(frame[inputs].reset_index(drop=True))
    values = predictions[f"{target}_predictions"].to_numpy(dtype="float64")
    if target == TARGET_RETURN_COLUMN:
        return frame["close"].to_numpy(dtype="float64") * (1.0 + values)
    return values
