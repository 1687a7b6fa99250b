"""Idempotent writes that work on both SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
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


# Below this many rows a multi-row INSERT is as fast as COPY and simpler.
COPY_MIN_ROWS = 2000


def insert_new_bulk(
    conn: Connection,
    table: Table,
    rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
    keys: Sequence[str],
    *,
    page_size: int = 5000,
) -> int:
    """``insert_new`` for many rows at once; returns how many rows were new.

    PostgreSQL: below ``COPY_MIN_ROWS`` rows, ``execute_values`` of one multi-row
    ``INSERT ... ON CONFLICT (keys) DO NOTHING RETURNING 1`` per page (the returned rows
    are the new ones); above, ``COPY`` into a temporary table, then one
    ``INSERT ... SELECT ... ON CONFLICT (keys) DO NOTHING``. SQLite: ``executemany`` of the
    same conflict-ignoring insert. Rows are mappings, or a DataFrame whose columns are the
    table's. Like ``insert_new``, it runs inside the caller's transaction.
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    if frame.empty:
        return 0
    columns = [str(c) for c in frame.columns]
    dialect = conn.dialect.name
    if dialect == "postgresql" and len(frame) >= COPY_MIN_ROWS:
        return _copy_new(conn, table, frame, columns, keys)
    values = [
        tuple(_native(v) for v in row)
        for row in zip(*(frame[c].tolist() for c in frame.columns), strict=True)
    ]
    if dialect == "postgresql":
        from psycopg2.extras import execute_values

        sql = (
            f"INSERT INTO {_table_name(conn, table)} ({_column_list(conn, columns)}) VALUES %s "
            f"ON CONFLICT ({_column_list(conn, keys)}) DO NOTHING RETURNING 1"
        )
        cursor = _driver(conn).cursor()
        try:
            returned = execute_values(cursor, sql, values, page_size=page_size, fetch=True)
        finally:
            cursor.close()
        return len(returned)
    if dialect == "sqlite":
        # The column types' own conversions (dates to ISO text, ...), then the driver's
        # executemany; its row count adds up the rows each execution inserted.
        processors = [table.c[c].type._cached_bind_processor(conn.dialect) for c in columns]
        converted = zip(
            *(
                [p(v) for v in column] if p is not None else column
                for p, column in zip(processors, zip(*values, strict=True), strict=True)
            ),
            strict=True,
        )
        sql = (
            f"INSERT INTO {_table_name(conn, table)} ({_column_list(conn, columns)}) "
            f"VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({_column_list(conn, keys)}) DO NOTHING"
        )
        cursor = _driver(conn).cursor()
        try:
            cursor.executemany(sql, list(converted))
            return cursor.rowcount
        finally:
            cursor.close()
    return insert_new(conn, table, [dict(zip(columns, row, strict=True)) for row in values], keys)


def _table_name(conn: Connection, table: Table) -> str:
    return conn.dialect.identifier_preparer.format_table(table)


def _column_list(conn: Connection, columns: Sequence[str]) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return ", ".join(quote(c) for c in columns)


def _copy_new(
    conn: Connection, table: Table, frame: pd.DataFrame, columns: list[str], keys: Sequence[str]
) -> int:
    """PostgreSQL: COPY the rows into a temporary table, then insert the new ones."""
    import io
    import uuid

    staging = f"mlops_staging_{uuid.uuid4().hex[:16]}"
    cols = _column_list(conn, columns)
    cursor = _driver(conn).cursor()
    try:
        cursor.execute(
            f"CREATE TEMPORARY TABLE {staging} AS SELECT {cols} FROM {_table_name(conn, table)} "
            "WITH NO DATA"
        )
        cursor.copy_expert(f"COPY {staging} ({cols}) FROM STDIN", io.StringIO(_copy_text(frame)))
        cursor.execute(
            f"INSERT INTO {_table_name(conn, table)} ({cols}) SELECT {cols} FROM {staging} "
            f"ON CONFLICT ({_column_list(conn, keys)}) DO NOTHING"
        )
        inserted = cursor.rowcount
        cursor.execute(f"DROP TABLE {staging}")
    finally:
        cursor.close()
    return inserted


def _copy_text(frame: pd.DataFrame) -> str:
    """The rows in COPY's text format: tab-separated, ``\\N`` for NULL, escaped text.

    Floats are written with ``repr`` (exact; NaN and infinities as ``nan``/``inf``, which
    PostgreSQL reads, as ``insert_new`` would store them); other columns are factorised
    and only their distinct values formatted, missing values being NULL.
    """
    columns = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind == "f":
            # Through float64, so a float32 keeps its exact value (its own repr is shorter).
            columns.append(list(map(repr, column.to_numpy(dtype="float64").tolist())))
            continue
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        text = np.array([_copy_escape(_native(v)) for v in uniques] + ["\\N"], dtype=object)
        columns.append(text[codes].tolist())  # code -1 (missing) picks the last: NULL
    return "".join(f"{line}\n" for line in map("\t".join, zip(*columns, strict=True)))


def _copy_escape(value: Any) -> str:
    text = str(value)
    if any(c in text for c in "\\\t\n\r"):
        text = (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


def _native(value: Any) -> Any:
    """Python scalars for the drivers (NumPy scalars and pandas timestamps are not)."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _driver(conn: Connection) -> Any:
    """The DB-API connection under SQLAlchemy's (psycopg2's, on Postgres)."""
    driver = conn.connection.driver_connection
    if driver is None:
        raise RuntimeError("The database connection has been closed.")
    return driver
