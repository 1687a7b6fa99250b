"""PostgreSQL roles per purpose, and the only tables each may touch.

Every pod connects as its own role (libpq's ``PGUSER`` and ``PGPASSWORD``); only
``mlops migrate`` connects as the schema owner. After the migrations, the owner creates
the roles below (or sets their passwords again) and grants exactly what :data:`ROLES`
says, revoking anything else on the schema's tables and sequences, in one transaction:

- a stage writes (SELECT, INSERT, UPDATE; never DELETE or TRUNCATE) the tables it owns
  and reads its inputs;
- the orchestrator reads the retrain requests and the training runs, audits the day's
  scheduled training in ``model_actions``, and as the controller of requests for work
  moves ``action_requests`` rows along (SELECT, UPDATE: it never adds one);
- ``mlops_dashboard`` (the dashboard, and ``mlops models`` and ``mlops trading
  halt|resume`` run in its pod) reads every table and writes only the audit of its
  actions (``model_actions``), the kill switch (``trading_halts``, which the trading
  stage only reads: the Job that trades cannot lift its own halt) and the alerts these
  send (``alerts``);
- every role that may send an alert (:mod:`mlops.alerts`) records it in ``alerts``
  (SELECT, INSERT: an alert is never changed);
- the dashboard adds new requests for work (``action_requests``: INSERT, never
  UPDATE: how a request goes is the controller's to say);
- ``mlops_reader`` reads every table and writes none (for people: psql, notebooks);
- ``mlops_backup`` reads every table and the sequences' positions, what ``pg_dump`` needs
  (``mlops backup``, the backup CronJob), and writes none.

``mlops_backup`` also reads MLflow's database (runs, the registry, its users), so the
backup CronJob dumps both: when ``MLFLOW_DATABASE_URL`` (that database as its owner, the
tracking server's role; password in ``MLFLOW_DATABASE_PASSWORD``) is set, ``mlops
migrate`` connects as that owner and grants the backup role CONNECT, SELECT on its tables
and sequences, and SELECT on the tables the server creates later (default privileges).

The passwords come from files, one per role named after it, in the folder
``DB_ROLE_PASSWORDS_DIR`` (in the cluster: the Secret's keys mounted into the migrate
Job). Without that variable, or on SQLite, nothing is done. The owner needs CREATEROLE
(``deployments/postgres.yaml`` creates it so).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Connection, Engine

from mlops.db.schema import metadata
from mlops.errors import ConfigError
from mlops.settings import password_problem

log = logging.getLogger(__name__)

PASSWORDS_DIR_ENV = "DB_ROLE_PASSWORDS_DIR"
MLFLOW_DATABASE_ENV = "MLFLOW_DATABASE_URL"
MLFLOW_PASSWORD_ENV = "MLFLOW_DATABASE_PASSWORD"
VERSION_TABLE = "alembic_version"  # read by every command (the schema check)

READ = ("SELECT",)
WRITE = ("SELECT", "INSERT", "UPDATE")
# The alerts (mlops.alerts): whoever may send one records it, and never changes one.
ALERTS = {"alerts": ("SELECT", "INSERT")}
APPEND = ("SELECT", "INSERT")
ADVANCE = ("SELECT", "UPDATE")

# role -> table -> privileges. A test keeps this in step with the tables the code uses.
ROLES: dict[str, dict[str, tuple[str, ...]]] = {
    "mlops_data_prep": {"stage_runs": WRITE, "datasets": WRITE, **ALERTS},
    "mlops_train": {
        "stage_runs": WRITE,
        "datasets": READ,
        "retrain_requests": WRITE,
        # The promotion gate's champion moves are audited like `mlops models promote`.
        "model_actions": WRITE,
        # `mlops walk-forward` trains with the training stage's image and identity.
        "walkforward_runs": WRITE,
        **ALERTS,
    },
    "mlops_batch_infer": {
        "stage_runs": WRITE,
        "datasets": READ,
        "predictions": WRITE,
        **ALERTS,
    },
    "mlops_trade": {
        "stage_runs": WRITE,
        "datasets": READ,
        "predictions": READ,
        "trade_decisions": WRITE,
        "orders": WRITE,
        "equity_snapshots": WRITE,
        # Trading reads the kill switch and may not lift it: halts and resumes are written
        # by the dashboard's role (its buttons, `mlops trading halt|resume` in its pod).
        "trading_halts": READ,
        # `mlops backtest` belongs to the trading package and runs with its identity.
        "backtest_runs": WRITE,
        **ALERTS,
    },
    "mlops_monitor": {
        "stage_runs": WRITE,
        "datasets": READ,
        "predictions": READ,
        "monitoring_metrics": WRITE,
        "retrain_requests": WRITE,
        **ALERTS,
    },
    "mlops_orchestrator": {
        "stage_runs": READ,
        "retrain_requests": READ,
        "model_actions": WRITE,
        **ALERTS,
        "action_requests": ADVANCE,
    },
    "mlops_dashboard": {
        **{name: READ for name in metadata.tables},
        "model_actions": WRITE,
        "trading_halts": WRITE,
        # A halt, a resume or a promotion from the dashboard sends an alert.
        **ALERTS,
        "action_requests": APPEND,
    },
    "mlops_reader": {name: READ for name in metadata.tables},
    "mlops_backup": {name: READ for name in metadata.tables},
}
# Roles that also read every sequence's position (pg_dump saves them with the rows).
SEQUENCE_READERS = frozenset({"mlops_backup"})
# Roles that read MLflow's database (granted by its owner): pg_dump of it.
MLFLOW_DATABASE_READERS = ("mlops_backup",)


def writes(role: str) -> bool:
    return any(privileges != READ for privileges in ROLES[role].values())


def passwords_from_dir(folder: Path) -> dict[str, str]:
    """One password per role of :data:`ROLES`: the file named after the role."""
    found = {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    missing = sorted(set(ROLES) - set(found))
    unknown = sorted(set(found) - set(ROLES))
    if missing or unknown:
        raise ConfigError(
            f"{PASSWORDS_DIR_ENV}={folder} must hold one password file per database role: "
            f"missing {missing or 'none'}, unknown {unknown or 'none'}."
        )
    passwords = {role: found[role].read_text().strip() for role in ROLES}
    empty = sorted(role for role, password in passwords.items() if not password)
    if empty:
        raise ConfigError(f"The password files of database roles {empty} are empty.")
    for role, password in passwords.items():
        problem = password_problem(f"The password file of database role {role}", password)
        if problem is not None:
            raise ConfigError(f"{problem}; no role was changed.")
    return passwords


def apply_from_environment(engine: Engine) -> list[str]:
    """What ``mlops migrate`` calls: the roles, when ``DB_ROLE_PASSWORDS_DIR`` is set."""
    folder = os.environ.get(PASSWORDS_DIR_ENV)
    if not folder or engine.dialect.name != "postgresql":
        return []
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{PASSWORDS_DIR_ENV}={folder} is not a folder.")
    return apply_roles(engine, passwords_from_dir(path))


def apply_roles(engine: Engine, passwords: Mapping[str, str]) -> list[str]:
    """Create or update every role of :data:`ROLES` and grant exactly its privileges."""
    from psycopg2.errors import InsufficientPrivilege
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.begin() as conn:
            for role in ROLES:
                _apply(conn, role, passwords[role])
    except DBAPIError as exc:
        if not isinstance(exc.orig, InsufficientPrivilege):
            raise
        reason = str(exc.orig).strip().splitlines()[0]
        owner = engine.url.username or os.environ.get("PGUSER") or "mlops"
        raise ConfigError(
            f"The schema owner may not manage database roles ({reason}): as the superuser, "
            f"run ALTER ROLE {owner} CREATEROLE."
        ) from None
    names = list(ROLES)
    log.info("Database roles up to date: %s", ", ".join(names))
    return names


def _apply(conn: Connection, role: str, password: str) -> None:
    quote = conn.dialect.identifier_preparer.quote
    name = quote(role)
    attributes = conn.exec_driver_sql(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls "
        "FROM pg_roles WHERE rolname = %s",
        (role,),
    ).first()
    if attributes is None:
        conn.exec_driver_sql(
            f"CREATE ROLE {name} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            "NOREPLICATION NOBYPASSRLS PASSWORD %s",
            (password,),
        )
    elif attributes[0]:
        raise ConfigError(
            f"Database role {role} exists with more than LOGIN (superuser, CREATEROLE, "
            "CREATEDB, REPLICATION or BYPASSRLS): drop it, then run `mlops migrate` again."
        )
    else:
        conn.exec_driver_sql(f"ALTER ROLE {name} WITH LOGIN PASSWORD %s", (password,))
    database = quote(conn.exec_driver_sql("SELECT current_database()").scalar_one())
    conn.exec_driver_sql(f"REVOKE ALL ON DATABASE {database} FROM {name}")
    database_rights = "CONNECT, TEMPORARY" if writes(role) else "CONNECT"
    conn.exec_driver_sql(f"GRANT {database_rights} ON DATABASE {database} TO {name}")
    conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {name}")
    conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}")
    conn.exec_driver_sql(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {name}")
    conn.exec_driver_sql(f"GRANT SELECT ON {quote(VERSION_TABLE)} TO {name}")
    if role in SEQUENCE_READERS:
        conn.exec_driver_sql(f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}")
    for table, privileges in ROLES[role].items():
        conn.exec_driver_sql(f"GRANT {', '.join(privileges)} ON {quote(table)} TO {name}")
        if "INSERT" in privileges:
            for sequence in _sequences(conn, table):
                conn.exec_driver_sql(f"GRANT USAGE ON SEQUENCE {sequence} TO {name}")


def _sequences(conn: Connection, table: str) -> list[str]:
    """The sequences behind the table's serial or identity columns (already quoted)."""
    rows = conn.exec_driver_sql(
        "SELECT pg_get_serial_sequence(quote_ident(%s), column_name) FROM "
        "information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
        (table, table),
    ).scalars()
    return [row for row in rows if row]


def apply_mlflow_grants_from_environment() -> list[str]:
    """What ``mlops migrate`` calls after the roles: MLflow's database readable by the
    backup role, when ``MLFLOW_DATABASE_URL`` is set (else nothing is done)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from mlops.db.engine import make_engine

    text = os.environ.get(MLFLOW_DATABASE_ENV, "").strip()
    if not text:
        return []
    try:
        url = make_url(text)
    except ArgumentError:
        raise ConfigError(f"{MLFLOW_DATABASE_ENV} is not a database URL.") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"{MLFLOW_DATABASE_ENV} must name MLflow's PostgreSQL database.")
    password = os.environ.get(MLFLOW_PASSWORD_ENV) or url.password
    engine = make_engine(url.set(password=password).render_as_string(hide_password=False))
    try:
        return grant_mlflow_readers(engine)
    finally:
        engine.dispose()


def grant_mlflow_readers(engine: Engine) -> list[str]:
    """As MLflow's database owner: :data:`MLFLOW_DATABASE_READERS` may read all of it."""
    from psycopg2.errors import InsufficientPrivilege, UndefinedObject
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.begin() as conn:
            quote = conn.dialect.identifier_preparer.quote
            database = quote(conn.exec_driver_sql("SELECT current_database()").scalar_one())
            for role in MLFLOW_DATABASE_READERS:
                name = quote(role)
                conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {database} TO {name}")
                conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {name}")
                for kind in ("TABLES", "SEQUENCES"):
                    grant = f"GRANT SELECT ON {{}}{kind} {{}}TO {name}"
                    conn.exec_driver_sql(grant.format("ALL ", "IN SCHEMA public "))
                    # What the server creates later (its upgrades), as this owner.
                    conn.exec_driver_sql(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA public " + grant.format("", "")
                    )
    except DBAPIError as exc:
        if not isinstance(exc.orig, InsufficientPrivilege | UndefinedObject):
            raise
        reason = str(exc.orig).strip().splitlines()[0]
        raise ConfigError(
            f"MLflow's database could not be made readable for its backup ({reason}): "
            f"{MLFLOW_DATABASE_ENV} must name that database as its owner, after the roles "
            "exist."
        ) from None
    readers = list(MLFLOW_DATABASE_READERS)
    log.info("MLflow's database readable by %s", ", ".join(readers))
    return readers
