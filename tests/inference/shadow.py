"""A private copy of the trained model's home with a registry set up for shadow scoring.

The copy shares the trained runs' artifacts (read only) and owns its registry, database
and store, emptied of the predictions and monitoring other tests left in the trained
home: ``stock-close`` v1 champion and v2 challenger, and ``stock-close-mlp`` v1 (the
same artifacts as ``stock-close`` v1, registered again under that name) its champion.
``stock-close-pooled`` has no version. With ``classifier``, the direction classifier
``stock-direction`` v1 (see :mod:`inference.trained_model`) is its model's champion too.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from inference.trained_model import CLASSIFIER, Trained
from mlops.contracts.models import CHALLENGER_ALIAS
from mlops.db.schema import monitoring_metrics, predictions, retrain_requests

OTHER_MODEL = "stock-close-mlp"


@dataclass
class ShadowHome:
    ctx: Any  # mlops.context.Context
    champion: str
    challenger: str

    def register(self, name: str, source: str, run_id: str | None, alias: str | None) -> str:
        """A new version of ``name`` from ``source``; returns its number."""
        from mlflow.exceptions import MlflowException

        client = self.ctx.mlflow
        with contextlib.suppress(MlflowException):  # already registered
            client.create_registered_model(name)
        version = str(client.create_model_version(name, source, run_id=run_id).version)
        if alias is not None:
            client.set_registered_model_alias(name, alias, version)
        return version

    def prepare(self, day: date) -> None:
        from mlops.data_prep import stage as data_prep

        data_prep.run(self.ctx, as_of=day)

    def close(self) -> None:
        self.ctx.engine.dispose()


def shadow_home(
    trained: Trained, tmp_path: Path, *, classifier: bool = False, **env: object
) -> ShadowHome:
    from mlops.context import open_context

    home = tmp_path / "home"
    shutil.copytree(trained.home, home)
    settings = trained.settings(MLOPS_HOME=str(home), **env)
    ctx = open_context(settings)
    # Whatever other tests of the session wrote in the trained home is not this test's.
    with ctx.engine.begin() as conn:
        for table in (predictions, monitoring_metrics, retrain_requests):
            conn.execute(table.delete())
    for key in ctx.store.list("predictions/"):
        ctx.store.delete(key)
    client = ctx.mlflow
    champion, challenger = trained.versions
    name = settings.model_name
    client.set_registered_model_alias(name, settings.champion_alias, champion)
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, challenger)
    first = client.get_model_version(name, champion)
    shadow = ShadowHome(ctx, champion, challenger)
    shadow.register(OTHER_MODEL, first.source, first.run_id, settings.champion_alias)
    if classifier:
        client.set_registered_model_alias(CLASSIFIER, settings.champion_alias, "1")
    return shadow
