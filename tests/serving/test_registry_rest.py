"""Serving reads a tracking server over its REST API, as the cluster's server is set up.

A real ``mlflow server`` behind basic auth (``--app-name basic-auth``), its artifacts
proxied (``--serve-artifacts``), holds the trained model's versions: the REST client must
read what MLflow's own client reads (alias, run, the portable export), tell a missing
alias from a refused login, and ``mlops serve`` must become ready and answer without
importing mlflow or pandas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import httpx
import numpy as np
import pytest

from conftest import mlflow_server_args
from inference.trained_model import INPUTS, Trained

pytestmark = pytest.mark.slow

ADMIN, PASSWORD = "admin", "a-long-test-password-1"


@dataclass(frozen=True)
class AuthServer:
    url: str
    versions: tuple[str, str]

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD": PASSWORD,
            **extra,
        }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def auth_server(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    from conftest import clean_environ

    folder = tmp_path_factory.mktemp("rest-registry")
    ini = folder / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\n"
        f"admin_username = {ADMIN}\nadmin_password = {PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = mlflow_server_args(
        f"sqlite:///{folder / 'mlflow.db'}",
        port,
        artifacts=str(folder / "artifacts"),
        app_name="basic-auth",
    )
    env = clean_environ(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-test-secret",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
    )
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(0.2)
        served = AuthServer(url, trained.versions)
        with mock.patch.dict(os.environ, served.env()):
            _register(trained, url)
        yield served
    finally:
        os.killpg(server.pid, 15)
        server.wait(60)
        log.close()


def _register(trained: Trained, url: str) -> None:
    """The trained versions as runs of the server, version 1 the champion."""
    from mlflow import MlflowClient

    settings = trained.settings()
    client = MlflowClient(url, url)
    experiment = client.create_experiment("rest-registry")
    client.create_registered_model(trained.model_name)
    for version in trained.versions:
        run = client.create_run(experiment, tags={"as_of": "2017-05-31"})
        client.log_metric(run.info.run_id, "holdout_mae", 0.5 + int(version))
        client.log_artifacts(run.info.run_id, str(trained.model_dirs[version]), "model")
        client.set_terminated(run.info.run_id)
        client.create_model_version(
            trained.model_name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={"dataset_version": f"ds-{version}"},
        )
    client.set_registered_model_alias(trained.model_name, settings.champion_alias, "1")


def test_the_rest_client_reads_what_mlflows_client_reads(
    trained: Trained, auth_server: AuthServer, records
) -> None:
    from mlops.serving.registry import LibraryRegistry, RestRegistry, connect, version_info

    with mock.patch.dict(os.environ, auth_server.env()):
        settings = trained.settings(MLFLOW_TRACKING_URI=auth_server.url)
        rest = connect(settings)
        library = LibraryRegistry(settings)
        assert isinstance(rest, RestRegistry)
        name, alias = settings.model_name, settings.champion_alias
        ref = rest.champion(name, alias)
        assert ref == library.champion(name, alias)
        assert ref is not None and ref.version == "1" and ref.tags["dataset_version"] == "ds-1"
        assert rest.champion(name, "no-such-alias") is None
        assert rest.champion("no-such-model", alias) is None
        info = version_info(rest, ref)
        assert info == version_info(library, ref)
        assert info["holdout_metrics"] == {"mae": 1.5} and info["as_of"] == "2017-05-31"
        assert info["trained_at"] is not None
        predictor = rest.predictor(ref)
        assert predictor.kind == "portable"
        np.testing.assert_array_equal(
            predictor.predict_records(records), library.predictor(ref).predict_records(records)
        )


def test_a_refused_login_is_a_setting_to_fix_not_a_missing_champion(
    trained: Trained, auth_server: AuthServer
) -> None:
    from mlops.errors import ConfigError
    from mlops.serving.registry import connect

    env = auth_server.env(MLFLOW_TRACKING_PASSWORD="wrong-password-x")
    with mock.patch.dict(os.environ, env):
        settings = trained.settings(MLFLOW_TRACKING_URI=auth_server.url)
        with pytest.raises(ConfigError, match=r"refused the login \(HTTP 401 on /api/2.0/mlflow/"):
            connect(settings).champion(settings.model_name, settings.champion_alias)


# Importing a module whose sys.modules entry is None raises ImportError.
_BLOCKED = ("mlflow", "pandas", "torch", "ludwig", "pyarrow")


def test_serve_gets_the_champion_through_the_proxy_without_mlflow_or_pandas(
    trained: Trained, auth_server: AuthServer, subprocess_env
) -> None:
    record = {k: v for k, v in trained.scorable.iloc[-1][[*INPUTS, "close"]].items()}
    code = (
        f"import sys\nfor _name in {_BLOCKED!r}:\n    sys.modules[_name] = None\n"
        "import json, time\n"
        "from fastapi.testclient import TestClient\n"
        "from mlops.serving.app import create_app\n"
        "from mlops.settings import load_settings\n"
        "with TestClient(create_app(load_settings())) as client:\n"
        "    deadline = time.monotonic() + 120\n"
        "    while client.get('/readyz').status_code != 200:\n"
        "        assert time.monotonic() < deadline, client.get('/readyz').text\n"
        "        time.sleep(0.05)\n"
        f"    answer = client.post('/predict', json={json.dumps(record, default=float)})\n"
        "    model = client.get('/model').json()\n"
        "print(json.dumps({'status': answer.status_code, 'body': answer.json(), 'model': model}))\n"
    )
    env = subprocess_env(
        MLOPS_HOME=str(trained.home), SERVE_POLL_SECONDS="0.2", **auth_server.env()
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == 200, out
    assert out["body"]["model_version"] == "1"
    assert out["model"]["holdout_metrics"] == {"mae": 1.5}
    assert out["model"]["predictor"] == "portable"


def test_a_created_model_is_managed_by_its_maker_and_editable_by_training(
    trained: Trained, auth_server: AuthServer
) -> None:
    """Behind basic auth, as in the cluster: the dashboard's user makes the registered
    model of ``mlops models create`` (so it manages it: it may delete versions) and gives
    training EDIT (so it may register versions); others only read."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    from mlops.model_catalog import open_in_registry

    users = {"dash-user": "a-long-dash-password", "train-user": "a-long-train-password"}
    users["other-user"] = "a-long-other-password"
    with mock.patch.dict(os.environ, auth_server.env()):
        admin = AuthServiceClient(auth_server.url)
        for name, password in users.items():
            admin.create_user(name, password)

    def as_user(name: str) -> mock._patch:
        creds = {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": users[name]}
        return mock.patch.dict(os.environ, {**auth_server.env(), **creds})

    def register(model: str) -> str:
        client = MlflowClient(auth_server.url, auth_server.url)
        experiment = client.create_experiment(f"train-{model}")
        run = client.create_run(experiment)
        version = client.create_model_version(model, f"{run.info.artifact_uri}/m", run.info.run_id)
        return version.version

    settings = trained.settings(MLFLOW_TRACKING_URI=auth_server.url)
    with as_user("dash-user"):
        client = MlflowClient(auth_server.url, auth_server.url)
        open_in_registry(
            client, settings.model_copy(update={"mlflow_model_editors": "train-user"}), "made-here"
        )
        open_in_registry(client, settings, "made-closed")  # no editors named
        open_in_registry(client, settings, "made-closed")  # again: nothing changes
    with as_user("train-user"):
        version = register("made-here")
        with pytest.raises(MlflowException, match="Permission denied"):
            register("made-closed")
    with as_user("other-user"), pytest.raises(MlflowException, match="Permission denied"):
        MlflowClient(auth_server.url, auth_server.url).delete_model_version("made-here", version)
    with as_user("dash-user"):
        client = MlflowClient(auth_server.url, auth_server.url)
        client.delete_model_version("made-here", version)
        assert client.search_model_versions("name='made-here'") == []
