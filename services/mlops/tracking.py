"""MLflow: a client for the configured tracking server (or the embedded SQLite store).

The client is passed to whatever needs it; nothing sets or reads MLflow's global
tracking URI, so two clients for two servers can live in one process.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def connect(settings: Settings) -> MlflowClient:
    """A client for the tracking server and registry the settings name."""
    import mlflow

    # MLflow sets up its own loggers on import; keep them at our level or quieter.
    level = max(logging.WARNING, logging.getLogger().getEffectiveLevel())
    logging.getLogger("mlflow").setLevel(level)
    if settings.store_backend == "local" or settings.mlflow_artifact_root:
        settings.mlops_home.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)


def ensure_experiment(client: MlflowClient, settings: Settings) -> str:
    """The experiment's id, created on first use (with a local artifact root when embedded)."""
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(
        settings.mlflow_experiment, artifact_location=settings.mlflow_artifact_root
    )
