"""Engine for Postgres (psycopg2) in the cluster or a SQLite file by default.

Every connection has time limits, so no command can hang on the database:

* Postgres: ``connect_timeout`` (a server that accepts the TCP connection but never
  answers fails after it), ``statement_timeout`` (Postgres cancels a query running
  longer), and TCP keepalives plus ``tcp_user_timeout`` (a server that vanished
  mid-query is noticed instead of waited for);
  Postgres: the client's own limit (:mod:`mlops.db.watchdog`): a statement with no
  answer for the statement limit plus the connect limit (a server or network that froze
  mid-query, which keepalives do not see behind a proxy that still acknowledges) has its
  connection closed, and a signal during a stage run frees a main thread blocked in one;
* SQLite: the busy timeout (how long to wait for another writer's lock).

:func:`wait_for_database` retries the first connection a bounded number of times and
says so on every attempt ("database not answering, attempt 3 of 10").
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from mlops.db import watchdog
from mlops.errors import ConfigError, DatabaseError, PermissionDeniedError

__all__ = ["DatabaseError", "make_engine", "wait_for_database"]

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_STATEMENT_TIMEOUT = 300.0
MAX_RETRY_WAIT = 10.0


def make_engine(
    url: str,
    *,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
) -> Engine:
    """An engine for ``url`` with time limits; SQLite files get their folder and WAL mode."""
    try:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            busy = max(float(connect_timeout), statement_timeout or 30.0, 30.0)
            engine = create_engine(url, connect_args={"timeout": busy})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        connect_args: dict[str, Any] = {}
        postgres = url.startswith(("postgresql", "postgres"))
        if postgres:
            connect_args = _postgres_args(connect_timeout, statement_timeout)
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=3,
            pool_timeout=max(30.0, float(connect_timeout)),
            connect_args=connect_args,
        )
        if postgres:
            watchdog.watch(engine, statement_timeout, connect_timeout)
        return engine
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"Setting DATABASE_URL is invalid: {exc}.") from None


def _postgres_args(connect_timeout: int, statement_timeout: float) -> dict[str, Any]:
    """libpq options: connect, statement and TCP time limits."""
    idle = max(1, min(30, connect_timeout))
    args: dict[str, Any] = {
        "connect_timeout": max(1, int(connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": idle,
        "keepalives_count": 3,
        # Unacknowledged data for this long means the server is gone (milliseconds).
        "tcp_user_timeout": int(max(10.0, 4.0 * idle) * 1000),
    }
    if statement_timeout:
        args["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
    return args


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def describe(engine: Engine) -> str:
    """Where the engine points, without its password."""
    return engine.url.render_as_string(hide_password=True)


def reason(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's background links."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip()
    return text_.splitlines()[0].strip() if text_ else type(exc).__name__


def _refused_login(message: str) -> bool:
    """A login the server refused: retrying will not help, the setting must change."""
    lowered = message.lower()
    if any(f in lowered for f in ("password authentication failed", "no password", "pg_hba")):
        return True
    return ("role " in lowered or 'database "' in lowered) and "does not exist" in lowered


def _sqlite_failure(engine: Engine, why: str) -> Exception:
    """A SQLite file that cannot be opened: a local file does not come back, so no retries."""
    where = describe(engine)
    database = engine.url.database
    folder = Path(database).parent if database and database != ":memory:" else None
    if folder is not None and folder.is_dir() and not os.access(folder, os.W_OK):
        return PermissionDeniedError(
            f"The database at {where} cannot be opened for writing ({why}): its folder "
            f"{folder} is read-only; check the folder's owner, mode and mount."
        )
    return DatabaseError(f"The database at {where} cannot be opened: {why}.")


def wait_for_database(engine: Engine, attempts: int = 10) -> None:
    """Block until the database answers: bounded attempts, each one reported, then one sentence.

    A refused login (wrong user, password or database name) is not retried: it is a
    setting to fix (``ConfigError``), not a server to wait for.
    """
    where = describe(engine)
    wait = 0.5
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except (OperationalError, DBAPIError) as exc:
            why = reason(exc)
            if _refused_login(why):
                raise ConfigError(
                    f"The database at {where} refused the login: {why}; check DATABASE_URL."
                ) from None
            if engine.url.get_backend_name() == "sqlite":
                raise _sqlite_failure(engine, why) from None
            if attempt == attempts:
                raise DatabaseError(
                    f"Database at {where} did not answer after {attempts} attempt"
                    f"{'s' if attempts > 1 else ''}: {why}."
                ) from None
            log.warning(
                "Database not answering (%s), attempt %d of %d; retrying in %.1f s",
                why,
                attempt,
                attempts,
                wait,
            )
            engine.dispose()  # a half-open pool connection must not be reused
            time.sleep(wait)
            wait = min(wait * 2, MAX_RETRY_WAIT)
