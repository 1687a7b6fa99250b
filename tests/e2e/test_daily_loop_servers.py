"""The stages as the cluster runs them: the real CLI against real servers on loopback.

PostgreSQL for the application and for MLflow, an MLflow tracking server proxying its
artifacts to S3, and S3 over HTTP (moto's server) as the object store. Each command runs
in this process (``run_in_process``: the settings a Job's process would see, without a
new interpreter importing Ludwig and MLflow per command); the servers are real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from sqlalchemy import create_engine, func, select, text

from conftest import mlflow_server_args, run_in_process
from mlops.db.schema import datasets, monitoring_metrics, orders, predictions, stage_runs

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def servers(postgres_server, s3_endpoint, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Databases for the app and MLflow, a bucket, and an MLflow server in front of them."""
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-key"}
    bucket = "mlops-loop"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in ("loop_app", "loop_mlflow"):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    port = _free_port()
    log = tmp_path_factory.mktemp("mlflow") / "server.log"
    env = {
        **_base_env(),
        **creds,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
    }
    with log.open("w") as out:
        server = subprocess.Popen(
            mlflow_server_args(
                postgres_server.url("loop_mlflow"), port, artifacts=f"s3://{bucket}/mlflow"
            ),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server, log)
        yield {
            **creds,
            "DATABASE_URL": postgres_server.url("loop_app"),
            "STORE_BACKEND": "s3",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": s3_endpoint,
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
            "LOG_FORMAT": "json",
            "TRADE_THRESHOLD": "0.0005",
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def _base_env() -> dict[str, str]:
    """This process's environment (already cleaned of settings) with loopback unproxied."""
    return {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"MLflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"MLflow server did not answer in {timeout} s: {log.read_text()[-2000:]}")


def mlops(env: dict[str, str], tmp_path: Path, *args: str) -> dict:
    result = run_in_process({**env, "MLOPS_HOME": str(tmp_path)}, *args)
    assert result.returncode == 0, f"mlops {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    if args[0] == "migrate":
        return {}
    # JSON log lines come first on stdout; the result is the last JSON document.
    start = result.stdout.rfind("\n{\n")
    return json.loads(result.stdout[start + 1 :] if start >= 0 else result.stdout)


def test_daily_loop_on_postgres_s3_and_mlflow_server(servers, tmp_path):
    env = servers
    mlops(env, tmp_path, "migrate")
    prep = mlops(env, tmp_path, "data-prep", "--as-of", "2017-05-31")
    trained = mlops(env, tmp_path, "train", "--as-of", "2017-05-31")
    assert trained["promoted"], trained["reason"]
    assert trained["dataset_version"] == prep["version"]

    mlops(env, tmp_path, "data-prep", "--as-of", "2017-06-01")
    first = mlops(env, tmp_path, "batch-infer", "--as-of", "2017-06-01")
    again = mlops(env, tmp_path, "batch-infer", "--as-of", "2017-06-01")
    assert first["new_rows"] == 5 and again["new_rows"] == 0
    traded = mlops(env, tmp_path, "trade", "--as-of", "2017-06-01")
    retraded = mlops(env, tmp_path, "trade", "--as-of", "2017-06-01")
    assert retraded["rerun"] and retraded["orders_placed"] == []

    mlops(env, tmp_path, "data-prep", "--as-of", "2017-06-02")
    mlops(env, tmp_path, "batch-infer", "--as-of", "2017-06-02")
    traded2 = mlops(env, tmp_path, "trade", "--as-of", "2017-06-02")
    monitored = mlops(env, tmp_path, "monitor", "--as-of", "2017-06-02")
    assert monitored["evaluated"] == 5
    assert set(monitored["reports"]) == {"quality", "drift"}

    engine = create_engine(env["DATABASE_URL"])
    with engine.connect() as conn:
        n_pred = conn.execute(select(func.count()).select_from(predictions)).scalar_one()
        n_orders = conn.execute(select(func.count()).select_from(orders)).scalar_one()
        n_metrics = conn.execute(select(func.count()).select_from(monitoring_metrics)).scalar_one()
        n_datasets = conn.execute(select(func.count()).select_from(datasets)).scalar_one()
        statuses = conn.execute(select(stage_runs.c.stage, stage_runs.c.status)).all()
    assert n_pred == 10
    assert n_orders == len(traded["orders_placed"]) + len(traded2["orders_placed"])
    assert n_metrics > 0 and n_datasets == 3
    assert {s for _, s in statuses} == {"succeeded"}

    s3 = boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=env["S3_BUCKET"])["Contents"]}
    assert f"datasets/features/{prep['version']}/manifest.json" in keys
    assert f"predictions/2017-06-01/stock-close-v{first['model_version']}.parquet" in keys
    assert "reports/monitoring/2017-06-02/drift.html" in keys
    # The model's artifacts went through the MLflow server into the bucket.
    assert any(k.startswith("mlflow/") and k.endswith("MLmodel") for k in keys)

    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("stock-close", "champion").version == str(
        trained["model_version"]
    )
