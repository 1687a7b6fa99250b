"""What every stage works with: its settings, the database and the object store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from mlops.db.engine import make_engine, wait_for_database
from mlops.db.migrate import require_current
from mlops.settings import Settings
from mlops.store import ObjectStore, open_store


@dataclass
class Context:
    settings: Settings
    engine: Engine
    store: ObjectStore


def open_context(settings: Settings, *, check_schema: bool = True) -> Context:
    """Connect to the database (waiting for it, bounded) and open the store."""
    engine = make_engine(settings.db_url)
    wait_for_database(engine, settings.database_connect_attempts)
    if check_schema:
        require_current(engine)
    return Context(settings=settings, engine=engine, store=open_store(settings))
