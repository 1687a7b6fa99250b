"""Where the served model comes from: the MLflow registry, read one of two ways.

* :class:`RestRegistry`, for a tracking server the REST client covers
  (:func:`~mlops.serving.registry_rest.applies`: the cluster's setup): the alias, the
  version's portable export through the server's artifact proxy and its run, over plain
  HTTP, so serving never imports ``mlflow``. A version whose files are not proxied (an
  ``s3://`` or local artifact root) or that has no portable export is loaded by MLflow's
  client, imported then.
* :class:`LibraryRegistry`, MLflow's client (``mlops.tracking.connect``) for everything
  else, the embedded SQLite registry first.

Both answer the same three questions: :meth:`champion`, :meth:`predictor` and
:meth:`run` (what :func:`version_info` shows of a version).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mlops.contracts.models import ModelRef
from mlops.contracts.portable import (
    ARRAYS_FILE,
    PORTABLE_FOLDER,
    SPEC_FILE,
    PortablePredictor,
    Predictor,
)
from mlops.errors import ModelError
from mlops.serving.registry_rest import NotFound, RegistryRest, RunFacts, applies, artifact_path
from mlops.settings import Settings

log = logging.getLogger(__name__)


class Registry(Protocol):
    def champion(self, name: str, alias: str) -> ModelRef | None: ...

    def predictor(self, ref: ModelRef) -> Predictor: ...

    def run(self, run_id: str) -> RunFacts: ...


def connect(settings: Settings) -> Registry:
    """The REST client when it covers the settings' registry, else MLflow's client."""
    if applies(settings):
        return RestRegistry(settings)
    return LibraryRegistry(settings)


class LibraryRegistry:
    """MLflow's client: the embedded registry, or a server the REST client does not cover."""

    def __init__(self, settings: Settings) -> None:
        from mlops import tracking

        self.client = tracking.connect(settings)

    def champion(self, name: str, alias: str) -> ModelRef | None:
        from mlops.contracts.models import champion

        return champion(self.client, name, alias)

    def predictor(self, ref: ModelRef) -> Predictor:
        from mlops.contracts.models import load_registered

        return load_registered(self.client, ref)

    def run(self, run_id: str) -> RunFacts:
        run = self.client.get_run(run_id)
        return RunFacts(run.info.start_time, dict(run.data.tags), dict(run.data.metrics))


class RestRegistry:
    """A tracking server over its REST API; MLflow's client only for unproxied files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rest = RegistryRest(settings)
        self._library: LibraryRegistry | None = None

    def champion(self, name: str, alias: str) -> ModelRef | None:
        return self.rest.alias(name, alias)

    def predictor(self, ref: ModelRef) -> Predictor:
        source = self.rest.download_uri(ref.name, ref.version)
        url = self.rest.proxied_url(source)
        if url is not None:
            portable = self._portable(ref, url)
            if portable is not None:
                return portable
        # Files outside the proxy, or a version from before portable exports.
        if self._library is None:
            self._library = LibraryRegistry(self.settings)
        return self._library.predictor(ref)

    def run(self, run_id: str) -> RunFacts:
        return self.rest.run(run_id)

    def _portable(self, ref: ModelRef, url: str) -> PortablePredictor | None:
        """The version's portable export, downloaded through the proxy; None if it has none."""
        try:
            with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
                for name in (SPEC_FILE, ARRAYS_FILE):
                    self.rest.download(artifact_path(url, PORTABLE_FOLDER, name), Path(tmp) / name)
                return PortablePredictor.from_dir(tmp)
        except NotFound:
            return None
        except Exception as exc:
            raise ModelError(
                f"Model {ref.name} version {ref.version} cannot be loaded: {exc}"
            ) from None


def version_info(registry: Registry, ref: ModelRef) -> dict[str, Any]:
    """Run id, training date and holdout metrics of a version, from its MLflow run."""
    info: dict[str, Any] = {
        "run_id": ref.run_id,
        "dataset_version": ref.tags.get("dataset_version"),
        "promotion": ref.tags.get("promotion"),
        "promotion_reason": ref.tags.get("promotion_reason"),
        "trained_at": None,
        "as_of": None,
        "holdout_metrics": {},
        "baseline_holdout_metrics": {},
    }
    try:
        run = registry.run(ref.run_id)
    except Exception as exc:  # the model still serves; its description is partial
        log.warning("Run %s of version %s cannot be read: %s", ref.run_id, ref.version, exc)
        info["holdout_metrics"] = {
            k.removeprefix("holdout_"): float(v)
            for k, v in ref.tags.items()
            if k.startswith("holdout_") and _is_float(v)
        }
        return info
    started = run.start_time_ms
    info["trained_at"] = (
        datetime.fromtimestamp(started / 1000, UTC).isoformat() if started is not None else None
    )
    info["as_of"] = run.tags.get("as_of")
    metrics = run.metrics
    info["holdout_metrics"] = {
        k.removeprefix("holdout_"): v
        for k, v in sorted(metrics.items())
        if k.startswith("holdout_")
    }
    info["baseline_holdout_metrics"] = {
        k.removeprefix("baseline_holdout_"): v
        for k, v in sorted(metrics.items())
        if k.startswith("baseline_holdout_")
    }
    return info


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
