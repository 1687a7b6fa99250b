"""MLflow: a client for the configured tracking server (or the embedded SQLite store).

The client is passed to whatever needs it; nothing sets or reads MLflow's global
tracking URI, so two clients for two servers can live in one process.

Time limits: MLflow's HTTP calls read ``MLFLOW_HTTP_REQUEST_TIMEOUT``,
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and its backoff variables from the environment at each
request; :func:`connect` sets them from ``MLFLOW_TIMEOUT_SECONDS`` and
``MLFLOW_MAX_RETRIES`` (MLflow's own defaults, 120 s and 7 retries with a doubling
backoff, add up to minutes of silence when the server is down), and stops MLflow printing
run links to stdout (the command's JSON result goes there alone). Before the client is
handed out, a tracking server is asked whether it is up (``/health``), up to
``MLFLOW_CONNECT_ATTEMPTS`` times, each failure logged, then one ``TrackingError``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from mlops.errors import TrackingError, clause, login_refused, network_reason, not_mlflow
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MAX_PROBE_WAIT = 10.0


def configure_http(settings: Settings) -> None:
    """MLflow's HTTP time limits and retries, from our settings (read by MLflow per request)."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.mlflow_timeout_seconds)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.mlflow_max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0.5"
    # MLflow writes "View run ... at: <url>" to stdout when a run ends: stdout is ours.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no bars in the logs


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def probe(settings: Settings) -> None:
    """Fail with one sentence unless the tracking server answers ``/health``; bounded, logged."""
    uri = settings.tracking_uri
    if not is_server(uri):
        return
    import requests

    url = uri.rstrip("/") + "/health"
    attempts = settings.mlflow_connect_attempts
    timeout = (min(10.0, float(settings.mlflow_timeout_seconds)), settings.mlflow_timeout_seconds)
    wait = 0.5
    for attempt in range(1, attempts + 1):
        try:
            response = requests.get(url, timeout=timeout)
            if response.status_code < 400:
                return
            if response.status_code in (401, 403):  # MLflow itself never guards /health
                raise login_refused(response.status_code, url)
            if response.status_code < 500:
                raise not_mlflow(f"HTTP {response.status_code}", "/health", uri)
            why = f"HTTP {response.status_code}"
        except requests.Timeout:
            why = f"no answer within {settings.mlflow_timeout_seconds} s"
        except requests.RequestException as exc:
            why = _reason(exc)
        if attempt == attempts:
            raise TrackingError(
                f"The MLflow tracking server at {uri} is not answering ({why}) after "
                f"{attempts} attempt{'s' if attempts > 1 else ''}: check MLFLOW_TRACKING_URI "
                "and that the server runs."
            )
        log.warning(
            "MLflow tracking server not answering (%s), attempt %d of %d; retrying in %.1f s",
            why,
            attempt,
            attempts,
            wait,
        )
        time.sleep(wait)
        wait = min(wait * 2, MAX_PROBE_WAIT)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return network_reason(text) or clause(text, 160) or type(exc).__name__


def connect(settings: Settings) -> MlflowClient:
    """A client for the tracking server and registry the settings name (checked to be up)."""
    configure_http(settings)
    import mlflow

    # MLflow sets up its own loggers on import; keep them at our level or quieter.
    level = max(logging.WARNING, logging.getLogger().getEffectiveLevel())
    logging.getLogger("mlflow").setLevel(level)
    if settings.store_backend == "local" or settings.mlflow_artifact_root:
        settings.mlops_home.mkdir(parents=True, exist_ok=True)
    probe(settings)
    return mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)


def ensure_experiment(client: MlflowClient, settings: Settings) -> str:
    """The experiment's id, created on first use (with a local artifact root when embedded).

    Processes that start together (the pods of an Indexed Job, a process pool) may all
    find it missing: the ones whose creation loses the race use the winner's.
    """
    from mlflow.exceptions import MlflowException

    name = settings.mlflow_experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=settings.mlflow_artifact_root)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        log.info("Experiment %s was created by another process meanwhile: using it", name)
        return experiment.experiment_id
