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

The **stored catalog** extends that folder without touching it (or the ConfigMap): the
configs ``mlops models create`` (or the dashboard's form) checked and stored in the object
store, ``catalog/models/<model name>.yaml`` (:func:`mlops.contracts.keys.stored_config_key`).
Every reader of the catalog passes the store, so ``mlops train --model NAME``, ``train
--all``, batch inference and the rest find them; a name in both is the folder's (a
stored config never replaces a bundled one). A stored config is read into a file of its
own (named by its content, under the temporary folder) so it has a path like the others.

Only names and paths live here; reading and validating a config is training's business.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlops.contracts.keys import MODEL_CATALOG_PREFIX, MODEL_CONFIG_SUFFIX, stored_config_key
from mlops.errors import ConfigError
from mlops.settings import Settings
from mlops.store import ObjectStore

log = logging.getLogger(__name__)

# Registry names the catalog accepts: what a file name, a Kubernetes label and an MLflow
# model name all allow.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
SUFFIX = MODEL_CONFIG_SUFFIX
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
    stored: bool = False  # from the stored catalog (``mlops models create``)


def packaged_dir(bars: str = "ohlcv") -> Path:
    """The packaged catalog of ``bars`` (``DATA_BARS``: ``ohlcv`` or ``close_only``)."""
    folder = Path(str(resources.files("mlops") / "resources" / "models"))
    return folder / CLOSE_ONLY_FOLDER if bars == "close_only" else folder


def _default_config(bars: str) -> str:
    return f"{CLOSE_ONLY_MODEL}{SUFFIX}" if bars == "close_only" else DEFAULT_CONFIG


def catalog(settings: Settings, store: ObjectStore | None) -> dict[str, ModelSpec]:
    """Every model of the catalog by name, the trading model first: the folder's (the
    bundled catalog) and, given the ``store``, the stored catalog's."""
    extra = stored(store) if store is not None else {}
    specs = bundled(settings, also=frozenset(extra))
    for name, found in extra.items():
        if name in specs:
            log.warning("The stored config of %s is not used: the bundled catalog has it.", name)
            continue
        specs[name] = found
    if settings.model_name not in specs:
        folder = settings.model_configs_dir or packaged_dir(settings.data_bars)
        raise ConfigError(
            f"The trading model {settings.model_name!r} (MODEL_NAME) has no config in {folder}: "
            f"add {settings.model_name}{SUFFIX} or set MODEL_CONFIG_PATH."
        )
    ordered = {settings.model_name: specs.pop(settings.model_name)}
    ordered.update(specs)
    return ordered


def bundled(settings: Settings, also: frozenset[str] = frozenset()) -> dict[str, ModelSpec]:
    """The bundled catalog: the folder's models (and MODEL_CONFIG_PATH's); ``also``: the
    stored catalog's names (a trading model among them keeps its own config)."""
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
    elif (
        settings.model_name not in specs
        and settings.model_name not in also
        and settings.model_configs_dir is None
    ):
        # The packaged folder and a trading model named otherwise: the default model goes
        # by that name (as before the catalog existed), not by both.
        default = specs.pop(_default_config(settings.data_bars)[: -len(SUFFIX)])
        specs[settings.model_name] = ModelSpec(settings.model_name, default.config_path)
    return specs


def stored(store: ObjectStore) -> dict[str, ModelSpec]:
    """The stored catalog: each config under ``catalog/models/`` by model name."""
    from mlops.store import StoreError

    specs: dict[str, ModelSpec] = {}
    for key in sorted(store.list(f"{MODEL_CATALOG_PREFIX}/")):
        name = key.rsplit("/", 1)[-1].removesuffix(SUFFIX)
        if not key.endswith(SUFFIX) or not NAME_PATTERN.match(name):
            continue  # not a config this module wrote
        try:
            text = store.get_bytes(stored_config_key(name))
        except StoreError:  # deleted since the listing
            continue
        specs[name] = ModelSpec(name, _local_copy(name, text), stored=True)
    return specs


def _local_copy(name: str, text: bytes) -> Path:
    """``text`` in a file of the temporary folder named by its content (written once,
    atomically: processes that read the same config share the file)."""
    digest = hashlib.sha256(text).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "mlops-stored-catalog"
    path = folder / f"{name}-{digest}{SUFFIX}"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-")
        with os.fdopen(handle, "wb") as out:
            out.write(text)
        os.replace(tmp, path)
    return path


def spec(settings: Settings, store: ObjectStore | None, name: str) -> ModelSpec:
    """The model called ``name``; a sentence listing the catalog when there is none."""
    models = catalog(settings, store)
    if name not in models:
        hint = ""
        if name == CLOSE_ONLY_MODEL and settings.data_bars != "close_only":
            hint = f" ({name} is the packaged catalog's with DATA_BARS=close_only)"
        raise ConfigError(
            f"No model named {name!r} in the catalog; known: {', '.join(models)}{hint}."
        )
    return models[name]


def model_names(settings: Settings, store: ObjectStore | None) -> list[str]:
    return list(catalog(settings, store))
