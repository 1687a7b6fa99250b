"""Every registered version is an MLflow model with a signature and an input example:
MLflow checks a request against it (a wrong input is a schema error, not a pandas stack
trace), and the export check compares relative to the value, with an absolute floor."""

from __future__ import annotations

import numpy as np
import pytest

from inference.trained_model import CLASSIFIER_INPUTS, INPUTS, Trained
from mlops.training.stage import PORTABLE_ATOL, PORTABLE_RTOL, export_excess


def test_every_version_has_a_signature_and_an_input_example(trained: Trained) -> None:
    from mlflow.models import Model

    folders = [*trained.model_dirs.values(), trained.classifier_dir]
    expected = [INPUTS, INPUTS, CLASSIFIER_INPUTS]
    for folder, inputs in zip(folders, expected, strict=True):
        model = Model.load(str(folder))
        assert model.signature is not None, folder
        assert set(model.signature.inputs.input_names()) == set(inputs)
        assert model.signature.outputs is not None
        assert model.saved_input_example_info is not None
        example = model.load_input_example(str(folder))
        assert set(example.columns) == set(inputs) and len(example) == 5


def test_the_pyfunc_answers_a_right_input_and_refuses_a_wrong_one(trained: Trained) -> None:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    folder = trained.model_dirs[trained.versions[0]]
    model = mlflow.pyfunc.load_model(str(folder))
    rows = trained.scorable[INPUTS].head(3)
    answered = model.predict(rows)
    assert len(answered) == 3 and np.isfinite(answered.iloc[:, 0].astype(float)).all()
    with pytest.raises(MlflowException, match=r"(?i)missing inputs|schema"):
        model.predict(rows.drop(columns=[INPUTS[0]]))


def test_the_export_check_is_relative_with_an_absolute_floor() -> None:
    # Ludwig's float32 against the export's float64 on a price of about 1,500: 1.53e-05
    # apart (what an absolute 1e-6 refused, issue 19), well inside 1e-5 x 1,500.
    ludwig = np.array([1512.25, 0.0004, -0.0123])
    export = ludwig + np.array([1.53e-05, 5e-07, -8e-07])
    excess, _ = export_excess(export, ludwig)
    assert excess <= 0
    # A real difference is refused, and named at the value where it is largest.
    wrong = ludwig + np.array([0.5, 0.0, 0.0])
    excess, value = export_excess(wrong, ludwig)
    assert excess == pytest.approx(0.5 - (PORTABLE_ATOL + PORTABLE_RTOL * 1512.25))
    assert value == 1512.25
    # Near zero the floor decides: 2e-6 off a return of 0.0001 is too far.
    excess, value = export_excess(np.array([0.0001 + 2e-6]), np.array([0.0001]))
    assert excess > 0 and value == 0.0001
