"""The Ludwig model configuration: read from YAML, checked against Ludwig's schema."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mlops.contracts.columns import (
    MODEL_INPUT_COLUMNS,
    TARGET_COLUMN,
    TARGET_RETURN_COLUMN,
    TARGET_UP_COLUMN,
    is_classifier,
)
from mlops.errors import ConfigError
from mlops.settings import Settings


def default_config_path() -> Path:
    return Path(str(resources.files("mlops") / "resources" / "models" / "stock-close.yaml"))


def load_model_config(settings: Settings, path: Path | None = None) -> dict[str, Any]:
    """The config at ``path`` (a catalog model's, see :mod:`mlops.contracts.catalog`),
    else the one named by MODEL_CONFIG_PATH (or the packaged default), validated; with
    TRAIN_EPOCHS set, its epochs.
    """
    path = path or settings.model_config_path or default_config_path()
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        setting = (
            "MODEL_CONFIG_PATH"
            if settings.model_config_path and Path(path) == settings.model_config_path
            else "The model catalog (MODEL_CONFIGS_DIR)"
        )
        raise ConfigError(f"{setting} points at {path}, which does not exist.") from None
    config = parse(text, source=str(path))
    config = copy.deepcopy(config)
    if settings.train_epochs is not None:
        config.setdefault("trainer", {})["epochs"] = settings.train_epochs
    validate(config, source=str(path))
    return config


def parse(text: str, *, source: str) -> dict[str, Any]:
    """The mapping of Ludwig settings in the YAML ``text`` (ConfigError: one sentence)."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "it does not parse"
        raise ConfigError(f"Model config {source} is not valid YAML{where}: {problem}.") from None
    if not isinstance(config, dict):
        raise ConfigError(f"Model config {source} must be a mapping of Ludwig settings.")
    return config


def check_new(text: str, *, source: str) -> dict[str, Any]:
    """A config offered for the catalog (``mlops models create``), checked before any
    training: it parses, passes :func:`validate` (Ludwig's schema and the pipeline's
    rules) and is one the portable export reproduces (with Ludwig's defaults filled in,
    :func:`mlops.contracts.predictor.check_config`); ConfigError (one sentence) if not.
    """
    config = parse(text, source=source)
    validate(config, source=source)
    from ludwig.schema.model_types.base import ModelConfig

    from mlops.contracts.predictor import UnsupportedModelError, check_config

    try:
        check_config(ModelConfig.from_dict(copy.deepcopy(config)).to_dict())
    except UnsupportedModelError as exc:
        raise ConfigError(
            f"Model config {source} uses {exc}, which the portable export (what serve and "
            "batch-infer load) does not reproduce; nothing was stored (see docs/serving.md)."
        ) from None
    return config


# The Ludwig type of each output feature a model may have.
OUTPUT_TYPES = {TARGET_COLUMN: "number", TARGET_RETURN_COLUMN: "number", TARGET_UP_COLUMN: "binary"}


def output_name(config: dict[str, Any]) -> str:
    return config["output_features"][0]["name"]


def is_classifier_config(config: dict[str, Any]) -> bool:
    return is_classifier(output_name(config))


def input_names(config: dict[str, Any]) -> list[str]:
    return [feature["name"] for feature in config["input_features"]]


def validate(config: dict[str, Any], *, source: str) -> None:
    """Ludwig's own schema check plus what the pipeline needs of the config."""
    outputs = config.get("output_features") or []
    if len(outputs) != 1 or outputs[0].get("name") not in OUTPUT_TYPES:
        raise ConfigError(
            f"Model config {source} must have exactly one output feature named "
            f"{TARGET_COLUMN} or {TARGET_RETURN_COLUMN} (a regressor, type number) or "
            f"{TARGET_UP_COLUMN} (a direction classifier, type binary)."
        )
    name, kind = outputs[0]["name"], outputs[0].get("type")
    if kind != OUTPUT_TYPES[name]:
        raise ConfigError(
            f"Model config {source}: the output feature {name} must be of type "
            f"{OUTPUT_TYPES[name]}, not {kind!r}."
        )
    if not config.get("input_features"):
        raise ConfigError(f"Model config {source} has no input_features.")
    unknown = [n for n in input_names(config) if n not in MODEL_INPUT_COLUMNS]
    if unknown:
        raise ConfigError(
            f"Model config {source} uses input features the dataset lacks: {', '.join(unknown)}."
        )
    from ludwig.config_validation.validation import check_schema
    from ludwig.error import ConfigValidationError
    from ludwig.schema.model_types.base import ModelConfig

    try:
        check_schema(config)
        ModelConfig.from_dict(config)
    except (ConfigValidationError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"Model config {source} does not validate: {first}") from None
