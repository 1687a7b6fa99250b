"""Engine for Postgres (psycopg2) in the cluster or a SQLite file by default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import ArgumentError, OperationalError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from mlops.errors import ConfigError, MlopsError

log = logging.getLogger(__name__)


class DatabaseError(MlopsError):
    """The database cannot be reached or is not ready."""


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and WAL mode."""
    try:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"Setting DATABASE_URL is invalid: {exc}.") from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def wait_for_database(engine: Engine, attempts: int = 10) -> None:
    """Block until the database answers, with bounded exponential backoff."""

    @retry(
        retry=retry_if_exception_type(OperationalError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        ping()
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"Database at {engine.url.render_as_string(hide_password=True)} "
            f"did not answer: {reason}."
        ) from None
