"""A real MLflow tracking server on loopback and cheap registered versions for the
model-management tests.

The server (SQLite backend, artifacts served by the server itself) starts once per
session. A version is registered without training: a run logs the figures training would
log (``holdout_mape``, ``baseline_holdout_mape``, the Diebold-Mariano p-values) and a tiny
artifact as its "model" - model management never loads a model, it moves aliases and tags.
Each test gets its own model name and its own migrated SQLite database for the audit rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import clean_environ, free_port, mlflow_server_args


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("models-mlflow")
    port = free_port()
    log = root / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            mlflow_server_args(
                f"sqlite:///{root / 'mlflow.db'}", port, artifacts=str(root / "artifacts")
            ),
            env=clean_environ({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"MLflow server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"MLflow server did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        for signum, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signum)
            try:
                server.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Registry:
    """One test's world: settings on the server, a model name of its own, the audit DB."""

    settings: Any
    client: Any
    engine: Any
    name: str

    def register(self, mape: float, naive: float, **figures: float) -> str:
        """A new version whose training run logged these holdout figures."""
        from mlops import tracking
        from mlops.contracts.models import registered_tags

        experiment = tracking.ensure_experiment(self.client, self.settings)
        run = self.client.create_run(experiment, tags={"stage": "train"})
        run_id = run.info.run_id
        metrics = {"holdout_mape": mape, "baseline_holdout_mape": naive, **figures}
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)
        self.client.log_text(run_id, "a stand-in: model management never loads it", "model/x")
        self.client.set_terminated(run_id)
        if registered_tags(self.client, self.name) is None:
            self.client.create_registered_model(self.name)
        tags = {
            "model_name": self.name,
            "dataset_version": "2017-05-31-abc",
            "train_start": "2015-01-02",
            "train_end": "2017-01-31",
            **{k: str(v) for k, v in metrics.items()},
        }
        mv = self.client.create_model_version(
            self.name, f"{run.info.artifact_uri}/model", run_id, tags=tags
        )
        return str(mv.version)

    def actions(self, outcome: str = "done") -> list[dict[str, Any]]:
        """The audit's rows of actions done (or, with ``outcome="refused"``, refused)."""
        from sqlalchemy import select

        from mlops.db.schema import model_actions

        query = select(model_actions).where(model_actions.c.outcome == outcome)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(model_actions.c.id)).mappings()
            return [dict(r) for r in rows]

    def alias(self, alias: str = "champion") -> str | None:
        from mlops.contracts.models import champion

        ref = champion(self.client, self.name, alias)
        return ref.version if ref else None


@pytest.fixture
def registry(mlflow_url: str, tmp_path: Path) -> Iterator[Registry]:
    from mlops import tracking
    from mlops.db import migrate
    from mlops.db.engine import make_engine
    from mlops.settings import load_settings

    name = f"m-{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        MLOPS_HOME=str(tmp_path),
        MLFLOW_TRACKING_URI=mlflow_url,
        MLFLOW_EXPERIMENT=f"e-{name}",
        MODEL_NAME=name,
        DATABASE_URL=None,
        STORE_BACKEND="local",
        STORE_LOCAL_ROOT=None,
    )
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    yield Registry(settings, tracking.connect(settings), engine, name)
    engine.dispose()


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Callable[..., Path]:
    """``catalog_dir(*names)``: a MODEL_CONFIGS_DIR holding a config per name."""
    from mlops.contracts.catalog import packaged_dir

    def build(*names: str) -> Path:
        folder = tmp_path / "models"
        folder.mkdir(exist_ok=True)
        text = (packaged_dir() / "stock-close.yaml").read_text()
        for name in names:
            (folder / f"{name}.yaml").write_text(text)
        return folder

    return build
