"""The fault-injection suite's world: real servers, a proxy in front of each, one champion.

Session-wide (shared by every fault test): the PostgreSQL server and moto's S3 server of
the root conftest, an MLflow tracking server (Postgres backend, artifacts proxied to S3),
and a *template*: a migrated database and a bucket holding the datasets of 2017-05-31,
2017-06-01 and 2017-06-02 and the predictions of 2017-06-01, with one model trained on
2017-05-31 registered as ``faults-model`` and made champion.

Per test (``world``): a copy of the template database (``CREATE DATABASE ... TEMPLATE``)
and bucket, and a :class:`~faults.proxy.Proxy` in front of Postgres, S3 and MLflow; the
command's settings point at the proxies, with short time limits, so a test decides when a
server dies, hangs or comes back. Assertions read the servers directly, not through the
proxies.

Commands run in this process (``cli``: ``mlops.cli.main`` with its stdout and stderr
captured) unless a real process is the point (kill -9, SIGTERM: ``spawn``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, create_engine, func, select, text

from conftest import S3_TEST_CREDENTIALS, clean_environ, free_port, mlflow_server_args
from faults.proxy import Proxy
from mlops.db.schema import datasets, predictions, stage_runs

MODEL_NAME = "faults-model"
EXPERIMENT = "faults"
LINEAGE_DAY = date(2017, 5, 31)
DAYS = (date(2017, 5, 31), date(2017, 6, 1), date(2017, 6, 2))
TEMPLATE_DB = "faults_template"
TEMPLATE_BUCKET = "faults-template"
MLFLOW_BUCKET = "faults-mlflow"
DEADLINE = 180.0  # generous bound for anything a test waits for

# Short time limits: a dead or hung server is given up on in seconds, not minutes.
LIMITS = {
    "DATABASE_CONNECT_ATTEMPTS": "2",
    "DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "60",
    "S3_CONNECT_TIMEOUT_SECONDS": "2",
    "S3_READ_TIMEOUT_SECONDS": "10",
    "S3_MAX_ATTEMPTS": "2",
    "MLFLOW_TIMEOUT_SECONDS": "30",
    "MLFLOW_MAX_RETRIES": "1",
    "MLFLOW_CONNECT_ATTEMPTS": "2",
    "STAGE_HEARTBEAT_SECONDS": "1",
    "STAGE_LEASE_SECONDS": "60",
}


# The MLflow tracking server.


@dataclass(frozen=True)
class MlflowServer:
    url: str


def _wait_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"MLflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"MLflow server did not answer in {DEADLINE} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def mlflow_server(postgres_server, s3_endpoint, tmp_path_factory) -> Iterator[MlflowServer]:
    boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", **_boto_credentials()
    ).create_bucket(Bucket=MLFLOW_BUCKET)
    backend = postgres_server.create_database(prefix="faults_mlflow")
    port = free_port()
    log = tmp_path_factory.mktemp("faults-mlflow") / "server.log"
    env = clean_environ({**S3_TEST_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint})
    with log.open("w") as out:
        server = subprocess.Popen(
            mlflow_server_args(backend, port, artifacts=f"s3://{MLFLOW_BUCKET}/artifacts"),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers with it: one group to stop
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server, log)
        yield MlflowServer(f"http://127.0.0.1:{port}")
    finally:
        _stop_group(server)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group, SIGKILL if it lingers."""
    for signum, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


# The template world.


@dataclass(frozen=True)
class Template:
    database: str
    bucket: str
    champion_version: str
    dataset_versions: dict[date, str]


def _settings(**env: object) -> Any:
    """Settings from explicit values only (nothing of this process's environment)."""
    from mlops.settings import load_settings

    pinned: dict[str, object] = {
        "STORE_LOCAL_ROOT": None,
        "DATA_SOURCE": "sample",
        "MODEL_CONFIG_PATH": None,
        "DATA_PREP_SHARDS": 1,
        "JOB_COMPLETION_INDEX": 0,
        "SYMBOLS": "",
        "LOG_LEVEL": "WARNING",
        "TRAIN_EPOCHS": 1,
    }
    return load_settings(**{**pinned, **env})


@pytest.fixture(scope="session")
def template(postgres_server, s3_endpoint, mlflow_server, tmp_path_factory) -> Template:
    """Datasets, a champion and the predictions of 2017-06-01, made once per session."""
    from mlops import tracking
    from mlops.context import open_context
    from mlops.contracts import datasets as contract
    from mlops.data_prep import stage as data_prep
    from mlops.db import migrate
    from mlops.db.engine import make_engine
    from mlops.inference import stage as inference
    from mlops.training import stage as training

    admin = create_engine(postgres_server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{TEMPLATE_DB}"'))
    admin.dispose()
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", **_boto_credentials()
    )
    s3.create_bucket(Bucket=TEMPLATE_BUCKET)
    settings = _settings(
        MLOPS_HOME=str(tmp_path_factory.mktemp("faults-template")),
        DATABASE_URL=postgres_server.url(TEMPLATE_DB),
        STORE_BACKEND="s3",
        S3_BUCKET=TEMPLATE_BUCKET,
        S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing-secret-key",
        MLFLOW_TRACKING_URI=mlflow_server.url,
        MLFLOW_EXPERIMENT=EXPERIMENT,
        MODEL_NAME=MODEL_NAME,
    )
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    engine.dispose()
    ctx = open_context(settings)
    versions = {day: data_prep.run(ctx, as_of=day).version for day in DAYS}
    trained = training.run(ctx, as_of=LINEAGE_DAY)
    client = tracking.connect(settings)
    client.set_registered_model_alias(MODEL_NAME, "champion", trained.model_version)
    inference.run(ctx, as_of=DAYS[1])
    assert contract.latest_version(ctx.engine) == versions[DAYS[-1]]
    ctx.engine.dispose()
    return Template(TEMPLATE_DB, TEMPLATE_BUCKET, trained.model_version, versions)


# One test's world.


@dataclass
class World:
    database: str
    bucket: str
    db_url: str  # direct, for assertions
    s3_endpoint: str
    mlflow_url: str
    home: Path
    pg: Proxy
    s3: Proxy
    mlflow: Proxy
    template: Template
    env: dict[str, str] = field(default_factory=dict)
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url, pool_size=1, max_overflow=2)
        return self._engine

    def s3_keys(self, prefix: str = "") -> list[str]:
        client = boto3.client(
            "s3", endpoint_url=self.s3_endpoint, region_name="us-east-1", **_boto_credentials()
        )
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(keys)

    def runs(self, stage: str | None = None) -> list[Any]:
        query = select(stage_runs).order_by(stage_runs.c.id)
        if stage is not None:
            query = query.where(stage_runs.c.stage == stage)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def count(self, table: Any, *where: Any) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()

    def dataset_versions(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(conn.execute(select(datasets.c.version)).scalars())

    def predictions_on(self, day: date) -> int:
        return self.count(predictions, predictions.c.prediction_date == day)

    def mlflow_client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.mlflow_url, self.mlflow_url)

    def with_env(self, **extra: object) -> dict[str, str]:
        return {**self.env, **{k: str(v) for k, v in extra.items()}}

    def close(self) -> None:
        for proxy in (self.pg, self.s3, self.mlflow):
            proxy.close()
        if self._engine is not None:
            self._engine.dispose()


def _copy_bucket(s3: Any, source: str, target: str) -> None:
    s3.create_bucket(Bucket=target)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source):
        for item in page.get("Contents", []):
            s3.copy_object(
                Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]}
            )


@pytest.fixture
def make_world(
    template, postgres_server, s3_endpoint, mlflow_server, tmp_path
) -> Iterator[Callable[[], World]]:
    """``make_world()``: a fresh copy of the template with its own proxies (several per test)."""
    made: list[World] = []

    def build() -> World:
        built = _build_world(
            template, postgres_server, s3_endpoint, mlflow_server, tmp_path / f"w{len(made)}"
        )
        made.append(built)
        return built

    yield build
    for built in made:
        built.close()


@pytest.fixture
def world(make_world) -> World:
    return make_world()


def _build_world(template, postgres_server, s3_endpoint, mlflow_server, folder: Path) -> World:
    name = f"w_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template.database}"'))
    admin.dispose()
    bucket = f"w-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", **_boto_credentials()
    )
    _copy_bucket(s3, template.bucket, bucket)
    mlflow_port = int(mlflow_server.url.rsplit(":", 1)[1])
    s3_port = int(s3_endpoint.rsplit(":", 1)[1])
    pg = Proxy("127.0.0.1", postgres_server.port)
    s3_proxy = Proxy("127.0.0.1", s3_port)
    mlflow = Proxy("127.0.0.1", mlflow_port)
    home = folder / "home"
    home.mkdir(parents=True)
    built = World(
        database=name,
        bucket=bucket,
        db_url=postgres_server.url(name),
        s3_endpoint=s3_endpoint,
        mlflow_url=mlflow_server.url,
        home=home,
        pg=pg,
        s3=s3_proxy,
        mlflow=mlflow,
        template=template,
    )
    built.env = {
        "MLOPS_HOME": str(home),
        "DATABASE_URL": f"postgresql+psycopg2://postgres@{pg.host_port}/{name}",
        "STORE_BACKEND": "s3",
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": f"http://{s3_proxy.host_port}",
        **S3_TEST_CREDENTIALS,
        "MLFLOW_TRACKING_URI": f"http://{mlflow.host_port}",
        "MLFLOW_EXPERIMENT": EXPERIMENT,
        "MODEL_NAME": MODEL_NAME,
        "TRAIN_EPOCHS": "1",
        "TRADE_THRESHOLD": "0.0005",
        "LOG_LEVEL": "INFO",
        "ERROR_LOG_DIR": str(folder / "errors"),
        **LIMITS,
    }
    return built


# Running commands.


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def sentence(self) -> str:
        return self.lines[-1] if self.lines else ""

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.code} after {self.seconds:.1f} s\n{self.stdout}\n{self.stderr}"


@pytest.fixture
def cli() -> Callable[..., Outcome]:
    """``cli(env, "batch-infer", "--as-of", ...)``: the real command, in this process."""
    from conftest import run_in_process

    def run(env: dict[str, str], *args: str) -> Outcome:
        began = time.monotonic()
        done = run_in_process(env, *args)
        return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - began)

    return run


@dataclass
class Spawned:
    process: subprocess.Popen
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = DEADLINE) -> Outcome:
        began = time.monotonic()
        code = self.process.wait(timeout=timeout)
        return Outcome(code, self.out.read_text(), self.err.read_text(), time.monotonic() - began)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    """``spawn(env, "train", ...)``: the real command in its own process."""
    started: list[Spawned] = []

    def run(env: dict[str, str], *args: str) -> Spawned:
        name = f"{args[0]}-{uuid.uuid4().hex[:6]}"
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlops.cli", *args],
                env=clean_environ(env),
                stdout=stdout,
                stderr=stderr,
                cwd=tmp_path,
            )
        spawned = Spawned(process, out, err)
        started.append(spawned)
        return spawned

    yield run
    for spawned in started:
        if spawned.process.poll() is None:
            spawned.process.send_signal(signal.SIGKILL)
            spawned.process.wait(timeout=30)


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"Gave up after {timeout:.0f} s waiting for {what}.")
        time.sleep(0.1)


# Assertions shared by the scenarios.


def assert_fails(outcome: Outcome, code: int, *fragments: str) -> str:
    """Exit ``code``, no result on stdout, and one sentence (the last stderr line) holding
    every fragment; no traceback anywhere. Returns the sentence."""
    assert outcome.code == code, str(outcome)
    assert outcome.stdout == "", str(outcome)
    assert "Traceback" not in outcome.stderr, str(outcome)
    errors = [line for line in outcome.lines if line.startswith("error: ")]
    assert errors == [outcome.sentence], str(outcome)
    for fragment in fragments:
        assert fragment in outcome.sentence, str(outcome)
    return outcome.sentence


def assert_ok(outcome: Outcome) -> Any:
    """Exit 0 and stdout is the JSON result alone."""
    assert outcome.code == 0, str(outcome)
    try:
        return outcome.json()
    except ValueError:
        pytest.fail(f"stdout is not the JSON result alone:\n{outcome}")


def assert_no_run_left_running(world: World) -> None:
    assert [r.run_id for r in world.runs() if r.status == "running"] == []
