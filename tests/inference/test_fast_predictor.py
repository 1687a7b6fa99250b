"""The fast predictor gives LudwigModel.predict's numbers, without Ludwig's pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inference.trained_model import INPUTS, PINNED, Trained
from mlops.contracts.models import load_registered, predict_close
from mlops.contracts.portable import PortablePredictor, encode, save
from mlops.contracts.predictor import (
    FastPredictor,
    LudwigPredictor,
    UnsupportedModelError,
    as_predictor,
    load_dir,
)
from mlops.errors import ModelError
from mlops.training.stage import export_portable

pytestmark = pytest.mark.slow

RTOL = 1e-5
# The portable export equals LudwigModel.predict within this (as training checks it).
PORTABLE_ATOL = 1e-6


def _ludwig(trained: Trained, version: str | None = None):
    from ludwig.api import LudwigModel

    folder = trained.model_dirs[version or trained.versions[0]] / "model"
    return LudwigModel.load(str(folder), backend="local", logging_level=logging.ERROR)


def _ludwig_predict(model, frame: pd.DataFrame) -> np.ndarray:
    predictions, _ = model.predict(frame[INPUTS].reset_index(drop=True))
    return predictions["next_return_predictions"].to_numpy(dtype="float64")


@pytest.fixture(scope="module")
def ludwig_model(trained: Trained):
    return _ludwig(trained)


@pytest.fixture(scope="module")
def fast(trained: Trained) -> FastPredictor:
    return FastPredictor.from_dir(trained.model_dirs[trained.versions[0]])


def test_equal_to_ludwig_over_the_bundled_sample(trained, ludwig_model, fast) -> None:
    # Every row of the dataset built from the bundled sample, warm-up rows included
    # (their missing indicators take Ludwig's fill value).
    frame = trained.frame
    assert frame[INPUTS].isna().any(axis=None)
    expected = _ludwig_predict(ludwig_model, frame)
    got = fast.predict_frame(frame)
    assert got.dtype == np.float64 and got.shape == (len(frame),)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)
    # The same float32 preprocessing and torch kernels, then float64 denormalisation: on an
    # idle machine bit-for-bit equal. On a busy one the BLAS may split a float32 product
    # over fewer threads (dynamic threading) and round a few rows differently, at float32
    # precision of the network's output (about 1e-7 of a 1e-2 return): never more.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_equal_for_both_registered_versions_and_from_a_ludwig_model(trained) -> None:
    for version in trained.versions:
        model = _ludwig(trained, version)
        expected = _ludwig_predict(model, trained.scorable)
        from_dir = FastPredictor.from_dir(trained.model_dirs[version])
        from_model = FastPredictor.from_ludwig(model)
        np.testing.assert_allclose(from_dir.predict_frame(trained.scorable), expected, rtol=RTOL)
        np.testing.assert_allclose(from_model.predict_frame(trained.scorable), expected, rtol=RTOL)
    first, second = (FastPredictor.from_dir(trained.model_dirs[v]) for v in trained.versions)
    assert not np.allclose(
        first.predict_frame(trained.scorable), second.predict_frame(trained.scorable)
    )


def test_predict_close_is_unchanged(trained, ludwig_model, fast) -> None:
    rows = trained.scorable
    expected = rows["close"].to_numpy() * (1 + _ludwig_predict(ludwig_model, rows))
    for model in (fast, ludwig_model):  # a LudwigModel takes the fast path as well
        got = predict_close(model, rows)
        np.testing.assert_allclose(got, expected, rtol=RTOL)


def test_records_columns_and_single_rows_match(trained, ludwig_model, fast) -> None:
    rows = trained.scorable.head(40)
    expected = _ludwig_predict(ludwig_model, rows)
    records = rows[INPUTS].to_dict("records")
    np.testing.assert_allclose(fast.predict_records(records), expected, rtol=RTOL)
    columns = {name: rows[name].tolist() for name in INPUTS}
    np.testing.assert_allclose(fast.predict_columns(columns), expected, rtol=RTOL)
    # One row at a time, against Ludwig's own one-row predictions (what `ludwig serve` does).
    for record in records[:10]:
        one = _ludwig_predict(ludwig_model, pd.DataFrame([record]))
        np.testing.assert_allclose(fast.predict_records([record]), one, rtol=RTOL)


def test_odd_values_are_preprocessed_like_ludwig(trained, ludwig_model, fast) -> None:
    rows = trained.scorable.head(8)[INPUTS].copy()
    rows["symbol"] = rows["symbol"].astype(object)
    # Unknown, padded, lower-case and missing symbols; missing and text numbers.
    rows["symbol"] = ["ZZZZ", " AAPL ", None, "GOOGL", "aapl", np.nan, "TSLA\t", ""]
    rows.loc[rows.index[1], "rsi_14"] = np.nan
    rows["return_1d"] = rows["return_1d"].astype(object)
    rows.loc[rows.index[2], "return_1d"] = "0.01"
    rows.loc[rows.index[3], "return_1d"] = None
    expected = _ludwig_predict(ludwig_model, rows)
    np.testing.assert_allclose(fast.predict_frame(rows), expected, rtol=RTOL)
    # The same through the small-list path (plain Python lookups).
    columns = {name: rows[name].tolist() for name in INPUTS}
    np.testing.assert_allclose(fast.predict_columns(columns), expected, rtol=RTOL)


def test_large_batches_match(trained, ludwig_model, fast) -> None:
    big = pd.concat([trained.scorable] * 8, ignore_index=True)
    np.testing.assert_allclose(
        fast.predict_frame(big), _ludwig_predict(ludwig_model, big), rtol=RTOL
    )


def test_empty_frame_and_missing_column(trained, fast) -> None:
    assert fast.predict_frame(trained.scorable.head(0)).shape == (0,)
    with pytest.raises(KeyError, match="rsi_14"):
        fast.predict_frame(trained.scorable.drop(columns=["rsi_14"]))


def test_load_dir_and_load_registered(trained) -> None:
    from mlops import tracking
    from mlops.contracts.models import ModelRef, require_champion
    from mlops.errors import ModelError

    # A registered model folder holds the portable export: loaded with NumPy alone; the
    # Ludwig folder inside it has only the weights: the torch fast path.
    assert isinstance(load_dir(trained.model_dirs[trained.versions[1]]), PortablePredictor)
    assert isinstance(load_dir(trained.model_dirs[trained.versions[1]] / "model"), FastPredictor)
    settings = trained.settings()
    client = tracking.connect(settings)
    ref = require_champion(client, settings.model_name, settings.champion_alias)
    predictor = load_registered(client, ref)
    assert isinstance(predictor, PortablePredictor)
    # Registered versions are immutable: one cache per process, whichever client asks.
    assert load_registered(tracking.connect(settings), ref) is predictor
    with pytest.raises(ModelError, match="version 99"):
        load_registered(client, ModelRef(settings.model_name, "99", "none", {}))
    with pytest.raises(FileNotFoundError):
        load_dir(trained.home)


# Other configurations: fully connected layers are reproduced, the rest falls back.


def _train_variant(trained: Trained, tmp_path: Path, config_patch: dict):
    from ludwig.api import LudwigModel

    from mlops.settings import load_settings
    from mlops.training.model_config import load_model_config
    from mlops.training.stage import _heap_frozen

    config = load_model_config(load_settings(MLOPS_HOME=str(tmp_path), TRAIN_EPOCHS=1))
    for key, value in config_patch.items():
        if key == "input_features":
            for feature in config["input_features"]:
                feature.update(value.get(feature["name"], {}))
        elif key == "output":
            config["output_features"][0].update(value)
        else:
            config[key] = {**config.get(key, {}), **value}
    data = trained.scorable[[*INPUTS, "next_return"]]
    model = LudwigModel(config, logging_level=logging.ERROR)
    with _heap_frozen():  # as the training stage trains: see its docstring
        model.train(
            training_set=data,
            output_directory=str(tmp_path / "out"),
            skip_save_processed_input=True,
            skip_save_log=True,
            skip_save_progress=True,
            skip_save_training_description=True,
            random_seed=3,
        )
    model.save(str(tmp_path / "saved"))
    return model


def test_fully_connected_layers_clip_and_other_normalizations(trained, tmp_path) -> None:
    model = _train_variant(
        trained,
        tmp_path,
        {
            "combiner": {
                "num_fc_layers": 2,
                "output_size": 12,
                "residual": True,
                "activation": "tanh",
            },
            "output": {
                "decoder": {"num_fc_layers": 1, "fc_output_size": 6, "fc_activation": "relu"},
                "clip": [-3.0, 3.0],
            },
            "input_features": {
                "rsi_14": {"preprocessing": {"normalization": "minmax"}},
                "log_volume": {"preprocessing": {"normalization": "iq"}},
                "range_pct": {"preprocessing": {"normalization": None}},
            },
        },
    )
    fast = as_predictor(model)
    assert isinstance(fast, FastPredictor)
    frame = trained.frame
    expected = _ludwig_predict(model, frame)
    np.testing.assert_allclose(fast.predict_frame(frame), expected, rtol=RTOL)
    saved = FastPredictor.from_dir(tmp_path / "saved")
    np.testing.assert_allclose(saved.predict_frame(frame), expected, rtol=RTOL)
    # The portable export of these layers (tanh, residual, a decoder stack, clip, minmax and
    # iq normalisations) through its files, with NumPy alone.
    portable = fast.portable()
    save(tmp_path / "portable", *encode(portable.config, portable.inputs, portable.network))
    loaded = PortablePredictor.from_dir(tmp_path / "portable")
    np.testing.assert_allclose(loaded.predict_frame(frame), expected, rtol=0, atol=PORTABLE_ATOL)


def test_unsupported_config_falls_back_to_ludwig_with_a_warning(trained, tmp_path, caplog) -> None:
    model = _train_variant(
        trained,
        tmp_path,
        {"input_features": {"rsi_14": {"preprocessing": {"outlier_strategy": "fill_with_mean"}}}},
    )
    with pytest.raises(UnsupportedModelError, match="outlier_strategy"):
        FastPredictor.from_ludwig(model)
    with caplog.at_level(logging.WARNING, logger="mlops.contracts.predictor"):
        predictor = as_predictor(model)
    assert isinstance(predictor, LudwigPredictor)
    assert "does not support outlier_strategy" in caplog.text
    rows = trained.scorable
    expected = rows["close"].to_numpy() * (1 + _ludwig_predict(model, rows))
    np.testing.assert_allclose(predict_close(model, rows), expected, rtol=RTOL)
    assert isinstance(load_dir(tmp_path / "saved"), LudwigPredictor)
    # Such a model is refused at registration: the torch-free images could not load it.
    with pytest.raises(ModelError, match="cannot be exported to the portable form"):
        export_portable(model, rows, tmp_path / "export")
    assert not (tmp_path / "export").exists()


# The portable export: what the torch-free serve and batch-infer images load.


def test_registered_versions_carry_a_portable_export_equal_to_ludwig(trained) -> None:
    frame = trained.frame  # warm-up rows included: their missing values take the fill
    for version in trained.versions:
        folder = trained.model_dirs[version] / "portable"
        assert sorted(p.name for p in folder.iterdir()) == ["portable.json", "portable.npz"]
        expected = _ludwig_predict(_ludwig(trained, version), frame)
        got = PortablePredictor.from_dir(folder).predict_frame(frame)
        np.testing.assert_allclose(got, expected, rtol=0, atol=PORTABLE_ATOL)


def test_a_registered_version_loads_and_predicts_without_torch_or_ludwig(trained) -> None:
    import json
    import subprocess
    import sys

    code = f"""
import json, sys
from mlops import tracking
from mlops.contracts.models import load_registered, require_champion
from mlops.settings import load_settings
settings = load_settings(MLOPS_HOME={str(trained.home)!r}, **{PINNED!r})
client = tracking.connect(settings)
ref = require_champion(client, settings.model_name, settings.champion_alias)
predictor = load_registered(client, ref)
records = json.loads(sys.stdin.read())
print(json.dumps({{
    "kind": predictor.kind,
    "values": predictor.predict_records(records).tolist(),
    "heavy": sorted(m for m in ("torch", "ludwig") if m in sys.modules),
}}))
"""
    rows = trained.scorable.head(20)
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=rows[INPUTS].to_json(orient="records"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["kind"] == "portable"
    assert out["heavy"] == []
    champion = trained.versions[0]  # train_once makes the first version the champion
    expected = _ludwig_predict(_ludwig(trained, champion), rows)
    np.testing.assert_allclose(out["values"], expected, rtol=0, atol=PORTABLE_ATOL)
