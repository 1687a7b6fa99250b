"""The model catalog: names and config paths, the trading model first."""

from __future__ import annotations

import pytest

from mlops.contracts.catalog import catalog, model_names, packaged_dir, spec
from mlops.errors import ConfigError
from mlops.settings import load_settings

BUNDLED = ["stock-close", "stock-close-mlp", "stock-close-pooled", "stock-direction"]


def test_the_packaged_catalog_holds_the_four_bundled_models():
    assert model_names(load_settings(), None) == BUNDLED
    assert spec(load_settings(), None, "stock-close-mlp").config_path == (
        packaged_dir() / "stock-close-mlp.yaml"
    )


def test_a_trading_model_named_otherwise_is_the_default_config_under_that_name():
    models = catalog(load_settings(MODEL_NAME="my-model"), None)
    assert list(models) == ["my-model", "stock-close-mlp", "stock-close-pooled", "stock-direction"]
    assert models["my-model"].config_path == packaged_dir() / "stock-close.yaml"


def test_model_config_path_is_the_trading_models_config(tmp_path):
    path = tmp_path / "mine.yaml"
    models = catalog(
        load_settings(MODEL_NAME="stock-close-pooled", MODEL_CONFIG_PATH=str(path)), None
    )
    assert next(iter(models)) == "stock-close-pooled" and sorted(models) == BUNDLED
    assert models["stock-close-pooled"].config_path == path


def test_a_folder_without_the_trading_model_is_refused(tmp_path):
    (tmp_path / "other.yaml").write_text("{}")
    settings = load_settings(MODEL_CONFIGS_DIR=str(tmp_path))
    with pytest.raises(ConfigError, match="'stock-close' \\(MODEL_NAME\\) has no config"):
        catalog(settings, None)
    assert model_names(
        load_settings(MODEL_CONFIGS_DIR=str(tmp_path), MODEL_NAME="other"), None
    ) == ["other"]


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ConfigError,
        match="known: stock-close, stock-close-mlp, stock-close-pooled, stock-direction",
    ):
        spec(load_settings(), None, "nope")


def test_close_only_data_has_the_packaged_close_only_catalog():
    settings = load_settings(DATA_BARS="close_only")
    assert settings.model_name == "stock-close-only"  # MODEL_NAME's default follows DATA_BARS
    assert model_names(settings, None) == ["stock-close-only"]
    assert spec(settings, None, "stock-close-only").config_path == (
        packaged_dir("close_only") / "stock-close-only.yaml"
    )
    # A trading model named otherwise is the close-only config under that name.
    mine = catalog(load_settings(DATA_BARS="close_only", MODEL_NAME="levels"), None)
    assert {n: s.config_path.name for n, s in mine.items()} == {"levels": "stock-close-only.yaml"}
    with pytest.raises(ConfigError, match=r"known: stock-close, .*DATA_BARS=close_only\)\.$"):
        spec(load_settings(), None, "stock-close-only")
