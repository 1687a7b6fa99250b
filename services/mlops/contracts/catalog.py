"""The model catalog: which named model configurations exist, and where their configs are.

A catalog is a folder of Ludwig configs, one ``<model name>.yaml`` per model
(``MODEL_CONFIGS_DIR``; the packaged default holds ``stock-close``, ``stock-close-mlp``,
``stock-close-pooled`` and the direction classifier ``stock-direction``; in the cluster
the ConfigMap ``mlops-model-configs``). With ``DATA_BARS=close_only`` the packaged default
is its ``close-only`` folder instead, whose ``stock-close-only`` uses features computed
from closes alone (and is then ``MODEL_NAME``'s default). Each
model is registered in the MLflow registry under its own name. ``MODEL_NAME`` names the
trading model, whose champion feeds trading and serving; ``MODEL_CONFIG_PATH``, when set,
is that model's config (and adds it to the catalog when the folder lacks it); without
either setting, a ``MODEL_NAME`` the packaged folder lacks names the packaged
``stock-close`` config (which then goes by that name alone).

Only names and paths live here; reading and validating a config is training's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlops.errors import ConfigError
from mlops.settings import Settings

# Registry names the catalog accepts: what a file name, a Kubernetes label and an MLflow
# model name all allow.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
SUFFIX = ".yaml"
# The packaged model config of the default trading model.
DEFAULT_CONFIG = f"stock-close{SUFFIX}"
# The packaged catalog of close-only data (DATA_BARS=close_only), a folder of the packaged
# one, and its default trading model.
CLOSE_ONLY_FOLDER = "close-only"
CLOSE_ONLY_MODEL = "stock-close-only"


@dataclass(frozen=True)
class ModelSpec:
    """One named model configuration."""

    name: str
    config_path: Path


def packaged_dir(bars: str = "ohlcv") -> Path:
    """The packaged catalog of ``bars`` (``DATA_BARS``: ``ohlcv`` or ``close_only``)."""
    folder = Path(str(resources.files("mlops") / "resources" / "models"))
    return folder / CLOSE_ONLY_FOLDER if bars == "close_only" else folder


def _default_config(bars: str) -> str:
    return f"{CLOSE_ONLY_MODEL}{SUFFIX}" if bars == "close_only" else DEFAULT_CONFIG


def catalog(settings: Settings) -> dict[str, ModelSpec]:
    """Every model of the catalog by name, the trading model first."""
    folder = settings.model_configs_dir or packaged_dir(settings.data_bars)
    if not folder.is_dir():
        raise ConfigError(f"MODEL_CONFIGS_DIR points at {folder}, which is not a folder.")
    specs: dict[str, ModelSpec] = {}
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        name = path.name[: -len(SUFFIX)]
        if not NAME_PATTERN.match(name):
            raise ConfigError(
                f"Model config {path.name} in {folder} does not name a model: use lower-case "
                "letters, digits and dashes (the file name is the model's registry name)."
            )
        specs[name] = ModelSpec(name, path)
    if settings.model_config_path is not None:
        specs[settings.model_name] = ModelSpec(settings.model_name, settings.model_config_path)
    elif settings.model_name not in specs and settings.model_configs_dir is None:
        # The packaged folder and a trading model named otherwise: the default model goes
        # by that name (as before the catalog existed), not by both.
        default = specs.pop(_default_config(settings.data_bars)[: -len(SUFFIX)])
        specs[settings.model_name] = ModelSpec(settings.model_name, default.config_path)
    if settings.model_name not in specs:
        raise ConfigError(
            f"The trading model {settings.model_name!r} (MODEL_NAME) has no config in {folder}: "
            f"add {settings.model_name}{SUFFIX} or set MODEL_CONFIG_PATH."
        )
    ordered = {settings.model_name: specs.pop(settings.model_name)}
    ordered.update(specs)
    return ordered


def spec(settings: Settings, name: str) -> ModelSpec:
    """The model called ``name``; a sentence listing the catalog when there is none."""
    models = catalog(settings)
    if name not in models:
        hint = ""
        if name == CLOSE_ONLY_MODEL and settings.data_bars != "close_only":
            hint = f" ({name} is the packaged catalog's with DATA_BARS=close_only)"
        raise ConfigError(
            f"No model named {name!r} in the catalog; known: {', '.join(models)}{hint}."
        )
    return models[name]


def model_names(settings: Settings) -> list[str]:
    return list(catalog(settings))
