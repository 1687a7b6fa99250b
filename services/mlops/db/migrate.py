"""Versioned schema migrations (Alembic), applied by ``mlops migrate``, never at import."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from mlops.db.engine import DatabaseError

MIGRATIONS = Path(__file__).with_name("migrations")


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


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Apply all pending migrations; returns the revision reached."""
    command.upgrade(_config(engine), revision)
    current = current_revision(engine)
    assert current is not None
    return current


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
