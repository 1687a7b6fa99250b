"""What serving reads of an MLflow tracking server, over its REST API (no ``mlflow`` import).

Through MLflow's own client, the first registry call imports ``mlflow`` (about 0.75 s for
mlflow-skinny, 1.1 s for mlflow) before the server can become ready. Against a tracking
server (an ``http(s)://`` tracking URI, as in the cluster) serving needs four routes of
MLflow 3's REST API, read here with ``requests``:

* ``GET /api/2.0/mlflow/registered-models/alias?name=&alias=``: the version an alias
  points at (``{"model_version": {"version", "run_id", "tags": [{"key", "value"}]}}``);
* ``GET /api/2.0/mlflow/model-versions/get-download-uri?name=&version=``: where its
  files are (``{"artifact_uri": ...}``; the version's source, ``<run artifacts>/model``);
* ``GET /api/2.0/mlflow/runs/get?run_id=``: its run (start time, tags, latest metrics);
* ``GET /api/2.0/mlflow-artifacts/artifacts/<path>``: one file through the server's
  artifact proxy (``--serve-artifacts``), for a download URI ``mlflow-artifacts:/<path>``.

Errors come back as MLflow's client reports them (``{"error_code", "message"}``): a
missing model, version or alias is ``None`` or :class:`NotFound`; anything else is a
:class:`~mlops.errors.ModelError` whose first line says what failed. Credentials, TLS,
time limits and retries are read as MLflow's client reads them
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` or ``MLFLOW_TRACKING_TOKEN``,
``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``, and the settings'
``MLFLOW_TIMEOUT_SECONDS``/``MLFLOW_MAX_RETRIES``); :func:`applies` is false for what is
left to MLflow's client: a credentials file, AWS SigV4, an auth plugin, a client
certificate, a workspace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mlops.contracts.models import MISSING_CODES, ModelRef
from mlops.errors import ModelError, login_refused, not_mlflow
from mlops.settings import Settings

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
# What MLflow's client retries (mlflow.utils.request_utils._TRANSIENT_FAILURE_RESPONSE_CODES).
TRANSIENT_STATUSES = (408, 429, 500, 502, 503, 504)
# Set, any of these means an authentication or routing only MLflow's client knows.
LIBRARY_ONLY_VARIABLES = (
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_WORKSPACE",
)


class NotFound(ModelError):
    """The server has no such file (or model, version, alias)."""


def applies(settings: Settings) -> bool:
    """Whether this client reads the settings' registry as MLflow's client would."""
    if not settings.tracking_uri.startswith(("http://", "https://")):
        return False
    if any(os.environ.get(name) for name in LIBRARY_ONLY_VARIABLES):
        return False
    return not Path("~/.mlflow/credentials").expanduser().exists()


@dataclass(frozen=True)
class RunFacts:
    """What serving shows of a version's training run."""

    start_time_ms: int | None
    tags: dict[str, str]
    metrics: dict[str, float]


class RegistryRest:
    """A client of one tracking server: one connection pool, MLflow's retries and limits."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.tracking_uri.rstrip("/")
        self.timeout = float(settings.mlflow_timeout_seconds)
        self.session = requests.Session()
        retry = Retry(
            total=settings.mlflow_max_retries,
            backoff_factor=1,
            status_forcelist=TRANSIENT_STATUSES,
            allowed_methods=frozenset({"GET"}),
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        username = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if username and password:
            self.session.auth = (username, password)
        elif token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if _true(os.environ.get("MLFLOW_TRACKING_INSECURE_TLS")):
            self.session.verify = False
        elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            self.session.verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]

    # The registry and the runs.

    def alias(self, name: str, alias: str) -> ModelRef | None:
        """The version ``alias`` points at; None when the model or the alias does not exist."""
        try:
            body = self._json("registered-models/alias", name=name, alias=alias)
        except NotFound:
            return None
        version = body["model_version"]
        return ModelRef(
            name=name,
            version=str(version["version"]),
            run_id=version.get("run_id", ""),
            tags=_pairs(version.get("tags")),
        )

    def download_uri(self, name: str, version: str) -> str:
        body = self._json("model-versions/get-download-uri", name=name, version=version)
        return str(body["artifact_uri"])

    def run(self, run_id: str) -> RunFacts:
        run = self._json("runs/get", run_id=run_id)["run"]
        start = run.get("info", {}).get("start_time")
        data = run.get("data", {})
        return RunFacts(
            start_time_ms=int(start) if start is not None else None,
            tags=_pairs(data.get("tags")),
            metrics={m["key"]: float(m["value"]) for m in data.get("metrics") or []},
        )

    # Artifacts, through the server's proxy.

    def proxied_url(self, artifact_uri: str) -> str | None:
        """The proxy URL of an ``mlflow-artifacts:`` URI (or of a URL on the proxy's route),
        None for a URI the server does not proxy (s3://, a local path, runs:/, ...)."""
        parts = urlsplit(artifact_uri)
        if parts.scheme == "mlflow-artifacts":
            base = urlsplit(self.base)
            host = f"{base.scheme}://{parts.netloc or base.netloc}{base.path.rstrip('/')}"
            return f"{host}{ARTIFACTS_API}/{parts.path.strip('/')}"
        if parts.scheme in {"http", "https"} and ARTIFACTS_API in parts.path:
            return artifact_uri.rstrip("/")
        return None

    def download(self, url: str, target: Path) -> Path:
        """One file at ``url`` into ``target``, streamed; NotFound when there is none."""
        with self._get(url, stream=True) as response:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
        return target

    # HTTP.

    def _json(self, route: str, **params: str) -> dict[str, Any]:
        with self._get(f"{self.base}{API}/{route}", params=params) as response:
            return response.json()

    def _get(self, url: str, **kwargs: Any) -> requests.Response:
        what = urlsplit(url).path
        try:
            response = self.session.get(url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ModelError(
                f"The MLflow registry could not be read: {_first_line(exc)} ({what})."
            ) from None
        if response.ok:
            return response
        code, message = _error(response)
        response.close()
        if response.status_code in (401, 403):
            raise login_refused(response.status_code, what)
        # MLflow answers its REST routes' errors in JSON: a 4xx without it is another server.
        if code is None and 400 <= response.status_code < 500 and what.startswith(f"{API}/"):
            raise not_mlflow(message, what, self.base)
        if response.status_code == 404 or code in MISSING_CODES:
            raise NotFound(f"{what}: {message}")
        raise ModelError(f"The MLflow registry could not be read: {message} ({what}).")


def artifact_path(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(quote(p) for p in parts)])


def _error(response: requests.Response) -> tuple[str | None, str]:
    """MLflow's error code and message, or the HTTP status when the body is not MLflow's."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return body.get("error_code"), str(body["message"])
    return None, f"HTTP {response.status_code} {response.reason or ''}".strip()


def _pairs(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {item["key"]: str(item.get("value", "")) for item in items or []}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}
