"""Backups and restore on the real servers: a home after a day (the faults world: datasets,
a champion, predictions in Postgres and S3) is backed up with ``mlops backup`` to the
object store, restored with ``mlops restore`` into a fresh database, and the next day's
scoring runs on it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import create_engine, func, select, text

from faults.conftest import DAYS, assert_fails, assert_ok
from mlops.db.schema import datasets, predictions, stage_runs

TABLES = (datasets, predictions, stage_runs)


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in TABLES
            }
    finally:
        engine.dispose()


def _fresh_database(postgres_server: Any) -> str:
    name = f"restored_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name


def _other_database_dump(postgres_server, path) -> str:
    """A database that is not the application's (as MLflow's), dumped as the CronJob's
    init container dumps it; its name."""
    from mlops.backups import dump
    from mlops.settings import load_settings

    other = _fresh_database(postgres_server)
    with create_engine(postgres_server.url(other)).begin() as conn:
        conn.execute(text("CREATE TABLE runs (id int)"))
        conn.execute(text("INSERT INTO runs VALUES (7)"))
    dump(load_settings(DATABASE_URL=postgres_server.url(other)), path)
    return other


def test_backup_then_restore_into_a_fresh_database_and_score_the_next_day(
    world, cli, postgres_server, tmp_path
) -> None:
    env = world.with_env(BACKUP_RETENTION=2)
    before = _counts(world.db_url)
    # The last run also keeps another database's dump beside (MLflow's, as the CronJob
    # hands it over: --dump-file mlflow=FILE).
    other = _other_database_dump(postgres_server, tmp_path / "other.dump")
    beside = ["--dump-file", f"mlflow-{other}={tmp_path / 'other.dump'}"]
    results = [assert_ok(cli(env, "backup", *extra)) for extra in ([], [], beside)]
    folder = f"backups/{world.database}/"
    assert all(r["key"].startswith(folder) and r["bytes"] > 0 for r in results)
    # Three backups, the retention keeps two: the first one's dump and manifest are gone.
    assert results[-1]["deleted"] == [results[0]["key"], results[0]["manifest_key"]]
    assert world.s3_keys(folder) == sorted(
        k for r in results[1:] for k in (r["key"], r["manifest_key"])
    )

    fresh = _fresh_database(postgres_server)
    fresh_env = {**env, "DATABASE_URL": postgres_server.url(fresh)}
    restored = assert_ok(cli(fresh_env, "restore", "--database", world.database))
    assert restored["key"] == results[-1]["key"]
    assert restored["schema_revision"]
    assert _counts(postgres_server.url(fresh)) == before

    # The restored home runs the next day: the champion scores 2017-06-02's dataset.
    scored = assert_ok(cli(fresh_env, "batch-infer", "--as-of", DAYS[-1].isoformat()))
    assert scored["new_rows"] == 5

    # A database that is not empty is never restored over.
    again = cli(fresh_env, "restore", "--database", world.database)
    assert_fails(again, 2, "is not empty", "restore only into a fresh database")
    assert _counts(postgres_server.url(fresh))["predictions"] == before["predictions"] + 5

    # The other database's dump: under backups/<its name>/, restored as it is (its own
    # server migrates it, not `mlops migrate`).
    (kept,) = results[-1]["others"]
    assert kept["key"].startswith(f"backups/mlflow-{other}/")
    target = _fresh_database(postgres_server)
    target_env = {**env, "DATABASE_URL": postgres_server.url(target)}
    assert (
        assert_ok(cli(target_env, "restore", "--database", f"mlflow-{other}"))["key"]
        == (kept["key"])
    )
    engine = create_engine(postgres_server.url(target))
    try:
        with engine.connect() as conn:
            public = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            assert set(conn.execute(text(public)).scalars()) == {"runs"}, "no migrations"
            assert conn.execute(text("SELECT id FROM runs")).scalar_one() == 7
    finally:
        engine.dispose()


def test_restore_without_a_backup_and_backup_of_sqlite_say_so(world, cli, tmp_path) -> None:
    fetched = cli(world.env, "restore", "--output", str(tmp_path / "x.dump"))
    assert_fails(fetched, 3, f"No backup in the object store under backups/{world.database}/")
    embedded = cli({**world.env, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}"}, "backup")
    assert_fails(embedded, 2, "need PostgreSQL")
