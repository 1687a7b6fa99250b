"""MLflow tracking and registry: where runs go, and which model version is the champion."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.errors import ModelError
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """One registered model version."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured tracking server (or the embedded SQLite store)."""
    import mlflow

    # MLflow sets up its own loggers on import; keep them at our level or quieter.
    level = max(logging.WARNING, logging.getLogger().getEffectiveLevel())
    logging.getLogger("mlflow").setLevel(level)
    if settings.store_backend == "local" or settings.mlflow_artifact_root:
        settings.mlops_home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)


def ensure_experiment(client: MlflowClient, settings: Settings) -> str:
    """The experiment's id, created on first use (with a local artifact root when embedded)."""
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(
        settings.mlflow_experiment, artifact_location=settings.mlflow_artifact_root
    )


def champion(client: MlflowClient, settings: Settings) -> ModelRef | None:
    """The version the champion alias points at, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(settings.model_name, settings.champion_alias)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise ModelError(f"The MLflow registry could not be read: {exc.message}.") from None
    return ModelRef(
        name=settings.model_name, version=str(mv.version), run_id=mv.run_id, tags=dict(mv.tags)
    )


def require_champion(client: MlflowClient, settings: Settings) -> ModelRef:
    ref = champion(client, settings)
    if ref is None:
        raise ModelError(
            f"Model {settings.model_name!r} has no {settings.champion_alias!r} version yet: "
            "run `mlops train` until a model beats the naive baseline."
        )
    return ref


def load_ludwig_model(ref: ModelRef) -> Any:
    """Download and load the Ludwig model of a registered version.

    Registered versions never change, so a process keeps the models it loaded.
    """
    import mlflow

    return _load_cached(mlflow.get_tracking_uri(), ref.uri, ref.name, ref.version)


@functools.lru_cache(maxsize=4)
def _load_cached(tracking_uri: str, uri: str, name: str, version: str) -> Any:
    from ludwig.contribs.mlflow.model import load_model

    try:
        return load_model(uri)
    except Exception as exc:
        raise ModelError(f"Model {name} version {version} cannot be loaded: {exc}") from None
