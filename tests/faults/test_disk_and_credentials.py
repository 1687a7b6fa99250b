"""A full disk, a read-only folder, refused credentials: one sentence of their own class.

Disks are real: a small tmpfs mounted for the test (full: ``No space left on device``),
or remounted read-only (``Read-only file system``). Mounting needs root (CAP_SYS_ADMIN);
elsewhere these tests are skipped with that reason. Credentials are refused by the real
servers: PostgreSQL (unknown role, unknown database) and an S3 server that checks keys
(moto with authentication on).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from conftest import clean_environ, free_port
from faults.conftest import assert_fails, assert_ok
from mlops.db.schema import stage_runs


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(name, size)``: a fresh tmpfs of ``size`` mounted under the test's folder."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "16m", *, read_only_view_of: Path | None = None) -> Path:
        point = tmp_path / name
        point.mkdir()
        if read_only_view_of is None:
            command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(point)]
        else:  # the same files, read-only (a bind mount, even while they are open)
            command = ["mount", "--bind", str(read_only_view_of), str(point)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"a real full or read-only disk needs a tmpfs mount: {done.stderr}")
        mounted.append(point)
        if read_only_view_of is not None:
            _remount(point, "bind,ro")
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _remount(point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)


def _fill(folder: Path) -> Path:
    """Write until the device is full; the filler file's path."""
    filler = folder / "filler.bin"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def _embedded(tmp_path: Path, **env: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "MLOPS_HOME": str(home),
        "ERROR_LOG_DIR": str(tmp_path / "errors"),
        "LOG_LEVEL": "INFO",
        **env,
    }


def _runs(home: Path) -> list:
    engine = create_engine(f"sqlite:///{home / 'mlops.db'}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(stage_runs.c.status, stage_runs.c.error)).all())
    finally:
        engine.dispose()


def test_full_store_disk_under_the_embedded_default(tmp_path, tmpfs, cli) -> None:
    store = tmpfs("store", "64k")
    env = _embedded(tmp_path, STORE_LOCAL_ROOT=str(store))
    assert_ok_text(cli(env, "migrate"))
    outcome = cli(env, "data-prep", "--as-of", "2017-06-01")
    assert_fails(outcome, 9, f"The store at {store}", "No space left on device", "free some space")
    assert not list(store.rglob("manifest.json"))
    ((status, error),) = _runs(tmp_path / "home")
    assert status == "failed" and "No space left on device" in error
    _remount(store, "size=16m")
    result = assert_ok(cli(env, "data-prep", "--as-of", "2017-06-01"))
    assert [p.parent.name for p in store.rglob("manifest.json")] == [result["version"]]


def test_read_only_store(tmp_path, tmpfs, cli) -> None:
    store = tmpfs("store-ro", read_only_view_of=tmpfs("store", "16m"))
    env = _embedded(tmp_path, STORE_LOCAL_ROOT=str(store))
    assert_ok_text(cli(env, "migrate"))
    outcome = cli(env, "data-prep", "--as-of", "2017-06-01")
    assert_fails(outcome, 10, "Read-only file system", "check the folder's owner, mode and mount")
    ((status, _),) = _runs(tmp_path / "home")
    assert status == "failed"


def test_full_disk_under_the_database(tmp_path, tmpfs, cli) -> None:
    home = tmpfs("home", "2m")
    env = {**_embedded(tmp_path), "MLOPS_HOME": str(home), "STORE_LOCAL_ROOT": str(tmp_path / "s")}
    assert_ok_text(cli(env, "migrate"))
    filler = _fill(home)
    outcome = cli(env, "data-prep", "--as-of", "2017-06-01")
    assert_fails(outcome, 9, "database or disk is full", "free some space")
    filler.unlink()
    assert_ok(cli(env, "data-prep", "--as-of", "2017-06-01"))
    assert [status for status, _ in _runs(home)] == ["succeeded"]


def test_read_only_database(tmp_path, tmpfs, cli) -> None:
    home = tmpfs("home", "16m")
    env = {**_embedded(tmp_path), "MLOPS_HOME": str(home), "STORE_LOCAL_ROOT": str(tmp_path / "s")}
    assert_ok_text(cli(env, "migrate"))
    env["MLOPS_HOME"] = str(tmpfs("home-ro", read_only_view_of=home))
    outcome = cli(env, "data-prep", "--as-of", "2017-06-01")
    assert_fails(outcome, 10, "read-only")


def assert_ok_text(outcome) -> str:
    assert outcome.code == 0, str(outcome)
    return outcome.stdout


# Credentials.


def test_postgres_unknown_role_is_a_setting_to_fix_not_retried(world, cli) -> None:
    env = world.with_env(
        DATABASE_URL=f"postgresql+psycopg2://nobody_here@{world.pg.host_port}/{world.database}",
        DATABASE_CONNECT_ATTEMPTS="5",
    )
    outcome = cli(env, "batch-infer")
    assert_fails(
        outcome, 2, "refused the login", 'role "nobody_here" does not exist', "DATABASE_URL"
    )
    assert "attempt" not in outcome.stderr  # a refused login is not waited for


def test_postgres_unknown_database(world, cli) -> None:
    env = world.with_env(
        DATABASE_URL=f"postgresql+psycopg2://postgres@{world.pg.host_port}/no_such_db"
    )
    outcome = cli(env, "migrate")
    assert_fails(outcome, 2, 'database "no_such_db" does not exist', "check DATABASE_URL")


@pytest.fixture
def s3_checking_keys(tmp_path) -> Iterator[str]:
    """moto's S3 server with authentication on: keys it does not know are refused."""
    port = free_port()
    log = tmp_path / "moto.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("moto_server")),
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=clean_environ({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        import socket

        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_object_store_refuses_the_keys(world, cli, s3_checking_keys) -> None:
    env = world.with_env(S3_ENDPOINT_URL=s3_checking_keys)
    outcome = cli(env, "data-prep", "--as-of", "2017-06-05")
    assert_fails(
        outcome,
        2,
        "rejected the credentials (InvalidAccessKeyId)",
        "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    )
    (run,) = world.runs("data-prep")
    assert run.status == "failed" and "InvalidAccessKeyId" in run.error
