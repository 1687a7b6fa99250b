"""Shared fixtures: real PostgreSQL and S3 (moto) servers on loopback, and clean settings.

Nothing here touches the repository's own ``var/`` folder or any real service: the
database is a throwaway cluster in a temporary folder, S3 is moto's server on a free
loopback port with dummy credentials, and settings live under each test's ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_VERSION = "15"
PG_DEFAULT_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")

# Dummy credentials for moto; never real secrets.
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
}
S3_REGION = "us-east-1"

# Environment variables that would leak a developer's or the cluster's configuration
# into the tests (every settings alias, plus what boto3 and libpq read on their own).
_EXTRA_LEAKY = {
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSERVICE",
}
_LOOPBACK = "127.0.0.1,localhost"
TRACKING_PROCESS_ENV = (
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
)


def _settings_env_names() -> set[str]:
    from mlops.settings import Settings

    names = {info.alias.upper() for info in Settings.model_fields.values() if info.alias}
    return names | _EXTRA_LEAKY


def _is_leaky(name: str, names: set[str]) -> bool:
    upper = name.upper()
    return upper in names or upper.startswith("MLOPS_") or upper.startswith("MLFLOW_")


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``os.environ`` without settings variables, plus ``extra``.

    For subprocesses; loopback is excluded from any HTTP proxy.
    """
    names = _settings_env_names()
    env = {k: v for k, v in os.environ.items() if not _is_leaky(k, names)}
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(filter(None, [env.get(key, ""), _LOOPBACK]))
    env.update(extra or {})
    return env


def run_in_process(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``mlops ARGS`` in this process with exactly ``env``'s settings (as a subprocess
    started with ``env`` would see them): its exit code, stdout and stderr. Heavy imports
    (Ludwig, MLflow) are paid once per session instead of once per command.
    """
    import contextlib
    import io
    import logging

    from mlops.cli import main

    out, err = io.StringIO(), io.StringIO()
    names = _settings_env_names()
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if _is_leaky(key, names):
                mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        if cwd is not None:
            mp.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                logging.getLogger().handlers[:] = []
    return subprocess.CompletedProcess(["mlops", *args], code, out.getvalue(), err.getvalue())


def _check_ludwig_schema_once() -> None:
    """Ludwig checks its JSON schema of a model config against JSON Schema's metaschema on
    every config validation (``jsonschema.validate`` does that before validating the
    config): five times per training, about a second each. The schema is a constant
    Ludwig builds once per process (``get_schema`` is cached), so in this process it is
    checked against the metaschema the first time only; every config is still validated
    against it in full, exactly as before. Other callers of ``jsonschema.validate`` are
    untouched. (Ludwig binds ``validate`` when it is imported, hence the patch here,
    before any test imports it.)
    """
    import jsonschema

    original = jsonschema.validate
    checked: dict[tuple[int, int], Any] = {}

    def validate(instance: Any, schema: Any, cls: Any = None, *args: Any, **kwargs: Any) -> None:
        ludwig = sys.modules.get("ludwig.config_validation.validation")
        if ludwig is None or cls is None or cls is not ludwig.get_validator():
            return original(instance, schema, cls, *args, **kwargs)
        key = (id(cls), id(schema))
        if key not in checked:
            cls.check_schema(schema)
            checked[key] = schema  # keeps the schema alive, so its id stays its own
        error = jsonschema.exceptions.best_match(cls(schema, *args, **kwargs).iter_errors(instance))
        if error is not None:
            raise error

    jsonschema.validate = validate


_check_ludwig_schema_once()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLOPS/DB/S3/MLflow/AWS variable of the outer environment reaches a test."""
    names = _settings_env_names()
    for key in list(os.environ):
        if _is_leaky(key, names):
            monkeypatch.delenv(key, raising=False)
    for key in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(key, ",".join(filter(None, [os.environ.get(key, ""), _LOOPBACK])))
    # What mlops.tracking.connect sets for the process (MLflow's HTTP time limits): gone
    # after each test, so a test's 1-second limit never reaches the next module's server.
    for key in TRACKING_PROCESS_ENV:
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


def mlflow_server_args(
    backend_uri: str, port: int, *, artifacts: str | None = None, app_name: str | None = None
) -> list[str]:
    """The command of a real ``mlflow server`` of this venv on loopback, one worker:
    ``backend_uri`` its store, ``artifacts`` (when given) where it proxies artifacts to,
    ``app_name`` e.g. ``basic-auth``."""
    args = [str(Path(sys.executable).with_name("mlflow")), "server"]
    if app_name:
        args += ["--app-name", app_name]
    args += ["--backend-store-uri", backend_uri]
    if artifacts is not None:
        args += ["--serve-artifacts", "--artifacts-destination", artifacts]
    return [*args, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (free at the time of asking)."""
    return free_port()


@pytest.fixture
def subprocess_env() -> Callable[..., dict[str, str]]:
    """``subprocess_env(**extra)``: a clean environment for running the real CLI."""

    def build(**extra: str) -> dict[str, str]:
        return clean_environ(extra)

    return build


# Settings.


@pytest.fixture
def make_settings() -> Callable[..., Any]:
    """``make_settings(tmp_path, **env)``: settings rooted at ``tmp_path`` (env names as keys)."""
    from mlops.settings import load_settings

    def build(home: Path, **env: object) -> Any:
        return load_settings(MLOPS_HOME=str(home), **env)

    return build


@pytest.fixture
def embedded_settings(make_settings: Callable[..., Any], tmp_path: Path) -> Any:
    """The embedded defaults (local store, SQLite) under this test's ``tmp_path``."""
    return make_settings(tmp_path)


# PostgreSQL.


@dataclass
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    socket_dir: Path
    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """Create an empty database with a unique name; returns its URL."""
        from sqlalchemy import create_engine, text

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)


def _find_pg_bin() -> Path:
    candidates = [PG_DEFAULT_BIN]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
        except (OSError, subprocess.CalledProcessError):
            pass
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    pytest.fail(
        f"PostgreSQL {PG_VERSION} server binaries (initdb, pg_ctl) were not found in "
        f"{PG_DEFAULT_BIN}, `pg_config --bindir` or PATH; run `make postgres` "
        "(or `make test`, which installs them).",
        pytrace=False,
    )


def _run_as() -> tuple[list[str], int | None, int | None]:
    """Command prefix and uid/gid to run the server as; PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return [], None, None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], entry.pw_uid, entry.pw_gid
        if shutil.which("setpriv"):
            prefix = [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--clear-groups",
            ]
            return prefix, entry.pw_uid, entry.pw_gid
    pytest.fail(
        "Running as root, but there is neither a `postgres` nor a `nobody` user with "
        "runuser/setpriv to start PostgreSQL as; PostgreSQL refuses to run as root.",
        pytrace=False,
    )


def _pg(prefix: list[str], *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        env={**os.environ, "LC_ALL": "C", "LANG": "C"},
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster listening on 127.0.0.1 only, for the whole session."""
    bin_dir = _find_pg_bin()
    prefix, uid, gid = _run_as()
    # Not under pytest's tmp dir: that one is private to root and the server runs as another user.
    base = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    data_dir = base / "data"
    log_file = base / "server.log"
    if uid is not None:
        os.chown(base, uid, gid)
    base.chmod(0o700)
    init = _pg(
        prefix,
        bin_dir / "initdb",
        "-D",
        data_dir,
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--no-sync",
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}", pytrace=False)

    server = None
    last_error = ""
    for _ in range(3):  # a free port can be taken between choosing and binding it
        port = free_port()
        options = (
            f"-k {base} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        started = _pg(
            prefix,
            bin_dir / "pg_ctl",
            "-D",
            data_dir,
            "-l",
            log_file,
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        if started.returncode == 0:
            server = PostgresServer(bin_dir=bin_dir, data_dir=data_dir, socket_dir=base, port=port)
            break
        log_text = log_file.read_text(errors="replace") if log_file.exists() else ""
        last_error = f"{started.stdout}\n{started.stderr}\n{log_text[-2000:]}"
        _pg(prefix, bin_dir / "pg_ctl", "-D", data_dir, "-m", "immediate", "stop")
    if server is None:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start:\n{last_error}", pytrace=False)

    try:
        _wait_for_postgres(server)
        yield server
    finally:
        _pg(prefix, bin_dir / "pg_ctl", "-D", data_dir, "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_postgres(server: PostgresServer, timeout: float = 30) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(
                host=server.host, port=server.port, user=server.user, dbname="postgres"
            ).close()
            return
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL on port {server.port} does not answer: {exc}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a database created once for the session on the throwaway server."""
    return postgres_server.create_database(prefix="session")


@pytest.fixture
def fresh_pg_database(postgres_server: PostgresServer) -> str:
    """URL of a new, empty database on the throwaway server, just for this test."""
    return postgres_server.create_database()


# S3 (moto server mode).


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of moto's S3-compatible server on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for_port("127.0.0.1", port)
        yield endpoint
    finally:
        server.stop()


def _wait_for_port(host: str, port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"Nothing listens on {host}:{port} after {timeout}s.")
            time.sleep(0.05)


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials for moto, set in this test's environment only."""
    for key, value in S3_TEST_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return dict(S3_TEST_CREDENTIALS)


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def s3_bucket(s3_endpoint: str, s3_credentials: dict[str, str]) -> str:
    """A new, empty bucket on the moto server, unique to this test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


# The longest modules first. `make test` runs the suite on two workers, a module per
# worker at a time (pytest-xdist's loadscope, in collection order): a long module that
# started last would leave one core idle while it ran. Order never matters otherwise.
LONGEST_FIRST = (
    "tests/k8s/test_manifest_run.py",
    "tests/walkforward/test_walk_forward.py",
    "tests/faults/test_signals.py",
    "tests/e2e/test_demo.py",
    "tests/faults/test_killed_during.py",
    "tests/faults/test_servers_down.py",
    "tests/e2e/test_daily_loop_servers.py",
    "tests/serving/test_registry_rest.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: n for n, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
