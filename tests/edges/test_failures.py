"""The shared edges of issue 10: failure classes, the top-level handler, stage-run leases,
time limits on the database and the tracking server, the migration lock.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mlops import errors, runs
from mlops.db import migrate
from mlops.db.engine import make_engine, wait_for_database
from mlops.db.schema import stage_runs
from mlops.errors import (
    AlreadyRunning,
    ConfigError,
    DatabaseError,
    DataError,
    DiskFullError,
    ModelError,
    PermissionDeniedError,
    StoreError,
    Terminated,
    TrackingError,
    classify,
)

# Failure classes.


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), DiskFullError, 9),
        (OSError(errno.EROFS, "Read-only file system"), PermissionDeniedError, 10),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), PermissionDeniedError, 10),
        (ConfigError("x"), ConfigError, 2),
        (DataError("x"), DataError, 3),
        (ModelError("x"), ModelError, 4),
    ],
)
def test_classify_turns_raw_errors_into_classes(exc, kind, code) -> None:
    found = classify(exc)
    assert isinstance(found, kind) and found.exit_code == code


def test_an_infrastructure_cause_wins_over_the_stage_reading_of_it() -> None:
    from mlflow.exceptions import MlflowException

    try:
        try:
            raise MlflowException("API request to http://x/api failed with exception refused")
        except MlflowException as exc:
            raise ModelError(f"The MLflow registry could not be read: {exc.message}") from None
    except ModelError as exc:
        found = classify(exc)
    assert isinstance(found, TrackingError) and found.exit_code == 8
    assert str(found) == "The MLflow tracking server is not answering (refused on its API)."


def test_a_sentence_quotes_one_clause_of_a_library_never_cut_inside_a_word() -> None:
    from mlflow.exceptions import MlflowException

    urllib3_text = (
        "API request to http://mlflow:5000/api/2.0/mlflow/runs/create failed with exception "
        "HTTPConnectionPool(host='mlflow', port=5000): Max retries exceeded with url: "
        "/api/2.0/mlflow/runs/create (Caused by NewConnectionError('<urllib3.connection."
        "HTTPConnection object at 0x7f3c2e1b5d90>: Failed to establish a new connection: "
        "[Errno 111] Connection refused'))"
    )
    found = classify(MlflowException(urllib3_text))
    assert str(found) == (
        "The MLflow tracking server is not answering (connection refused on "
        "/api/2.0/mlflow/runs/create)."
    )
    long = "word " * 100
    cut = errors.clause(long, 50)
    assert len(cut) <= 50 and cut.endswith("word…")
    assert errors.clause("first; " + "x" * 300 + " second", 100) == "first…"
    assert errors.clause("short one\nsecond line") == "short one"


def test_unknown_errors_are_not_classified() -> None:
    assert classify(RuntimeError("boom")) is None
    assert classify(OSError(errno.EIO, "I/O error")) is None


def test_terminated_exits_128_plus_the_signal() -> None:
    assert Terminated(signal.SIGTERM).exit_code == 143
    assert str(Terminated(signal.SIGINT)) == "terminated by SIGINT"


# The top-level handler.


def _main(capsys, monkeypatch, *args: str, **env: str):
    from mlops.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    logging.getLogger().handlers[:] = []
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_an_unexpected_error_is_one_sentence_and_a_saved_traceback(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from mlops.data_prep import stage

    def boom(*_args, **_kwargs):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(stage, "run", boom)
    code, out, err = _main(
        capsys,
        monkeypatch,
        "migrate",
        MLOPS_HOME=str(tmp_path),
        ERROR_LOG_DIR=str(tmp_path / "errors"),
    )
    assert code == 0
    code, out, err = _main(capsys, monkeypatch, "data-prep")
    assert code == 1 and out == ""
    (line,) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith(
        "error: mlops data-prep failed unexpectedly (RuntimeError: something nobody foresaw); "
        "the traceback is in "
    )
    saved = Path(line.rsplit(" ", 1)[1].rstrip("."))
    assert saved.parent == tmp_path / "errors"
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "something nobody foresaw" in text
    with make_engine(f"sqlite:///{tmp_path / 'mlops.db'}").connect() as conn:
        ((status, error),) = conn.execute(select(stage_runs.c.status, stage_runs.c.error)).all()
    assert status == "failed" and error == "RuntimeError: something nobody foresaw"


def test_stdout_is_the_json_result_alone_and_logs_go_to_stderr(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    env = {"MLOPS_HOME": str(tmp_path), "LOG_LEVEL": "INFO"}
    assert _main(capsys, monkeypatch, "migrate", **env)[0] == 0
    code, out, err = _main(capsys, monkeypatch, "data-prep", "--as-of", "2017-06-01", **env)
    assert code == 0
    assert json.loads(out)["as_of"] == "2017-06-01"
    assert "Dataset 2017-06-01-" in err  # the log line


# Stage-run leases.


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'mlops.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(stage_runs).order_by(stage_runs.c.id)).all()


def _running_in_a_gone_process(engine, run_id: str, stage: str) -> int:
    """A stage run left running on this host by a process that has exited; its pid."""
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(gone.stdout)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            stage_runs.insert().values(
                run_id=run_id,
                stage=stage,
                run_date=None,
                started_at=now,
                heartbeat_at=now,
                status="running",
                host=runs.HOST,
                pid=pid,
                lease_key=f"{stage}|latest",
            )
        )
    return pid


def test_a_run_holds_its_lease_and_writes_heartbeats(engine) -> None:
    day = date(2017, 6, 1)
    with runs.record_stage_run(engine, "monitor", day, heartbeat_seconds=0.05) as run:
        first = _rows(engine)[0].heartbeat_at
        deadline = time.monotonic() + 60
        while _rows(engine)[0].heartbeat_at == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _rows(engine)[0].heartbeat_at > first
        with (
            pytest.raises(AlreadyRunning, match=r"Stage monitor for 2017-06-01 is already"),
            runs.record_stage_run(engine, "monitor", day),
        ):
            pass
        with runs.record_stage_run(engine, "monitor", date(2017, 6, 2)):
            pass  # another day, another lease
        assert runs.current_run() is run
    statuses = [(r.stage, r.run_date, r.status, r.lease_key) for r in _rows(engine)]
    assert statuses == [
        ("monitor", day, "succeeded", None),
        ("monitor", date(2017, 6, 2), "succeeded", None),
    ]


def test_sigterm_inside_a_stage_is_recorded_and_the_handler_restored(engine) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with (
        pytest.raises(Terminated) as caught,
        runs.record_stage_run(engine, "trade", date(2017, 6, 1)),
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises long before this ends
    assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before
    ((status, error),) = [(r.status, r.error) for r in _rows(engine)]
    assert (status, error) == ("failed", "terminated by SIGTERM")


def test_a_run_whose_process_is_gone_is_abandoned_by_the_next_one(engine) -> None:
    pid = _running_in_a_gone_process(engine, "dead", "train")
    with runs.record_stage_run(engine, "train", None):
        pass
    dead, mine = _rows(engine)
    assert dead.status == "abandoned" and f"pid {pid} on {runs.HOST}" in dead.error
    assert "was killed (or crashed) before it could record its end" in dead.error
    assert mine.status == "succeeded"


def test_a_process_that_exited_without_recording_its_end_is_not_called_killed(
    engine, tmp_path, monkeypatch
) -> None:
    """A run whose end the database refused (a full disk: exit 9), in a process that then
    exited: the next command on the host says it exited and how, not "killed"."""
    import subprocess
    import sys

    monkeypatch.setenv("ERROR_LOG_DIR", str(tmp_path / "errors"))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(gone.stdout)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            stage_runs.insert().values(
                run_id="exited",
                stage="monitor",
                started_at=now,
                heartbeat_at=now,
                status="running",
                host=runs.HOST,
                pid=pid,
                lease_key="monitor|latest",
            )
        )

    def refused(*_args, **_kwargs):
        raise DiskFullError("The database could not write: disk full; free some space, then rerun.")

    monkeypatch.setattr(runs, "_write_end", refused)
    ended = runs.StageRun(run_id="exited", stage="monitor", run_date=None, engine=engine)
    runs._finish(engine, ended, "failed", "No space left on device: free some space, then rerun.")
    monkeypatch.undo()
    runs._pending.clear()  # the process exited: what it kept in memory is gone
    monkeypatch.setenv("ERROR_LOG_DIR", str(tmp_path / "errors"))

    with runs.record_stage_run(engine, "monitor", None):
        pass
    exited, mine = _rows(engine)
    assert exited.status == "abandoned", exited.error
    assert (
        f"its process (pid {pid} on {runs.HOST}) exited without recording its end (failed: "
        "No space left on device: free some space, then rerun.)"
    ) in exited.error
    assert "killed" not in exited.error
    assert mine.status == "succeeded"
    assert not list((tmp_path / "errors" / "unrecorded-ends").iterdir())  # forgotten once told


def test_a_silent_run_elsewhere_is_abandoned_only_past_the_lease(engine) -> None:
    old = datetime.now(UTC) - timedelta(seconds=90)
    with engine.begin() as conn:
        conn.execute(
            stage_runs.insert().values(
                run_id="quiet",
                stage="monitor",
                started_at=old,
                heartbeat_at=old,
                status="running",
                host="elsewhere",
                pid=1,
                lease_key="monitor|latest",
            )
        )
    assert runs.reap_abandoned(engine, lease_seconds=120) == []
    assert runs.reap_abandoned(engine, lease_seconds=60) == ["quiet"]
    (row,) = _rows(engine)
    assert row.status == "abandoned" and "no heartbeat for 90 s" in row.error


def test_an_end_the_database_refused_is_recorded_by_the_next_run(engine, monkeypatch) -> None:
    real = runs._write_end
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise DatabaseError("The database stopped answering: gone.")
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "_write_end", failing_once)
    with pytest.raises(DataError), runs.record_stage_run(engine, "batch-infer", None):
        raise DataError("bad day")
    assert [r.status for r in _rows(engine)] == ["running"]
    with runs.record_stage_run(engine, "batch-infer", date(2017, 6, 1)):
        pass
    assert [(r.status, r.error) for r in _rows(engine)] == [
        ("failed", "bad day"),
        ("succeeded", None),
    ]


# Time limits.


@pytest.fixture
def blackhole():
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for sock in accepted:
        sock.close()
    server.close()


def test_a_database_that_never_answers_fails_within_the_connect_timeout(blackhole, caplog) -> None:
    engine = make_engine(f"postgresql+psycopg2://u@127.0.0.1:{blackhole}/db", connect_timeout=2)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(DatabaseError) as caught:
        wait_for_database(engine, attempts=2)
    assert time.monotonic() - began < 30
    assert "did not answer after 2 attempts" in str(caught.value)
    assert any("attempt 1 of 2" in r.getMessage() for r in caplog.records)


def test_a_tracking_server_that_never_answers_fails_within_its_timeout(
    blackhole, make_settings, tmp_path
) -> None:
    from mlops import tracking

    settings = make_settings(
        tmp_path,
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{blackhole}",
        MLFLOW_TIMEOUT_SECONDS=1,
        MLFLOW_CONNECT_ATTEMPTS=2,
    )
    began = time.monotonic()
    with pytest.raises(TrackingError, match=r"no answer within 1 s\) after 2 attempts"):
        tracking.connect(settings)
    assert time.monotonic() - began < 30
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1"


def test_a_closed_object_store_port_is_a_store_error(closed_port, s3_credentials) -> None:
    from mlops.store import S3Store

    store = S3Store(
        "b", endpoint_url=f"http://127.0.0.1:{closed_port}", connect_timeout=1, max_attempts=2
    )
    with pytest.raises(StoreError, match="is not answering") as caught:
        store.get_bytes("k")
    assert caught.value.exit_code == 7


# Migrations at once.


def test_concurrent_migrations_on_sqlite_take_turns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    errors: list[BaseException] = []

    def upgrade() -> None:
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert migrate.current_revision(make_engine(url)) == migrate.head_revision()
