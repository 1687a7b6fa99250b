"""Backups of the application database in the object store, and their restore.

``mlops backup`` dumps the PostgreSQL database of ``DATABASE_URL`` with ``pg_dump``
(custom format: compressed, restorable table by table) and puts it in the object store
under ``backups/<database>/<UTC stamp>.dump``, then its manifest beside it
(``<stamp>.json``: size, SHA-256, pg_dump's version, the schema revision). The manifest
is written last: a backup without one is incomplete and never restored. Other databases'
dumps (``--dump-file NAME=FILE``: MLflow's, which the CronJob dumps beside the
application's) are kept the same way under ``backups/<NAME>/``, marked as not the
application's (a restore of one does not run the migrations). Then only the
newest ``BACKUP_RETENTION`` backups are kept (older dumps and manifests are deleted, and
incomplete ones older than the newest complete one). In the cluster the CronJob's first
container runs ``pg_dump`` from the PostgreSQL server's own image (the client must be as
new as the server) and ``mlops backup --dump-file`` uploads what it wrote.

``mlops restore`` fetches a backup (the newest, or the stamp given), checks its SHA-256
and restores it with ``pg_restore`` into the database of ``DATABASE_URL``, which must be
empty (a fresh database: nothing is overwritten), then does what ``mlops migrate`` does
(upgrade to the newest schema, roles and grants). ``--output FILE`` only fetches and
checks it, for a ``pg_restore`` run elsewhere (the server's pod).

The datasets, quarantines, predictions' files and models' artifacts are in the object
store (versioned buckets: an overwritten or deleted object is kept as a noncurrent
version for the lifecycle's days); this keeps the rows that point at them, and MLflow's
runs and registry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url

from mlops.errors import ConfigError, DatabaseError, DataError, clause
from mlops.settings import Settings
from mlops.store import ObjectStore

log = logging.getLogger(__name__)

BACKUP_PREFIX = "backups"
DUMP_SUFFIX = ".dump"
MANIFEST_SUFFIX = ".json"
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"  # microseconds: two backups never share one


@dataclass(frozen=True)
class BackupResult:
    key: str
    manifest_key: str
    bytes: int
    sha256: str
    kept: list[str] = field(default_factory=list)  # the stamps kept, newest first
    deleted: list[str] = field(default_factory=list)  # the keys deleted by the retention
    others: list[BackupResult] = field(default_factory=list)  # other databases' dumps


@dataclass(frozen=True)
class RestoreResult:
    key: str
    stamp: str
    database: str | None  # None with --output
    output: str | None
    schema_revision: str | None


def _libpq(settings: Settings) -> tuple[str, dict[str, str]]:
    """The database as a libpq connection URI (no password) and the environment for the
    PostgreSQL tools (the password in ``PGPASSWORD``, as libpq reads it)."""
    url = make_url(settings.db_url)
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            f"mlops backup and restore need PostgreSQL; DATABASE_URL is {url.get_backend_name()} "
            "(the embedded SQLite database is one file: copy it while nothing runs)."
        )
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None, query={})
    return plain.render_as_string(hide_password=False), env


def _tool(settings: Settings, name: str) -> str:
    folder = settings.postgres_bin_dir
    found = shutil.which(name, path=str(folder) if folder else None)
    if found is None:
        where = f"in POSTGRES_BIN_DIR ({folder})" if folder else "on the PATH"
        raise ConfigError(
            f"{name} was not found {where}: install the PostgreSQL client (as new as the "
            "server) or set POSTGRES_BIN_DIR."
        )
    return found


def _run(args: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "error:" in line] or lines  # not its "detail:"
        reason = clause(errors[0] if errors else f"exit {done.returncode}", 240)
        raise DatabaseError(f"{what} failed: {reason}.")
    return done.stdout


def _database_name(settings: Settings) -> str:
    return make_url(settings.db_url).database or "postgres"


# Backing up.


def dump(settings: Settings, target: Path) -> None:
    """``pg_dump`` the database of ``DATABASE_URL`` into ``target`` (custom format)."""
    uri, env = _libpq(settings)
    tool = _tool(settings, "pg_dump")
    _run([tool, "--format=custom", f"--file={target}", f"--dbname={uri}"], env, "pg_dump")


def backup(
    settings: Settings,
    store: ObjectStore,
    engine: Engine,
    dump_file: Path | None = None,
    others: Mapping[str, Path] | None = None,
) -> BackupResult:
    """Dump the database (or take ``dump_file``, written by ``pg_dump -Fc``), upload it
    with its manifest, then apply the retention; the same for each of ``others`` (database
    name -> its dump file), every file checked before anything is uploaded."""
    from mlops.db.migrate import current_revision

    stamp = datetime.now(UTC).strftime(STAMP_FORMAT)
    extra = {name: _read_dump(path) for name, path in (others or {}).items()}
    with tempfile.TemporaryDirectory(prefix="mlops-backup-") as tmp:
        path = dump_file or Path(tmp) / "database.dump"
        if dump_file is None:
            dump(settings, path)
        data = _read_dump(path)
    revision = current_revision(engine)
    keep = settings.backup_retention
    main = _upload(store, keep, _database_name(settings), data, stamp, revision, application=True)
    uploaded = [
        _upload(store, keep, name, other, stamp, None, application=False)
        for name, other in extra.items()
    ]
    return BackupResult(
        main.key, main.manifest_key, main.bytes, main.sha256, main.kept, main.deleted, uploaded
    )


def _read_dump(path: Path) -> bytes:
    if not path.is_file() or path.stat().st_size == 0:
        raise DataError(f"The dump file {path} is missing or empty: pg_dump failed.")
    return path.read_bytes()


def _upload(
    store: ObjectStore,
    retention: int,
    database: str,
    data: bytes,
    stamp: str,
    revision: str | None,
    *,
    application: bool,
) -> BackupResult:
    """One database's dump and its manifest (written last), then its retention."""
    folder = f"{BACKUP_PREFIX}/{database}"
    digest = hashlib.sha256(data).hexdigest()
    key, manifest_key = f"{folder}/{stamp}{DUMP_SUFFIX}", f"{folder}/{stamp}{MANIFEST_SUFFIX}"
    manifest = {
        "stamp": stamp,
        "database": database,
        "key": key,
        "bytes": len(data),
        "sha256": digest,
        "schema_revision": revision,
        # The application's database: a restore migrates it (another's is restored as is).
        "application": application,
        "created_at": datetime.now(UTC).isoformat(),
    }
    store.put_bytes(key, data, "application/octet-stream")
    store.put_bytes(manifest_key, json.dumps(manifest, indent=2).encode(), "application/json")
    kept, deleted = _apply_retention(store, folder, retention)
    log.info("Backup %s: %d bytes; %d kept, %d deleted", key, len(data), len(kept), len(deleted))
    return BackupResult(key, manifest_key, len(data), digest, kept, deleted)


def _stamps(store: ObjectStore, folder: str) -> tuple[list[str], list[str]]:
    """The complete backups' stamps (with a manifest), newest first; every key there."""
    keys = store.list(f"{folder}/")
    complete = sorted(
        (k.rsplit("/", 1)[1][: -len(MANIFEST_SUFFIX)] for k in keys if k.endswith(MANIFEST_SUFFIX)),
        reverse=True,
    )
    return complete, keys


def _apply_retention(store: ObjectStore, folder: str, keep: int) -> tuple[list[str], list[str]]:
    complete, keys = _stamps(store, folder)
    kept = complete[:keep]
    oldest_kept = kept[-1] if kept else ""
    deleted = []
    for key in keys:
        stamp = key.rsplit("/", 1)[1].split(".", 1)[0]
        if stamp not in kept and stamp < oldest_kept:  # newer incomplete ones may be running
            store.delete(key)
            deleted.append(key)
    return kept, deleted


# Restoring.


def _find(store: ObjectStore, folder: str, stamp: str) -> dict:
    complete, _ = _stamps(store, folder)
    if not complete:
        raise DataError(f"No backup in the object store under {folder}/: run `mlops backup`.")
    chosen = complete[0] if stamp == "latest" else stamp
    if chosen not in complete:
        raise DataError(f"No complete backup {stamp} under {folder}/; the newest is {complete[0]}.")
    manifest = json.loads(store.get_bytes(f"{folder}/{chosen}{MANIFEST_SUFFIX}"))
    return dict(manifest)


def _require_empty(engine: Engine) -> None:
    tables = inspect(engine).get_table_names()
    if tables:
        raise ConfigError(
            f"The database at {engine.url.render_as_string()} is not empty ({len(tables)} "
            "tables): restore only into a fresh database (create one and point DATABASE_URL "
            "at it); nothing was changed."
        )


def restore(
    settings: Settings,
    store: ObjectStore,
    engine: Engine,
    stamp: str = "latest",
    output: Path | None = None,
    database: str | None = None,
) -> RestoreResult:
    """Restore the backup ``stamp`` (of ``database``, default DATABASE_URL's name) into the
    empty database of DATABASE_URL, or only fetch and check it into ``output``."""
    folder = f"{BACKUP_PREFIX}/{database or _database_name(settings)}"
    manifest = _find(store, folder, stamp)
    data = store.get_bytes(manifest["key"])
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise DataError(f"Backup {manifest['key']} does not match its SHA-256: it is damaged.")
    if output is not None:
        output.write_bytes(data)
        return RestoreResult(manifest["key"], manifest["stamp"], None, str(output), None)
    _require_empty(engine)
    uri, env = _libpq(settings)
    tool = _tool(settings, "pg_restore")
    with tempfile.TemporaryDirectory(prefix="mlops-restore-") as tmp:
        path = Path(tmp) / "database.dump"
        path.write_bytes(data)
        options = ["--no-owner", "--no-acl", "--exit-on-error", "--single-transaction"]
        _run([tool, *options, f"--dbname={uri}", str(path)], env, "pg_restore")
    revision: str | None = manifest.get("schema_revision")
    if manifest.get("application", True):
        revision = _as_migrate_leaves_it(engine)
    # else another database's (MLflow's): its own server migrates it
    log.info("Restored %s into %s (schema %s)", manifest["key"], _database_name(settings), revision)
    return RestoreResult(
        manifest["key"], manifest["stamp"], _database_name(settings), None, revision
    )


def _as_migrate_leaves_it(engine: Engine) -> str:
    """The newest schema, the roles and their grants: what ``mlops migrate`` does."""
    from mlops.db import migrate, roles

    revision = migrate.upgrade(engine)
    roles.apply_from_environment(engine)
    return revision
