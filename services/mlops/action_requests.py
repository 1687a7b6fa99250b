"""Requests for work: "retrain MODEL" and "run monitoring now", one row each.

Whoever asks (the dashboard's buttons, ``mlops models retrain`` in a pod) only writes a
row of ``action_requests``; it never starts the work itself. A runner does the work and
records it on the row, ``queued`` -> ``running`` -> ``succeeded`` | ``failed``, with the
exit code and one sentence:

- ``local`` (one machine, the embedded default): the dashboard starts
  ``mlops requests run ID`` as a detached background process (:func:`launch`), which runs
  the request's command (:func:`command`) as a child process and records how it ended
  (:func:`run_local`). Its output goes to ``<MLOPS_HOME>/requests/<id>.log``.
- ``kubernetes``: the controller (``mlops requests process``, the CronJob
  ``mlops-requests`` with the orchestrator's identity) turns each queued row into a Job
  from a fixed template and follows it (:mod:`mlops.orchestration`).

The command is fixed by the request's kind, never by the one who asks: ``mlops train
--model NAME`` or ``mlops monitor``. While a request is open (queued or running) a second
one for the same work is refused with a sentence (:class:`DuplicateRequest`): the unique
``open_key`` makes that race-free. A local runner whose process is gone without recording
its end is marked failed the next time someone asks (:func:`reap_local`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from mlops.contracts.catalog import NAME_PATTERN
from mlops.db.schema import action_requests
from mlops.errors import AlreadyRunning, ConfigError
from mlops.runs import HOST, pid_alive, utcnow

log = logging.getLogger(__name__)

RETRAIN, MONITOR = "retrain", "monitor"
KINDS = (RETRAIN, MONITOR)
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
OPEN = (QUEUED, RUNNING)
LOCAL, KUBERNETES = "local", "kubernetes"
RUNNERS = (LOCAL, KUBERNETES)
# The stage whose Job template (deployments/job-<stage>.yaml) a request's Job is built
# from in the cluster.
STAGES = {RETRAIN: "train", MONITOR: "monitor"}
# How much of a runner's log is read back for its last `error:` sentence.
LOG_TAIL_BYTES = 64 * 1024
RESULT_LIMIT = 500


class DuplicateRequest(AlreadyRunning):
    """The same work is already queued or running: nothing new was recorded."""


@dataclass(frozen=True)
class Request:
    """One row of ``action_requests``."""

    id: int
    kind: str
    model_name: str | None
    actor: str
    reason: str
    runner: str
    status: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    result: str | None = None
    job: str | None = None
    pid: int | None = None
    host: str | None = None

    def what(self) -> str:
        """``retrain stock-close`` or ``run monitoring``."""
        return describe(self.kind, self.model_name)


def describe(kind: str, model: str | None) -> str:
    return f"retrain {model}" if kind == RETRAIN else "run monitoring"


def command(kind: str, model: str | None) -> list[str]:
    """The ``mlops`` arguments that do the work: fixed by the kind, the model only fills
    its place (checked against the catalog's name rule)."""
    if kind == RETRAIN:
        if not model or not NAME_PATTERN.match(model):
            raise ConfigError(
                f"{model!r} is no model name (lowercase letters, digits and dashes, at most "
                "63 characters)."
            )
        return [STAGES[RETRAIN], "--model", model]
    if kind == MONITOR:
        return [STAGES[MONITOR]]
    raise ConfigError(f"Unknown request {kind[:32]!r}: one of {', '.join(KINDS)}.")


def open_key(kind: str, model: str | None) -> str:
    return f"{kind}:{model}" if kind == RETRAIN else kind


def _request(row: Any) -> Request:
    return Request(**{name: row[name] for name in Request.__dataclass_fields__})


def get(engine: Engine, request_id: int) -> Request | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(action_requests).where(action_requests.c.id == request_id)
        ).mappings()
        found = row.first()
    return _request(found) if found is not None else None


def recent(engine: Engine, limit: int = 20) -> list[Request]:
    """The newest requests first."""
    query = select(action_requests).order_by(action_requests.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [_request(row) for row in conn.execute(query).mappings()]


def open_requests(engine: Engine, runner: str) -> list[Request]:
    """The queued and running requests of ``runner``, oldest first."""
    query = (
        select(action_requests)
        .where(action_requests.c.status.in_(OPEN), action_requests.c.runner == runner)
        .order_by(action_requests.c.id)
    )
    with engine.connect() as conn:
        return [_request(row) for row in conn.execute(query).mappings()]


def submit(
    engine: Engine, kind: str, model: str | None, *, actor: str, reason: str, runner: str
) -> Request:
    """Record a queued request; :class:`DuplicateRequest` (nothing written) while the same
    work is queued or running."""
    command(kind, model)  # one sentence for an unknown kind or a malformed name
    if runner not in RUNNERS:
        raise ConfigError(f"Unknown runner {runner!r}: one of {', '.join(RUNNERS)}.")
    model = model if kind == RETRAIN else None
    reap_local(engine)
    values = {
        "kind": kind,
        "model_name": model,
        "actor": actor[:128],
        "reason": reason,
        "runner": runner,
        "status": QUEUED,
        "open_key": open_key(kind, model),
        "created_at": utcnow(),
    }
    try:
        with engine.begin() as conn:
            inserted = conn.execute(insert(action_requests).values(**values))
            new_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
    except IntegrityError:
        raise DuplicateRequest(_duplicate_sentence(engine, kind, model)) from None
    found = get(engine, new_id)
    assert found is not None
    log.info("Request %d: %s, by %s (runner %s).", found.id, found.what(), actor, runner)
    return found


def _duplicate_sentence(engine: Engine, kind: str, model: str | None) -> str:
    query = select(action_requests).where(action_requests.c.open_key == open_key(kind, model))
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    what = describe(kind, model)
    if row is None:  # it ended between the insert and this read: ask again
        return f"A request to {what} was open a moment ago; ask again."
    since = row["created_at"].strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"Refused: a request to {what} is already {row['status']} (request {row['id']} by "
        f"{row['actor']} at {since} UTC); nothing new was queued."
    )


def claim(
    engine: Engine,
    request_id: int,
    *,
    job: str | None = None,
    pid: int | None = None,
    host: str | None = None,
) -> bool:
    """queued -> running (with its Job, or its process and host); False when the request
    was not queued (another runner took it, or it ended)."""
    values: dict[str, Any] = {"status": RUNNING, "started_at": utcnow()}
    values.update({k: v for k, v in (("job", job), ("pid", pid), ("host", host)) if v})
    with engine.begin() as conn:
        done = conn.execute(
            update(action_requests)
            .where(action_requests.c.id == request_id, action_requests.c.status == QUEUED)
            .values(**values)
        )
    return bool(done.rowcount)


def note_process(engine: Engine, request_id: int, pid: int) -> None:
    """The local runner's process, recorded as soon as it is started (still queued)."""
    with engine.begin() as conn:
        conn.execute(
            update(action_requests)
            .where(action_requests.c.id == request_id, action_requests.c.status == QUEUED)
            .values(pid=pid, host=HOST)
        )


def finish(
    engine: Engine, request_id: int, status: str, exit_code: int | None, result: str
) -> bool:
    """An open request ends: succeeded or failed, its exit code and sentence; the same
    work may be asked for again. False when it had already ended."""
    assert status in (SUCCEEDED, FAILED)
    with engine.begin() as conn:
        done = conn.execute(
            update(action_requests)
            .where(action_requests.c.id == request_id, action_requests.c.status.in_(OPEN))
            .values(
                status=status,
                exit_code=exit_code,
                result=" ".join(result.split())[:RESULT_LIMIT],
                finished_at=utcnow(),
                open_key=None,
            )
        )
    if done.rowcount:
        log.info("Request %d %s (exit %s): %s", request_id, status, exit_code, result)
    return bool(done.rowcount)


def reap_local(engine: Engine) -> list[int]:
    """Open local requests of this host whose runner process is gone: failed."""
    query = select(action_requests).where(
        action_requests.c.status.in_(OPEN),
        action_requests.c.runner == LOCAL,
        action_requests.c.host == HOST,
        action_requests.c.pid.is_not(None),
    )
    with engine.connect() as conn:
        rows = [_request(row) for row in conn.execute(query).mappings()]
    reaped = []
    for row in rows:
        if row.pid is not None and not pid_alive(row.pid):
            sentence = (
                f"The runner process {row.pid} ended without recording how the request "
                "ended (killed, or the machine restarted)."
            )
            if finish(engine, row.id, FAILED, None, sentence):
                reaped.append(row.id)
    return reaped


# The local runner.


def log_path(home: Path, request_id: int) -> Path:
    return Path(home) / "requests" / f"{request_id}.log"


def mlops_program() -> list[str]:
    """How this machine runs ``mlops``: this Python with the CLI module."""
    return [sys.executable, "-m", "mlops.cli"]


def launch(engine: Engine, home: Path, request: Request) -> subprocess.Popen[bytes]:
    """Start ``mlops requests run ID`` detached (its own session: it outlives the one who
    asked); its process is recorded on the row. The caller does not wait: a thread reaps
    the process when it ends."""
    path = log_path(home, request.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        process = subprocess.Popen(
            [*mlops_program(), "requests", "run", str(request.id)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ.copy(),
        )
    note_process(engine, request.id, process.pid)
    threading.Thread(target=process.wait, name=f"request-{request.id}", daemon=True).start()
    log.info("Request %d: runner process %d started.", request.id, process.pid)
    return process


def run_local(
    engine: Engine, home: Path, request_id: int, program: Sequence[str] | None = None
) -> Request:
    """Run a queued local request here: its command as a child process (``program`` is
    how ``mlops`` is run, by default :func:`mlops_program`), then its end on the row."""
    found = get(engine, request_id)
    if found is None:
        raise ConfigError(f"No request {request_id} in action_requests.")
    if found.runner != LOCAL:
        raise ConfigError(
            f"Request {request_id} is for the {found.runner} runner, not this machine."
        )
    if found.status in (SUCCEEDED, FAILED):
        log.info("Request %d already %s; nothing to do.", request_id, found.status)
        return found
    if not claim(engine, request_id, pid=os.getpid(), host=HOST):
        raise AlreadyRunning(f"Request {request_id} is already running; nothing was started.")
    args = command(found.kind, found.model_name)
    path = log_path(home, request_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("ab") as out:
            code = subprocess.run(
                [*(program or mlops_program()), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
    except OSError as exc:
        sentence = f"`mlops {args[0]}` could not start: {exc}."
        finish(engine, request_id, FAILED, None, sentence)
        raise ConfigError(f"Request {request_id}: {sentence}") from None
    shown = "mlops " + " ".join(args)
    if code == 0:
        finish(engine, request_id, SUCCEEDED, 0, f"`{shown}` succeeded.")
    else:
        why = last_error(path) or f"`{shown}` exited with code {code}; see {path}."
        finish(engine, request_id, FAILED, code, why)
    ended = get(engine, request_id)
    assert ended is not None
    return ended


def last_error(path: Path) -> str:
    """The last ``error:`` sentence of a log (how every mlops command ends a failure)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return error_line(tail)


def error_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.startswith("error: "):
            return line.removeprefix("error: ").strip()
    return ""
