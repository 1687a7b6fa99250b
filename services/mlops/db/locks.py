"""Per-model locks: one registry action on a model at a time, whoever runs it and wherever.

Every action that moves a model's aliases or tags (``mlops models promote``, ``rollback``,
``archive``, ``pause``, ``resume``, the dashboard's buttons, training's promotion gate)
holds :func:`model_lock` while it reads the registry, decides and writes, and writes its
audit row before letting go; so two actions on one model never decide on the same stale
state. Actions on different models do not wait for each other.

* Postgres (the cluster): a transaction-level advisory lock (``pg_advisory_xact_lock``)
  on the model's key, held by a connection of its own for the duration: it serialises
  processes on every host, and Postgres drops it if the process dies.
* SQLite (one machine): an exclusive ``flock`` on a file beside the database, one per
  model (``<database>.model-<name>.lock``); the kernel drops it if the process dies.
  SQLite's own write lock is not used: it would stop every other writer of the database
  while the registry answers.
* An in-memory database: a lock of this process.

Waiting is bounded: after ``wait_seconds`` the action is refused with one sentence
(:class:`~mlops.errors.AlreadyRunning`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from mlops.errors import AlreadyRunning

log = logging.getLogger(__name__)

# How long an action waits for another one on the same model before giving up.
LOCK_WAIT_SECONDS = 120.0
# First key of the two-key advisory locks (the second is the model's): the registry's
# namespace, apart from `mlops migrate`'s one-key lock.
ADVISORY_NAMESPACE = 0x6D6F646C  # "modl"
# Postgres's SQLSTATE for lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_FILE_POLL_SECONDS = 0.02

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


def model_key(name: str) -> int:
    """The model's advisory lock key: a signed 32-bit integer derived from its name."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def lock_file(database: str, name: str) -> Path:
    """The lock file of model ``name`` beside the SQLite file ``database``."""
    slug = name if _SAFE_NAME.fullmatch(name) else hashlib.sha256(name.encode()).hexdigest()[:16]
    return Path(f"{database}.model-{slug}.lock")


@contextmanager
def model_lock(
    engine: Engine, name: str, *, wait_seconds: float = LOCK_WAIT_SECONDS
) -> Iterator[None]:
    """Hold model ``name``'s lock for the block (see the module doc)."""
    began = time.monotonic()
    if engine.dialect.name == "postgresql":
        locked = _advisory(engine, name, wait_seconds)
    else:
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if database and database != ":memory:":
            locked = _file(Path(database), name, wait_seconds)
        else:
            locked = _in_process(name, wait_seconds)
    with locked:
        waited = time.monotonic() - began
        if waited > 1.0:
            log.info("Waited %.1f s for model %s's lock (another action held it)", waited, name)
        yield


def _refused(name: str, wait_seconds: float) -> AlreadyRunning:
    return AlreadyRunning(
        f"Another action on model {name} held its registry lock for more than "
        f"{wait_seconds:g} s; nothing was changed: try again once it has finished."
    )


@contextmanager
def _advisory(engine: Engine, name: str, wait_seconds: float) -> Iterator[None]:
    with engine.connect() as conn, conn.begin():
        conn.execute(text(f"SET LOCAL lock_timeout = {max(1, int(wait_seconds * 1000))}"))
        try:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
                {"namespace": ADVISORY_NAMESPACE, "key": model_key(name)},
            )
        except OperationalError as exc:
            if getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
                raise _refused(name, wait_seconds) from None
            raise
        yield  # the transaction's end (commit or rollback) releases the lock


@contextmanager
def _file(database: Path, name: str, wait_seconds: float) -> Iterator[None]:
    import fcntl

    path = lock_file(str(database), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One open file per holder: flock excludes other threads of this process too.
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _refused(name, wait_seconds) from None
                time.sleep(_FILE_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _in_process(name: str, wait_seconds: float) -> Iterator[None]:
    with _local_guard:
        lock = _local_locks.setdefault(name, threading.Lock())
    if not lock.acquire(timeout=wait_seconds):
        raise _refused(name, wait_seconds)
    try:
        yield
    finally:
        lock.release()
