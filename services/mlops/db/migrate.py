"""Versioned schema migrations (Alembic), applied by ``mlops migrate``, never at import.

Two ``mlops migrate`` at once (two Jobs, a Job and a developer) are serialised: on
Postgres by a session advisory lock, on SQLite by a lock file beside the database. The
second waits for the first, then finds the schema current and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from mlops.db.engine import DatabaseError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock key of `mlops migrate` (any constant shared by all its processes).
LOCK_KEY = 0x6D6C6F7073


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    script = ScriptDirectory.from_config(_config(None))  # type: ignore[arg-type]
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the schema lock: one migration at a time per database."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
                log.warning("Another `mlops migrate` is running; waiting for it to finish")
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("Another `mlops migrate` is running; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Apply all pending migrations (under the schema lock); returns the revision reached."""
    return upgrade_reporting(engine, revision)[1]


def upgrade_reporting(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply all pending migrations under the schema lock: (revision before, revision after)."""
    with migration_lock(engine):
        before = current_revision(engine)
        command.upgrade(_config(engine), revision)
        current = current_revision(engine)
    assert current is not None
    return before, current


def require_current(engine: Engine) -> None:
    """Fail with one sentence unless the schema is at the newest revision."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        state = "empty" if current is None else f"at revision {current}"
        raise DatabaseError(
            f"The database schema is {state}, but this code needs revision {head}: "
            "run `mlops migrate` first."
        )
