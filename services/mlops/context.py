"""What every stage works with: its settings, the database, the object store and MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from mlops.db.engine import make_engine, wait_for_database
from mlops.db.migrate import require_current
from mlops.settings import Settings
from mlops.store import ObjectStore, open_store

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass
class Context:
    settings: Settings
    engine: Engine
    store: ObjectStore
    _mlflow: MlflowClient | None = field(default=None, repr=False)

    @property
    def mlflow(self) -> MlflowClient:
        """The MLflow client of the configured tracking server, made on first use."""
        if self._mlflow is None:
            from mlops import tracking

            self._mlflow = tracking.connect(self.settings)
        return self._mlflow


def database_engine(settings: Settings, *, wait: bool = True) -> Engine:
    """The database engine with the settings' time limits, once the database answers."""
    engine = make_engine(
        settings.db_url,
        connect_timeout=settings.database_connect_timeout_seconds,
        statement_timeout=settings.database_statement_timeout_seconds,
    )
    if wait:
        wait_for_database(engine, settings.database_connect_attempts)
    return engine


def open_context(settings: Settings, *, check_schema: bool = True) -> Context:
    """Connect to the database (waiting for it, bounded) and open the store."""
    engine = database_engine(settings)
    if check_schema:
        require_current(engine)
    return Context(settings=settings, engine=engine, store=open_store(settings))
