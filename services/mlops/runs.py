"""Stage runs: every command records when it started, how it ended and why.

A stage run is a *lease* on its stage and day (``stage_runs.lease_key``, unique while the
run is ``running``):

* the running process writes a heartbeat every ``STAGE_HEARTBEAT_SECONDS``;
* SIGTERM (Kubernetes' deadline or eviction, ``kill``) and SIGINT raise
  :class:`~mlops.errors.Terminated` in the stage, which unwinds like any failure: the run
  is recorded ``failed`` ("terminated by SIGTERM"), an MLflow run is ended ``KILLED``, and
  the command exits 143 (130 for SIGINT);
* a process that cannot say how it ended (kill -9, a lost node, the database gone at the
  end) leaves its row ``running``; the next command marks it ``abandoned`` with the
  reason: its process is gone (same host: it exited without recording its end, as a
  local note says, or it was killed) or its heartbeat is older than
  ``STAGE_LEASE_SECONDS``;
* a second run of the same stage and day while the first holds the lease stops at once
  with :class:`~mlops.errors.AlreadyRunning` (shards of data prep each hold their own).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError

from mlops import log as mlops_log
from mlops.db import watchdog
from mlops.db.schema import stage_runs
from mlops.errors import AlreadyRunning, Terminated, classify

if TYPE_CHECKING:
    from mlops.context import Context

logger = logging.getLogger(__name__)

HOST = socket.gethostname()[:255]
DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_LEASE_SECONDS = 120.0

_current: contextvars.ContextVar[StageRun | None] = contextvars.ContextVar(
    "stage_run", default=None
)
# Ends this process could not record (the database was down); retried by its next run.
_pending: list[tuple[Engine, str, str, str | None, str]] = []


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class StageRun:
    """Handle of a running stage; put results in ``details`` to store them with the run."""

    run_id: str
    stage: str
    run_date: date | None
    details: dict[str, Any] = field(default_factory=dict)
    lease_key: str = ""
    engine: Engine | None = field(default=None, repr=False)


def current_run() -> StageRun | None:
    """The stage run this code runs in, if any."""
    return _current.get()


def annotate(**values: Any) -> None:
    """Store ``values`` in the current run's details now, not only when it ends.

    For what the next command must know if this process dies (an MLflow run's id).
    Best effort: a database that does not answer only costs a warning.
    """
    run = _current.get()
    if run is None or run.engine is None:
        return
    run.details.update(values)
    try:
        with run.engine.begin() as conn:
            conn.execute(
                update(stage_runs)
                .where(stage_runs.c.run_id == run.run_id)
                .values(details=json.dumps(run.details, default=str))
            )
    except Exception as exc:
        logger.warning("Could not record %s on stage run %s: %s", list(values), run.run_id, exc)


def lease_key(stage: str, run_date: date | None, part: str = "") -> str:
    """What one run holds: the stage, its day ("latest" without one) and its part."""
    key = f"{stage}|{run_date.isoformat() if run_date else 'latest'}"
    return f"{key}|{part}"[:200] if part else key


def describe_failure(exc: BaseException) -> str:
    """The one-line reason recorded for a failed run."""
    if isinstance(exc, Terminated):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    error = classify(exc)
    if error is not None:
        return str(error)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def record_stage_run(
    engine: Engine,
    stage: str,
    run_date: date | None,
    *,
    lease: str = "",
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> Iterator[StageRun]:
    """Hold the stage's lease: a ``running`` row with a heartbeat, then its end and why."""
    finish_pending()
    reap_abandoned(engine, lease_seconds)
    run = StageRun(
        run_id=uuid.uuid4().hex,
        stage=stage,
        run_date=run_date,
        lease_key=lease_key(stage, run_date, lease),
        engine=engine,
    )
    mlops_log.bind(stage=stage, run_id=run.run_id[:8])
    _acquire(engine, run, lease_seconds)
    token = _current.set(run)
    beat = _Heartbeat(engine, run.run_id, heartbeat_seconds)
    try:
        with _signals_raise_terminated():
            beat.start()
            yield run
    except BaseException as exc:
        beat.stop()
        _finish(engine, run, "failed", describe_failure(exc))
        raise
    else:
        beat.stop()
        _finish(engine, run, "succeeded", None)
    finally:
        beat.stop()
        _current.reset(token)


def run_stage(
    ctx: Context,
    name: str,
    fn: Callable[..., Any],
    as_of: date | None,
    lease: str = "",
    **kwargs: Any,
) -> Any:
    """Call a stage's ``run(ctx, as_of=...)`` inside its stage-run lease, result as details.

    A stage that ends with an error also sends an alert (``ALERT_WEBHOOK_URL``), bounded
    in time and never changing the error.
    """
    settings = ctx.settings
    try:
        with record_stage_run(
            ctx.engine,
            name,
            as_of,
            lease=lease,
            heartbeat_seconds=settings.stage_heartbeat_seconds,
            lease_seconds=settings.stage_lease_seconds,
        ) as run:
            result = fn(ctx, as_of=as_of, **kwargs)
            payload = (
                asdict(result) if is_dataclass(result) and not isinstance(result, type) else result
            )
            run.details.update(payload if isinstance(payload, dict) else {"result": payload})
    except BaseException as exc:
        alert_failure(settings, name, as_of, exc)
        raise
    return result


def alert_failure(settings: Any, name: str, as_of: date | None, exc: BaseException) -> None:
    """The alert for a command ending non-zero: its exit code and its sentence (a trade
    whose orders were not placed, exit 12, is an ``orders not placed`` alert)."""
    from mlops import alerts
    from mlops.errors import ORDERS_NOT_PLACED_EXIT_CODE, Terminated, classify

    if isinstance(exc, Terminated):
        code, sentence = exc.exit_code, str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        code, sentence = 130, "interrupted (SIGINT)"
    else:
        error = classify(exc) if isinstance(exc, Exception) else None
        code = error.exit_code if error is not None else 1
        sentence = str(error if error is not None else f"{type(exc).__name__}: {exc}")
    day = as_of.isoformat() if as_of else "the latest day"
    kind = (
        alerts.ORDERS_NOT_PLACED if code == ORDERS_NOT_PLACED_EXIT_CODE else f"mlops {name} failed"
    )
    alerts.send(
        settings, kind, f"mlops {name} for {day} ended with exit {code}: "
        f"{(sentence.strip().splitlines() or [''])[0][:500]}"
    )  # fmt: skip


# The lease.


def _acquire(engine: Engine, run: StageRun, lease_seconds: float) -> None:
    """Insert the ``running`` row holding the lease; stop if a live run holds it."""
    for _ in range(3):
        now = utcnow()
        try:
            with engine.begin() as conn:
                conn.execute(
                    stage_runs.insert().values(
                        run_id=run.run_id,
                        stage=run.stage,
                        run_date=run.run_date,
                        started_at=now,
                        heartbeat_at=now,
                        status="running",
                        host=HOST,
                        pid=os.getpid(),
                        lease_key=run.lease_key,
                    )
                )
            return
        except IntegrityError:
            holder = _holder(engine, run.lease_key)
            if holder is None:
                continue  # it ended in the meantime
            reason = _abandon_reason(holder, lease_seconds, utcnow())
            if reason is not None:
                _mark_abandoned(engine, holder, reason)
                continue
            raise AlreadyRunning(_busy_sentence(run, holder)) from None
    holder = _holder(engine, run.lease_key)
    raise AlreadyRunning(_busy_sentence(run, holder)) from None


def _holder(engine: Engine, key: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(stage_runs).where(stage_runs.c.lease_key == key)).first()


def _busy_sentence(run: StageRun, holder: Any) -> str:
    day = run.run_date.isoformat() if run.run_date else "the latest day"
    # The part of the lease (a strategy, a model, a shard), when the stage has parts.
    part = run.lease_key.split("|", 2)[2] if run.lease_key.count("|") >= 2 else ""
    what = f"Stage {run.stage}" + (f" ({part})" if part else "")
    if holder is None:
        return f"{what} for {day} is already running elsewhere; nothing was done."
    seen = _aware(holder.heartbeat_at or holder.started_at)
    age = (utcnow() - seen).total_seconds()
    return (
        f"{what} for {day} is already running (run {holder.run_id[:8]} on "
        f"{holder.host or '?'}, pid {holder.pid or '?'}, last heartbeat {age:.0f} s ago); "
        "nothing was done: wait for it to end, or rerun once it is marked abandoned."
    )


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _abandon_reason(row: Any, lease_seconds: float, now: datetime) -> str | None:
    """Why a ``running`` row is abandoned, or None while its process may still run."""
    seen = _aware(row.heartbeat_at or row.started_at)
    when = f"{seen:%Y-%m-%d %H:%M:%S} UTC"
    if row.host == HOST and row.pid and row.pid != os.getpid() and not pid_alive(row.pid):
        ended = _unrecorded_end(row.run_id)
        if ended is not None:
            return (
                f"abandoned: its process (pid {row.pid} on {row.host}) exited without "
                f"recording its end ({ended}); last heartbeat {when}"
            )
        return (
            f"abandoned: its process (pid {row.pid} on {row.host}) was killed (or crashed) "
            f"before it could record its end; last heartbeat {when}"
        )
    age = (now - seen).total_seconds()
    if age > lease_seconds:
        return (
            f"abandoned: no heartbeat for {age:.0f} s (last {when}, pid {row.pid or '?'} on "
            f"{row.host or '?'}), over STAGE_LEASE_SECONDS ({lease_seconds:g}); the process "
            "was killed or lost the database"
        )
    return None


def _mark_abandoned(engine: Engine, row: Any, reason: str) -> bool:
    """Mark one ``running`` row abandoned unless it wrote a heartbeat since it was read."""
    seen = row.heartbeat_at
    with engine.begin() as conn:
        done = conn.execute(
            update(stage_runs)
            .where(
                stage_runs.c.run_id == row.run_id,
                stage_runs.c.status == "running",
                or_(stage_runs.c.heartbeat_at.is_(None), stage_runs.c.heartbeat_at <= seen)
                if seen is not None
                else stage_runs.c.heartbeat_at.is_(None),
            )
            .values(status="abandoned", finished_at=utcnow(), error=reason, lease_key=None)
        ).rowcount
    if done:
        logger.warning("Stage run %s (%s) %s", row.run_id[:8], row.stage, reason)
        _forget_unrecorded_end(row.run_id)
    return bool(done)


def reap_abandoned(engine: Engine, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[str]:
    """Mark every ``running`` run whose process is gone or silent as ``abandoned``; their ids."""
    now = utcnow()
    with engine.connect() as conn:
        rows = conn.execute(select(stage_runs).where(stage_runs.c.status == "running")).all()
    reaped = []
    for row in rows:
        reason = _abandon_reason(row, lease_seconds, now)
        if reason is not None and _mark_abandoned(engine, row, reason):
            reaped.append(row.run_id)
    return reaped


def abandoned_details(engine: Engine, run_ids: list[str]) -> list[dict[str, Any]]:
    """The recorded details of runs (e.g. to close the MLflow runs they left open)."""
    if not run_ids:
        return []
    with engine.connect() as conn:
        rows = conn.execute(
            select(stage_runs.c.run_id, stage_runs.c.details).where(
                stage_runs.c.run_id.in_(run_ids)
            )
        ).all()
    return [{"run_id": r.run_id, **json.loads(r.details or "{}")} for r in rows]


def run_status(engine: Engine, run_id: str) -> str | None:
    """The recorded status of a stage run (None when there is no such run)."""
    with engine.connect() as conn:
        return conn.execute(
            select(stage_runs.c.status).where(stage_runs.c.run_id == run_id)
        ).scalar()


# Ending a run.


def _finish(engine: Engine, run: StageRun, status: str, error: str | None) -> None:
    details = json.dumps(run.details, default=str)
    try:
        _write_end(engine, run.run_id, status, error, details)
    except Exception as exc:  # the stage's own error matters more than the bookkeeping's
        logger.warning(
            "Could not record the end (%s) of stage run %s: %s; the next command marks it "
            "abandoned",
            status,
            run.run_id[:8],
            describe_failure(exc),
        )
        _pending.append((engine, run.run_id, status, error, details))
        _note_unrecorded_end(run.run_id, status, error)


def _write_end(engine: Engine, run_id: str, status: str, error: str | None, details: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(stage_runs)
            .where(stage_runs.c.run_id == run_id, stage_runs.c.status == "running")
            .values(
                finished_at=utcnow(),
                status=status,
                error=error,
                details=details,
                lease_key=None,
            )
        )


def finish_pending() -> None:
    """Record the ends this process could not record before (in-process runners, tests).

    Each is tried: one whose database is still (or for good) unreachable stays pending
    without keeping the others, in other databases, from being recorded.
    """
    for entry in list(_pending):
        engine, run_id, status, error, details = entry
        try:
            _write_end(engine, run_id, status, error, details)
        except Exception:
            continue
        _pending.remove(entry)
        _forget_unrecorded_end(run_id)


# How a run ended that its process could not record, in a local file: a later command on
# this host then says the process exited (and how) rather than calling it killed.


def _unrecorded_path(run_id: str) -> Path:
    return mlops_log.error_log_dir() / "unrecorded-ends" / f"{run_id}.json"


def _note_unrecorded_end(run_id: str, status: str, error: str | None) -> None:
    """Best effort: a full or read-only disk only loses the distinction."""
    path = _unrecorded_path(run_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"status": status, "error": error, "pid": os.getpid()}))
    except OSError as exc:
        logger.debug("Could not note the unrecorded end of run %s: %s", run_id[:8], exc)


def _unrecorded_end(run_id: str) -> str | None:
    """How the run ended ("failed: <sentence>", "succeeded"), if its process noted it."""
    try:
        noted = json.loads(_unrecorded_path(run_id).read_text())
    except (OSError, ValueError):
        return None
    status, error = str(noted.get("status", "ended")), noted.get("error")
    return f"{status}: {error}" if error else status


def _forget_unrecorded_end(run_id: str) -> None:
    with suppress(OSError):
        _unrecorded_path(run_id).unlink(missing_ok=True)


class _Heartbeat:
    """A daemon thread writing ``heartbeat_at`` every ``seconds`` until stopped."""

    def __init__(self, engine: Engine, run_id: str, seconds: float) -> None:
        self.engine, self.run_id, self.seconds = engine, run_id, seconds
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.failing = False

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="stage-heartbeat", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=2.0)

    def _loop(self) -> None:
        while not self.stopped.wait(self.seconds):
            try:
                with self.engine.begin() as conn:
                    beat = conn.execute(
                        update(stage_runs)
                        .where(stage_runs.c.run_id == self.run_id, stage_runs.c.status == "running")
                        .values(heartbeat_at=utcnow())
                    ).rowcount
            except Exception as exc:
                if not self.failing:
                    logger.warning(
                        "Heartbeat of stage run %s not recorded (%s); retrying every %g s",
                        self.run_id[:8],
                        describe_failure(exc),
                        self.seconds,
                    )
                self.failing = True
                continue
            if self.failing:
                logger.info("Heartbeat of stage run %s recorded again", self.run_id[:8])
            self.failing = False
            if not beat:
                logger.error(
                    "Stage run %s was marked abandoned by another command while it ran",
                    self.run_id[:8],
                )
                return


# Signals.


@contextmanager
def _signals_raise_terminated() -> Iterator[None]:
    """SIGTERM (and SIGINT, unless ignored) raise ``Terminated`` once; restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        watchdog.handler_ran()
        if fired:  # already unwinding: let the cleanup finish
            return
        fired.append(signum)
        raise Terminated(signum)

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(sig)
        if sig == signal.SIGINT and current == signal.SIG_IGN:
            continue  # a background job's Ctrl-C belongs to the foreground
        previous[sig] = current
        signal.signal(sig, handler)
    try:
        # A main thread blocked in a database statement cannot run the handler: the
        # watchdog hears the signal too and frees it (mlops.db.watchdog).
        with watchdog.hear_signals():
            yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
