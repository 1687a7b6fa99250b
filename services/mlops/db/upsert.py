"""Idempotent writes that work on both SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _insert(conn: Connection, table: Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"Unsupported database dialect {conn.dialect.name!r}.")


def insert_new(
    conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]], keys: Sequence[str]
) -> int:
    """Insert rows whose key is not present yet; returns how many were new."""
    rows = list(rows)
    if not rows:
        return 0
    stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=list(keys))
    return sum(conn.execute(stmt, [dict(row)]).rowcount for row in rows)


def upsert(
    conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]], keys: Sequence[str]
) -> int:
    """Insert rows, or update the non-key columns of rows whose key exists."""
    rows = list(rows)
    if not rows:
        return 0
    stmt = _insert(conn, table)
    update_cols = [c for c in rows[0] if c not in keys]
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in update_cols}
    )
    conn.execute(stmt, [dict(row) for row in rows])
    return len(rows)
