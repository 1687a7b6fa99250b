"""services/mlops/db/roles.py against a real PostgreSQL: each role may do exactly what
ROLES says, `mlops migrate` applies them from password files, and again without harm."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mlops.db import roles
from mlops.db.migrate import head_revision
from mlops.db.schema import metadata

from .manifests import ROOT
from .pods import drop_database_roles

SOURCES = ROOT / "services" / "mlops"


@pytest.fixture
def owned_database(postgres_server):
    """A database owned by a fresh owner role with CREATEROLE, as the init script makes."""
    suffix = uuid.uuid4().hex[:8]
    owner, database = f"owner_{suffix}", f"roles_{suffix}"
    drop_database_roles(postgres_server, roles.ROLES)  # cluster-wide: start from none
    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {owner} LOGIN CREATEROLE PASSWORD 'owner-password'"))
        conn.execute(text(f"CREATE DATABASE {database} OWNER {owner}"))
        conn.execute(text(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC"))
    url = make_url(postgres_server.url(database)).set(username=owner, password="owner-password")
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    drop_database_roles(postgres_server, [*roles.ROLES, owner])
    admin.dispose()


@pytest.fixture
def mlflow_database(postgres_server, owned_database):
    """MLflow's database as the init script makes it: its own owner, one table of its."""
    suffix = uuid.uuid4().hex[:8]
    owner, database = f"mlflow_{suffix}", f"mlflow_{suffix}"
    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {owner} LOGIN PASSWORD 'mlflow-password'"))
        conn.execute(text(f"CREATE DATABASE {database} OWNER {owner}"))
        conn.execute(text(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC"))
    url = make_url(postgres_server.url(database)).set(username=owner, password="mlflow-password")
    with create_engine(url).begin() as conn:
        conn.execute(text("CREATE TABLE runs (id serial PRIMARY KEY, name text)"))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    drop_database_roles(postgres_server, [owner])
    admin.dispose()


def _password_dir(tmp_path: Path, tag: str = "") -> Path:
    folder = tmp_path / f"passwords{tag}"
    folder.mkdir()
    for role in roles.ROLES:
        (folder / role).write_text(f"pw-{role}{tag}\n")
    return folder


def _migrate(url, folder: Path, subprocess_env, **extra: str) -> subprocess.CompletedProcess:
    env = subprocess_env(
        DATABASE_URL=url.set(password=None).render_as_string(hide_password=False),
        PGPASSWORD=url.password,
        DB_ROLE_PASSWORDS_DIR=str(folder),
        **extra,
    )
    mlops = Path(sys.executable).parent / "mlops"
    return subprocess.run(
        [str(mlops), "migrate"], env=env, capture_output=True, text=True, timeout=300
    )


def _as(url, role: str, tag: str = ""):
    return create_engine(url.set(username=role, password=f"pw-{role}{tag}"))


def _halt(url, role: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    """`mlops trading halt` logged in as ``role`` (in this process)."""
    from conftest import run_in_process

    login = url.set(username=role, password=f"pw-{role}")
    env = {
        "MLOPS_HOME": str(tmp_path / role),
        "DATABASE_URL": login.render_as_string(hide_password=False),
    }
    return run_in_process(env, "trading", "halt", "--reason", "test", *options)


def _can(engine, statement: str) -> bool:
    from sqlalchemy.exc import ProgrammingError

    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    except ProgrammingError as exc:
        assert "permission denied" in str(exc), exc
        return False
    return True


def test_every_table_is_readable_by_the_reader_and_written_by_some_stage() -> None:
    assert set(roles.ROLES["mlops_reader"]) == set(metadata.tables)
    written = {t for r in roles.ROLES.values() for t, p in r.items() if "INSERT" in p}
    assert written == set(metadata.tables) - set(), "every table has a writer"
    for role, tables in roles.ROLES.items():
        assert set(tables) <= set(metadata.tables), role
        for privileges in tables.values():
            assert "DELETE" not in privileges and "TRUNCATE" not in privileges


def _tables_written_by(package: str) -> set[str]:
    """Tables a stage's code inserts into, updates or upserts (by the names it imports)."""
    names: set[str] = set()
    for path in (SOURCES / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in {"insert_new", "insert_new_bulk", "upsert", "update", "insert"}:
                    for arg in [*node.args[:2], getattr(func, "value", None)]:
                        if isinstance(arg, ast.Name) and arg.id in metadata.tables:
                            names.add(arg.id)
    return names


@pytest.mark.parametrize(
    ("role", "package"),
    [
        ("mlops_data_prep", "data_prep"),
        ("mlops_train", "training"),
        ("mlops_batch_infer", "inference"),
        ("mlops_trade", "trading"),
        ("mlops_monitor", "monitoring"),
    ],
)
def test_each_stage_may_write_the_tables_its_code_writes(role: str, package: str) -> None:
    written = _tables_written_by(package)
    if package == "trading":
        # The kill switch's code is trading's, but its writer is the dashboard's role: the
        # Job that trades only reads it (it cannot lift its own halt).
        assert "trading_halts" in written
        assert roles.ROLES["mlops_trade"]["trading_halts"] == roles.READ
        assert roles.ROLES["mlops_dashboard"]["trading_halts"] == roles.WRITE
        written -= {"trading_halts"}
    allowed = {t for t, p in roles.ROLES[role].items() if "INSERT" in p or "UPDATE" in p}
    assert written <= allowed, f"{package} writes {sorted(written - allowed)} as {role}"


def test_migrate_creates_the_roles_with_exactly_their_rights(
    owned_database, mlflow_database, tmp_path, subprocess_env
) -> None:
    url = owned_database
    mlflow = {
        "MLFLOW_DATABASE_URL": mlflow_database.set(password=None).render_as_string(False),
        "MLFLOW_DATABASE_PASSWORD": mlflow_database.password,
    }
    result = _migrate(url, _password_dir(tmp_path), subprocess_env, **mlflow)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Database schema at revision" in result.stderr
    assert json.loads(result.stdout) == {"revision": head_revision(), "previous": None}

    reader = _as(url, "mlops_reader")
    for table in metadata.tables:
        assert _can(reader, f"SELECT count(*) FROM {table}")
    assert not _can(reader, "UPDATE retrain_requests SET status = 'x'")
    assert not _can(reader, "CREATE TABLE evil (id int)")

    stage = _as(url, "mlops_batch_infer")
    assert _can(
        stage,
        "INSERT INTO predictions (symbol, prediction_date, model_name, model_version, "
        "predicted_close, last_close, expected_change, dataset_version, created_at) "
        "VALUES ('A', '2017-06-01', 'm', '1', 1, 1, 0, 'v', now())",
    )
    assert _can(stage, "CREATE TEMPORARY TABLE t AS SELECT 1 AS x")  # COPY's staging table
    assert not _can(stage, "DELETE FROM predictions")
    assert not _can(stage, "INSERT INTO orders (client_order_id) VALUES ('x')")
    assert not _can(stage, "SELECT * FROM orders")
    orchestrator, dashboard = _as(url, "mlops_orchestrator"), _as(url, "mlops_dashboard")
    assert not _can(orchestrator, "UPDATE retrain_requests SET status = 'x'")
    assert _can(orchestrator, "SELECT * FROM retrain_requests")
    # Requests for work: the dashboard adds them, only the controller moves them along.
    request = (
        "INSERT INTO action_requests (kind, actor, reason, runner, status, open_key, "
        "created_at) VALUES ('monitor', 'dashboard:a', 'r', 'kubernetes', 'queued', "
        "'monitor', now())"
    )
    assert _can(dashboard, request)
    assert not _can(dashboard, "UPDATE action_requests SET status = 'succeeded'")
    assert not _can(orchestrator, request)
    assert _can(orchestrator, "UPDATE action_requests SET status = 'running'")
    # The kill switch: trading reads it and may not lift it; the dashboard's role writes it.
    trade = _as(url, "mlops_trade")
    halt = "INSERT INTO trading_halts (halted, reason, created_at) VALUES (false, 'x', now())"
    assert _can(trade, "SELECT count(*) FROM trading_halts")
    assert not _can(trade, halt)
    assert not _can(trade, "UPDATE trading_halts SET halted = false")
    assert _can(dashboard, halt)
    for engine in (reader, stage, orchestrator, trade, dashboard):
        engine.dispose()
    refused = _halt(url, "mlops_trade", tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith("error: This command's database role may not halt trading")
    )
    done = _halt(url, "mlops_dashboard", tmp_path, "--record-only")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["halted"] is True

    # The backup role dumps everything (rows and sequences) and writes nothing.
    from mlops.backups import dump
    from mlops.settings import load_settings

    backup = url.set(username="mlops_backup", password="pw-mlops_backup")
    dump(load_settings(DATABASE_URL=backup.render_as_string(hide_password=False)), tmp_path / "d")
    assert (tmp_path / "d").stat().st_size > 0
    assert not _can(_as(url, "mlops_backup"), "UPDATE retrain_requests SET status = 'x'")
    # ... and MLflow's database, tables made later by its server included (and writes none).
    with create_engine(mlflow_database).begin() as conn:
        conn.execute(text("CREATE TABLE registered_models (name text)"))
    backup_mlflow = mlflow_database.set(username="mlops_backup", password="pw-mlops_backup")
    as_backup = create_engine(backup_mlflow)
    assert _can(as_backup, "SELECT count(*) FROM registered_models")
    assert not _can(as_backup, "INSERT INTO runs (name) VALUES ('x')")
    as_backup.dispose()
    mlflow_url = backup_mlflow.render_as_string(hide_password=False)
    dump(load_settings(DATABASE_URL=mlflow_url), tmp_path / "mlflow.dump")
    assert (tmp_path / "mlflow.dump").stat().st_size > 0


def test_migrate_again_changes_passwords_and_keeps_rights(
    owned_database, tmp_path, subprocess_env
) -> None:
    url = owned_database
    assert _migrate(url, _password_dir(tmp_path), subprocess_env).returncode == 0
    again = _migrate(url, _password_dir(tmp_path, "-2"), subprocess_env)
    assert again.returncode == 0, again.stdout + again.stderr
    trade = _as(url, "mlops_trade", "-2")
    assert _can(trade, "SELECT count(*) FROM equity_snapshots")
    trade.dispose()


def test_missing_password_file_is_a_config_error(owned_database, tmp_path, subprocess_env):
    folder = _password_dir(tmp_path)
    (folder / "mlops_trade").unlink()
    result = _migrate(owned_database, folder, subprocess_env)
    assert result.returncode == 2, result.stderr
    assert "missing ['mlops_trade']" in result.stderr


def test_an_owner_without_createrole_gets_one_sentence(
    owned_database, postgres_server, tmp_path, subprocess_env
) -> None:
    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"ALTER ROLE {owned_database.username} NOCREATEROLE"))
    admin.dispose()
    result = _migrate(owned_database, _password_dir(tmp_path), subprocess_env)
    assert result.returncode == 2, result.stderr
    assert f"ALTER ROLE {owned_database.username} CREATEROLE" in result.stderr


def test_without_the_variable_nothing_happens(embedded_settings) -> None:
    from mlops.db.engine import make_engine

    engine = make_engine(embedded_settings.db_url)
    assert roles.apply_from_environment(engine) == []


def test_placeholder_or_short_role_passwords_are_refused(tmp_path) -> None:
    from mlops.errors import ConfigError

    folder = _password_dir(tmp_path)
    for weak, why in (("changeme", "placeholder"), ("short-pw", "shorter than 12")):
        (folder / "mlops_trade").write_text(f"{weak}\n")
        with pytest.raises(ConfigError, match=f"database role mlops_trade .*{why}"):
            roles.passwords_from_dir(folder)
