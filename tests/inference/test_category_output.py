"""A category output (several classes) in the portable export: each class's probability
equals LudwigModel.predict's within the export's tolerance (the check registration runs),
inputs under zscore, minmax, iq and no normalisation, a hidden layer; and the lean
predictor gives them where neither torch nor Ludwig can be imported.

The model is tiny (two epochs on 400 rows of the session's trained dataset): the
classes are the next session's move, ``down``, ``flat`` or ``up``.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from inference.torch_free import blocked, run
from inference.trained_model import CLASSIFIER_INPUTS, CLASSIFIER_NORMALIZATIONS, Trained

pytestmark = pytest.mark.slow

PORTABLE_ATOL = 1e-6  # as the binary output's test: the export equals Ludwig's within it
TARGET = "next_move"
CONFIG = {
    "model_type": "ecd",
    "input_features": [
        {"name": name, "type": "number", "preprocessing": {"normalization": norm}}
        for name, norm in CLASSIFIER_NORMALIZATIONS.items()
    ]
    + [{"name": "symbol", "type": "category"}],
    "output_features": [{"name": TARGET, "type": "category"}],
    "combiner": {"type": "concat", "num_fc_layers": 1, "output_size": 8},
    # Both batch sizes fixed: Ludwig does not tune them (its tuner collects garbage).
    "trainer": {"epochs": 2, "batch_size": 64, "eval_batch_size": 256, "learning_rate": 0.01},
}


def _moves(frame: pd.DataFrame) -> pd.Series:
    """Down below -0.5 %, up above +0.5 %, flat between."""
    change = frame["next_return"]
    return pd.Series(
        np.select([change < -0.005, change > 0.005], ["down", "up"], "flat"), index=frame.index
    )


@pytest.fixture(scope="module")
def category_model(trained: Trained, tmp_path_factory):
    """The tiny model, trained once (on one thread, as ``mlops train`` trains), and its
    portable export, written by training's own export (which refuses an export off
    Ludwig's by more than the tolerance)."""
    import torch
    from ludwig.api import LudwigModel

    from mlops.training.stage import export_portable

    rows = trained.scorable.dropna(subset=["next_return"]).tail(400)
    rows = rows.assign(**{TARGET: _moves(rows)}).reset_index(drop=True)
    out = tmp_path_factory.mktemp("category")
    model = LudwigModel(CONFIG, logging_level=logging.ERROR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train(
            training_set=rows.iloc[:300],
            validation_set=rows.iloc[300:],
            output_directory=str(out / "ludwig"),
            random_seed=3,
            skip_save_model=True,
            skip_save_processed_input=True,
            skip_save_log=True,
            skip_save_progress=True,
            skip_save_training_description=True,
            skip_save_training_statistics=True,
        )
    finally:
        torch.set_num_threads(threads)
    export_portable(model, rows, out / "portable")
    return model, out / "portable"


def test_the_lean_predictor_gives_ludwigs_class_probabilities_without_torch_or_ludwig(
    category_model, trained, subprocess_env
) -> None:
    model, folder = category_model
    spec = json.loads((folder / "portable.json").read_text())
    assert (spec["version"], spec["output"]) == (3, "category")
    # Warm-up rows (missing values take the fill) and a symbol outside the vocabulary.
    frame = trained.frame[CLASSIFIER_INPUTS].head(40).copy()
    frame.loc[frame.index[:3], "symbol"] = "NOT-A-SYMBOL"
    assert frame.isna().any(axis=None)
    predicted, _ = model.predict(frame.reset_index(drop=True))
    classes = list(model.training_set_metadata[TARGET]["idx2str"])
    assert {"down", "flat", "up"} <= set(classes)
    expected = predicted[[f"{TARGET}_probabilities_{c}" for c in classes]].to_numpy("float64")
    assert expected.std(axis=0).max() > 0  # the inputs move the probabilities
    code = blocked() + (
        "import json\n"
        "from mlops.contracts.portable import PortablePredictor\n"
        "import pandas as pd\n"
        "frame = pd.read_json(sys.stdin, orient='split')\n"
        f"portable = PortablePredictor.from_dir({str(folder)!r})\n"
        "records = frame.head(10).astype(object).where(frame.head(10).notna(), None)\n"
        "print(json.dumps({'frame': portable.predict_frame(frame).tolist(),\n"
        "    'records': portable.predict_records(records.to_dict('records')).tolist(),\n"
        "    'classes': list(portable.classes),\n"
        "    'heavy': sorted(m for m in ('torch', 'ludwig') if sys.modules.get(m) is not None)}))\n"
    )
    result = run(code, subprocess_env(), frame.to_json(orient="split"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["classes"] == classes
    got = np.asarray(out["frame"])
    assert got.shape == expected.shape == (40, len(classes))
    np.testing.assert_allclose(got, expected, rtol=0, atol=PORTABLE_ATOL)
    np.testing.assert_allclose(out["records"], expected[:10], rtol=0, atol=PORTABLE_ATOL)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_the_fast_predictor_and_ludwigs_fallback_give_the_same_class_probabilities(
    category_model, trained
) -> None:
    from mlops.contracts.predictor import FastPredictor, LudwigPredictor

    model, _ = category_model
    frame = trained.scorable[CLASSIFIER_INPUTS].tail(20).reset_index(drop=True)
    fast, ludwig = FastPredictor.from_ludwig(model), LudwigPredictor(model)
    assert fast.classes == ludwig.classes == tuple(model.training_set_metadata[TARGET]["idx2str"])
    np.testing.assert_allclose(
        fast.predict_frame(frame), ludwig.predict_frame(frame), rtol=0, atol=PORTABLE_ATOL
    )
