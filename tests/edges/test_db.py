"""The application database on SQLite and on a real PostgreSQL: migrations and upserts."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, MetaData, String, inspect, select

from mlops.db import migrate
from mlops.db.engine import DatabaseError, make_engine, wait_for_database
from mlops.db.schema import datasets, metadata, predictions
from mlops.db.upsert import insert_new, upsert


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path):
    """An engine on an empty database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'mlops.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_database")
    engine = make_engine(url)
    wait_for_database(engine, attempts=3)
    yield engine
    engine.dispose()


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    migrate.upgrade(engine)
    return engine


def test_upgrade_reaches_head(engine: Engine) -> None:
    assert migrate.current_revision(engine) is None
    head = migrate.head_revision()
    assert migrate.upgrade(engine) == head
    assert migrate.current_revision(engine) == head
    migrate.require_current(engine)
    # Upgrading again is a no-op.
    assert migrate.upgrade(engine) == head


def test_migrations_match_schema(migrated: Engine) -> None:
    with migrated.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []
    tables = set(inspect(migrated).get_table_names())
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_schema_comparison_is_not_vacuous(migrated: Engine) -> None:
    changed = MetaData()
    for table in metadata.tables.values():
        copy = table.to_metadata(changed)
        if table.name == "datasets":
            copy.append_column(Column("extra", String(8), nullable=True))
    with migrated.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), changed)
    assert [d[0] for d in diff] == ["add_column"]


def test_require_current_on_empty_database(engine: Engine) -> None:
    with pytest.raises(DatabaseError) as info:
        migrate.require_current(engine)
    message = str(info.value)
    assert "run `mlops migrate` first" in message
    assert "empty" in message
    assert "\n" not in message


def _dataset_row(version: str, rows: int = 10) -> dict:
    return {
        "version": version,
        "as_of": date(2017, 12, 1),
        "manifest_key": f"datasets/features/{version}/manifest.json",
        "content_hash": "ab" * 32,
        "rows": rows,
        "symbols": "AAPL,GOOGL",
        "first_date": date(2015, 1, 2),
        "last_date": date(2017, 12, 1),
        "created_at": datetime(2017, 12, 1, 22, 0, tzinfo=UTC),
    }


def test_insert_new_is_idempotent(migrated: Engine) -> None:
    row = _dataset_row("2017-12-01-abc")
    with migrated.begin() as conn:
        assert insert_new(conn, datasets, [row], keys=["version"]) == 1
    with migrated.begin() as conn:
        assert insert_new(conn, datasets, [{**row, "rows": 99}], keys=["version"]) == 0
    with migrated.begin() as conn:
        assert insert_new(conn, datasets, [], keys=["version"]) == 0
        # Mixed: one known, one new.
        both = [row, _dataset_row("2017-12-02-def")]
        assert insert_new(conn, datasets, both, keys=["version"]) == 1
    with migrated.connect() as conn:
        stored = conn.execute(select(datasets.c.version, datasets.c.rows)).all()
    assert sorted(stored) == [("2017-12-01-abc", 10), ("2017-12-02-def", 10)]


def _prediction(close: float) -> dict:
    return {
        "symbol": "AAPL",
        "prediction_date": date(2017, 12, 1),
        "model_name": "stock-close",
        "model_version": "3",
        "predicted_close": close,
        "last_close": 170.0,
        "expected_change": close / 170.0 - 1,
        "dataset_version": "2017-12-01-abc",
        "created_at": datetime(2017, 12, 1, 22, 0, tzinfo=UTC),
    }


def test_upsert_inserts_then_updates(migrated: Engine) -> None:
    keys = ["symbol", "prediction_date", "model_name", "model_version"]
    with migrated.begin() as conn:
        assert upsert(conn, predictions, [_prediction(171.0)], keys=keys) == 1
    with migrated.begin() as conn:
        assert upsert(conn, predictions, [_prediction(172.5)], keys=keys) == 1
    with migrated.connect() as conn:
        stored = conn.execute(select(predictions.c.predicted_close)).scalars().all()
    assert stored == [172.5]

    with migrated.begin() as conn:
        assert upsert(conn, datasets, [_dataset_row("v1", rows=1)], keys=["version"]) == 1
        assert upsert(conn, datasets, [_dataset_row("v1", rows=2)], keys=["version"]) == 1
    with migrated.connect() as conn:
        assert conn.execute(select(datasets.c.rows)).scalars().all() == [2]


def test_wait_for_database_on_closed_port_fails_quickly(closed_port: int) -> None:
    engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port}/nothing")
    started = time.monotonic()
    with pytest.raises(DatabaseError) as info:
        wait_for_database(engine, attempts=2)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert f"127.0.0.1:{closed_port}" in message
    assert "did not answer" in message
    assert "\n" not in message


def test_wait_for_database_hides_password(closed_port: int) -> None:
    engine = make_engine(f"postgresql+psycopg2://app:s3cret@127.0.0.1:{closed_port}/nothing")
    with pytest.raises(DatabaseError) as info:
        wait_for_database(engine, attempts=1)
    assert "s3cret" not in str(info.value)


def test_bad_database_url_is_a_config_error() -> None:
    from mlops.errors import ConfigError

    with pytest.raises(ConfigError, match="DATABASE_URL"):
        make_engine("nosuchdialect://x")


def test_postgres_cancels_a_statement_past_the_settings_time_limit(fresh_pg_database) -> None:
    """DATABASE_STATEMENT_TIMEOUT_SECONDS reaches Postgres: a query running past it is
    cancelled by the server and read as the database failing (exit 6), not waited on."""
    from sqlalchemy import text

    from mlops.context import database_engine
    from mlops.errors import classify
    from mlops.settings import Settings

    settings = Settings(DATABASE_URL=fresh_pg_database, DATABASE_STATEMENT_TIMEOUT_SECONDS=1.5)
    engine = database_engine(settings)
    try:
        with engine.connect() as conn:
            limit = conn.execute(text("SHOW statement_timeout")).scalar_one()
            assert limit == "1500ms"
            with pytest.raises(Exception) as caught:
                conn.execute(text("SELECT pg_sleep(30)"))
    finally:
        engine.dispose()
    assert "canceling statement due to statement timeout" in str(caught.value)
    error = classify(caught.value)
    assert error is not None and error.exit_code == 6, error
