"""The benchmarks' model (benchmarks/model_setup.py): a registered version downloaded as
the batch and serving benchmarks load it, by the NumPy predictor that serves and by the
torch one, from the folders the download really has."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_the_benchmark_loads_the_downloaded_version_with_both_predictors(trained, tmp_path) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from model_setup import fetch_version
    finally:
        sys.path.remove(str(BENCHMARKS))
    from mlops.contracts.portable import PortablePredictor
    from mlops.contracts.predictor import FastPredictor

    version = trained.versions[0]
    model = fetch_version(tmp_path, trained.model_name, version, trained.settings().tracking_uri)
    assert (model.mlflow_dir / "MLmodel").is_file()
    assert (model.ludwig_dir / "model_hyperparameters.json").is_file()  # `ludwig serve -m`
    rows = trained.scorable.head(50)
    lean = PortablePredictor.from_dir(model.mlflow_dir).predict_frame(rows)
    fast = FastPredictor.from_dir(model.mlflow_dir).predict_frame(rows)
    assert lean.shape == (50,) and np.allclose(lean, fast, rtol=1e-5, atol=1e-7)
    again = fetch_version(tmp_path, trained.model_name, version, trained.settings().tracking_uri)
    assert again == model  # downloaded once
