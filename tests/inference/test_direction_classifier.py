"""The direction classifier's portable export gives LudwigModel.predict's probabilities
(inputs under zscore, minmax, iq and no normalisation, a hidden layer), and is scored and
served where neither torch nor Ludwig can be imported (as in the batch-infer and serve
images).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from inference.torch_free import SERVE_WHEN_READY, blocked, run
from inference.trained_model import (
    CLASSIFIER,
    CLASSIFIER_ALIAS,
    CLASSIFIER_INPUTS,
    CLASSIFIER_NORMALIZATIONS,
    Trained,
    copy_database,
)
from mlops.contracts.portable import PortablePredictor
from mlops.contracts.predictor import FastPredictor

pytestmark = pytest.mark.slow

# The portable export equals LudwigModel.predict within this (as training checks it).
PORTABLE_ATOL = 1e-6


def _ludwig_probabilities(trained: Trained, frame: pd.DataFrame) -> np.ndarray:
    from ludwig.api import LudwigModel

    model = LudwigModel.load(
        str(trained.classifier_dir / "model"), backend="local", logging_level=logging.ERROR
    )
    predictions, _ = model.predict(frame[CLASSIFIER_INPUTS].reset_index(drop=True))
    return predictions["next_up_probabilities_True"].to_numpy(dtype="float64")


def test_the_export_gives_ludwigs_probabilities_under_every_normalisation(trained) -> None:
    folder = trained.classifier_dir / "portable"
    spec = json.loads((folder / "portable.json").read_text())
    assert (spec["version"], spec["output"]) == (2, "binary")
    assert {i["name"]: i["norm"]["kind"] for i in spec["inputs"] if i["type"] == "number"} == (
        CLASSIFIER_NORMALIZATIONS
    )
    assert len(spec["combiner"]) == 1  # the hidden layer
    frame = trained.frame  # warm-up rows included: their missing values take the fill
    assert frame[CLASSIFIER_INPUTS].isna().any(axis=None)
    expected = _ludwig_probabilities(trained, frame)
    assert ((expected > 0) & (expected < 1)).all() and expected.std() > 0
    portable = PortablePredictor.from_dir(folder)
    np.testing.assert_allclose(portable.predict_frame(frame), expected, rtol=0, atol=PORTABLE_ATOL)
    fast = FastPredictor.from_dir(trained.classifier_dir)
    np.testing.assert_allclose(fast.predict_frame(frame), expected, rtol=0, atol=PORTABLE_ATOL)
    records = frame[CLASSIFIER_INPUTS].head(10).to_dict("records")  # the small-list path
    np.testing.assert_allclose(
        portable.predict_records(records), expected[:10], rtol=0, atol=PORTABLE_ATOL
    )


def test_a_version_1_reader_refuses_a_classifiers_export(trained, tmp_path) -> None:
    import shutil

    from mlops.contracts.portable import UnsupportedModelError

    folder = shutil.copytree(trained.classifier_dir / "portable", tmp_path / "portable")
    spec = json.loads((folder / "portable.json").read_text())
    (folder / "portable.json").write_text(json.dumps({**spec, "version": 4}))
    with pytest.raises(UnsupportedModelError, match="is not mlops-portable v1, v2 or v3"):
        PortablePredictor.from_dir(folder)


def test_batch_infer_stores_and_serve_answers_the_probability_without_torch_or_ludwig(
    trained, subprocess_env, tmp_path
) -> None:
    """One process where torch, Ludwig, TA-Lib and pyarrow cannot be imported: batch-infer
    stores the classifier champion's probabilities, then the server answers them.
    """
    from sqlalchemy import create_engine, select

    from mlops.db.schema import predictions

    # A copy: the rows written here stay out of the others'.
    database = copy_database(trained, tmp_path / "mlops.db")
    rows = trained.scorable.tail(4).reset_index(drop=True)
    code = blocked() + (
        "from mlops.cli import main\n"
        "try:\n"
        "    main(['batch-infer', '--as-of', '2017-05-31'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "sys.modules['pyarrow'] = None  # the serve image has none\n"
        + SERVE_WHEN_READY
        + "    answer = client.post('/predict', json=records)\n"
        "    form = client.post('/predict', data=records[0])\n"
        "print(json.dumps({'status': answer.status_code, 'body': answer.json(),\n"
        "    'form': form.json(), 'heavy': sorted(m for m in ('torch', 'ludwig')\n"
        "    if sys.modules.get(m) is not None)}))\n"
    )
    env = subprocess_env(
        MLOPS_HOME=str(trained.home),
        DATABASE_URL=f"sqlite:///{database}",
        MODEL_NAME=CLASSIFIER,
        CHAMPION_ALIAS=CLASSIFIER_ALIAS,
        SERVE_POLL_SECONDS="0.2",
        LOG_LEVEL="WARNING",
    )
    # No close in the records: a classifier predicts no price, so it needs none.
    result = run(code, env, rows[CLASSIFIER_INPUTS].to_json(orient="records"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []

    # batch-infer: the probability and its kind, no close nor change.
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        stored = pd.read_sql(
            select(predictions).where(predictions.c.model_name == CLASSIFIER), conn
        ).sort_values("symbol")
    engine.dispose()
    assert len(stored) == 5 and set(stored["score_kind"]) == {"probability"}
    assert stored["predicted_close"].isna().all() and stored["expected_change"].isna().all()
    last_day = trained.scorable[trained.scorable["date"] == trained.scorable["date"].max()]
    expected = _ludwig_probabilities(trained, last_day.sort_values("symbol"))
    np.testing.assert_allclose(stored["score"].to_numpy(), expected, rtol=0, atol=PORTABLE_ATOL)

    # /predict: the probability and the predicted class (Ludwig's names too).
    assert out["status"] == 200, out
    expected = _ludwig_probabilities(trained, rows)
    answers = out["body"]["predictions"]
    np.testing.assert_allclose(
        [a["probability"] for a in answers], expected, rtol=0, atol=PORTABLE_ATOL
    )
    assert [a["predicted_class"] for a in answers] == (expected >= 0.5).tolist()
    assert [a["next_up_predictions"] for a in answers] == (expected >= 0.5).tolist()
    assert out["form"]["probability"] == pytest.approx(expected[0], abs=PORTABLE_ATOL)
    assert "predicted_close" not in answers[0] and "predicted_close" not in out["form"]
