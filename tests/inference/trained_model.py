"""A tiny trained model, registered twice, shared by tests/inference and tests/serving.

Trained once per test process (whichever folder asks first): the packaged model config on
the bundled sample up to 2017-05-31, two epochs, in an embedded home (SQLite database and
MLflow, local store). Version 1 uses the default seed, version 2 another seed, so their
answers differ. Two epochs rarely beat the naive forecast, and then training leaves the
``champion`` alias unset; the tests need a champion, so the alias is set here on version
1 whatever the promotion decided.

Beside it, the direction classifier ``stock-direction`` is trained once (version 1, two
epochs) from a variant of its packaged config whose inputs use every normalisation the
portable export reproduces (zscore, minmax, iq, none) and whose combiner has a hidden
layer. It gets neither the champion nor the challenger alias (whatever its gate decided),
so the tests of the regressor see no classifier scored; it holds the alias
``direction-test`` instead, which a test makes the champion alias (CHAMPION_ALIAS) to
serve it, and tests that score it set its champion in a copy of the home.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
import yaml

from mlops.contracts import datasets
from mlops.training.model_config import default_config_path, input_names

AS_OF = date(2017, 5, 31)
CLASSIFIER = "stock-direction"
# The classifier's inputs and their normalisations (the variant of the packaged config).
CLASSIFIER_NORMALIZATIONS = {
    "rsi_14": "minmax",
    "return_1d": "zscore",
    "range_pct": None,
    "log_volume": "iq",
    "close_to_sma_10": "zscore",
}
CLASSIFIER_INPUTS = [*CLASSIFIER_NORMALIZATIONS, "symbol"]
CLASSIFIER_ALIAS = "direction-test"
# The input features of the default model config.
INPUTS = input_names(yaml.safe_load(default_config_path().read_text()))

# Settings pinned to the embedded defaults, whatever the outer environment holds.
PINNED = {
    "DATABASE_URL": None,
    "MLFLOW_TRACKING_URI": None,
    "STORE_BACKEND": "local",
    "STORE_LOCAL_ROOT": None,
    "DATA_SOURCE": "sample",
    "MODEL_CONFIG_PATH": None,
    "DATA_PREP_SHARDS": 1,
    "JOB_COMPLETION_INDEX": 0,
    "SERVE_API_TOKEN": None,
    "LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Trained:
    home: Path
    model_name: str
    versions: tuple[str, str]
    model_dirs: dict[str, Path]  # version -> local MLflow model folder
    frame: pd.DataFrame  # the whole published dataset (warm-up rows included)
    classifier_dir: Path  # the classifier's version 1, a local MLflow model folder

    @property
    def scorable(self) -> pd.DataFrame:
        return self.frame[~self.frame["warmup"]].reset_index(drop=True)

    def settings(self, **env: object):  # -> Settings
        from mlops.settings import load_settings

        return load_settings(**{"MLOPS_HOME": str(self.home), "TRAIN_EPOCHS": 2, **PINNED, **env})

    def set_champion(self, version: str) -> None:
        from mlops import tracking

        settings = self.settings()
        client = tracking.connect(settings)
        client.set_registered_model_alias(settings.model_name, settings.champion_alias, version)


_trained: dict[str, Trained] = {}


def train_once(base: Path) -> Trained:
    if "model" not in _trained:
        with pytest.MonkeyPatch.context() as mp:
            for key in list(os.environ):
                if key.upper().startswith(("MLOPS_", "MLFLOW_", "SERVE_")) or key.upper() in PINNED:
                    mp.delenv(key, raising=False)
            _trained["model"] = _train(base / "trained-model")
    return _trained["model"]


def _train(home: Path) -> Trained:
    from mlops import tracking
    from mlops.context import Context, open_context
    from mlops.data_prep import stage as data_prep
    from mlops.db import migrate
    from mlops.db.engine import make_engine
    from mlops.settings import load_settings
    from mlops.training import stage as train

    settings = load_settings(MLOPS_HOME=str(home), TRAIN_EPOCHS=2, **PINNED)
    migrate.upgrade(make_engine(settings.db_url))
    ctx = open_context(settings)
    data_prep.run(ctx, as_of=AS_OF)
    first = train.run(ctx, as_of=AS_OF)
    other_seed = load_settings(MLOPS_HOME=str(home), TRAIN_EPOCHS=2, RANDOM_SEED=7, **PINNED)
    second = train.run(Context(other_seed, ctx.engine, ctx.store), as_of=AS_OF)
    classifier = train.run(
        Context(_classifier_settings(home), ctx.engine, ctx.store), as_of=AS_OF, model=CLASSIFIER
    )
    client = tracking.connect(settings)
    for alias in (settings.champion_alias, "challenger"):
        with contextlib.suppress(Exception):  # the gate may have set neither
            client.delete_registered_model_alias(CLASSIFIER, alias)
    client.set_registered_model_alias(CLASSIFIER, CLASSIFIER_ALIAS, classifier.model_version)
    # Training may not beat the naive forecast and then sets no champion: set it here.
    client.set_registered_model_alias(
        settings.model_name, settings.champion_alias, first.model_version
    )
    dirs = {}
    for version in (first.model_version, second.model_version):
        source = client.get_model_version(settings.model_name, version).source
        dirs[version] = Path(unquote(urlparse(source).path))
    source = client.get_model_version(CLASSIFIER, classifier.model_version).source
    _, frame = datasets.load(ctx.store, datasets.latest_version(ctx.engine, AS_OF))
    ctx.engine.dispose()
    return Trained(
        home=home,
        model_name=settings.model_name,
        versions=(first.model_version, second.model_version),
        model_dirs=dirs,
        frame=frame,
        classifier_dir=Path(unquote(urlparse(source).path)),
    )


def _classifier_settings(home: Path):  # -> Settings
    """Settings naming the classifier's variant config (MODEL_CONFIG_PATH of MODEL_NAME)."""
    from mlops.contracts.catalog import packaged_dir
    from mlops.settings import load_settings

    config = yaml.safe_load((packaged_dir() / f"{CLASSIFIER}.yaml").read_text())
    config["input_features"] = [
        {"name": name, "type": "number", "preprocessing": {"normalization": norm}}
        for name, norm in CLASSIFIER_NORMALIZATIONS.items()
    ] + [{"name": "symbol", "type": "category"}]
    config["combiner"] = {"type": "concat", "num_fc_layers": 1, "output_size": 8}
    path = home / "classifier.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_settings(
        MLOPS_HOME=str(home),
        TRAIN_EPOCHS=2,
        **{**PINNED, "MODEL_CONFIG_PATH": str(path)},
        MODEL_NAME=CLASSIFIER,
    )


def copy_database(trained: Trained, path: Path) -> Path:
    """A copy of the trained home's SQLite database at ``path``, through SQLite's backup
    API: the database is in WAL mode, so its file alone may lack what the open engine
    has not checkpointed yet (the schema itself, right after training)."""
    import sqlite3

    source, target = sqlite3.connect(trained.home / "mlops.db"), sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return path
