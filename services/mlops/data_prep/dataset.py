"""Immutable, versioned feature datasets in the object store.

Layout: ``datasets/features/<version>/data.parquet`` then ``.../manifest.json``, written
last. A version is ``<as_of>-<first 12 hex of the content hash>``, so the same data gives
the same version and republishing it changes nothing. Readers go through the manifest,
and the ``datasets`` table indexes the manifests for lookup by date.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import date, datetime

import pandas as pd
from sqlalchemy import Engine, select

from mlops.db.schema import datasets
from mlops.db.upsert import insert_new
from mlops.errors import DataError
from mlops.runs import utcnow
from mlops.store import ObjectStore, get_json, get_parquet, put_json, put_parquet

PREFIX = "datasets/features"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    version: str
    as_of: str
    content_hash: str
    rows: int
    symbols: list[str]
    first_date: str
    last_date: str
    data_key: str
    columns: list[str]
    source: str
    created_at: str
    schema_version: int = SCHEMA_VERSION
    quarantined_rows: int = 0
    quarantine_key: str | None = None

    @property
    def key(self) -> str:
        return manifest_key(self.version)


def manifest_key(version: str) -> str:
    return f"{PREFIX}/{version}/manifest.json"


def content_hash(frame: pd.DataFrame) -> str:
    """A hash of the values and column names, independent of the Parquet encoder."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def publish(
    store: ObjectStore,
    engine: Engine,
    frame: pd.DataFrame,
    *,
    as_of: date,
    source: str,
    quarantine: pd.DataFrame | None = None,
) -> tuple[Manifest, bool]:
    """Write the dataset (data first, manifest last) and index it; returns (manifest, is_new)."""
    if frame.empty:
        raise DataError(f"No rows to publish for {as_of}.")
    digest = content_hash(frame)
    version = f"{as_of.isoformat()}-{digest[:12]}"
    key = manifest_key(version)
    if store.exists(key):
        manifest = read_manifest(store, version)
        _index(engine, manifest)
        return manifest, False
    data_key = f"{PREFIX}/{version}/data.parquet"
    put_parquet(store, data_key, frame)
    quarantine_key = None
    if quarantine is not None and not quarantine.empty:
        quarantine_key = f"quarantine/{as_of.isoformat()}/{version}.parquet"
        put_parquet(store, quarantine_key, quarantine)
    manifest = Manifest(
        version=version,
        as_of=as_of.isoformat(),
        content_hash=digest,
        rows=len(frame),
        symbols=sorted(frame["symbol"].unique().tolist()),
        first_date=frame["date"].min().date().isoformat(),
        last_date=frame["date"].max().date().isoformat(),
        data_key=data_key,
        columns=list(map(str, frame.columns)),
        source=source,
        created_at=utcnow().isoformat(),
        quarantined_rows=0 if quarantine is None else len(quarantine),
        quarantine_key=quarantine_key,
    )
    put_json(store, key, asdict(manifest))
    _index(engine, manifest)
    return manifest, True


def _index(engine: Engine, manifest: Manifest) -> None:
    with engine.begin() as conn:
        insert_new(
            conn,
            datasets,
            [
                {
                    "version": manifest.version,
                    "as_of": date.fromisoformat(manifest.as_of),
                    "manifest_key": manifest.key,
                    "content_hash": manifest.content_hash,
                    "rows": manifest.rows,
                    "symbols": ",".join(manifest.symbols),
                    "first_date": date.fromisoformat(manifest.first_date),
                    "last_date": date.fromisoformat(manifest.last_date),
                    "created_at": datetime.fromisoformat(manifest.created_at),
                }
            ],
            keys=["version"],
        )


def read_manifest(store: ObjectStore, version: str) -> Manifest:
    payload = get_json(store, manifest_key(version))
    return Manifest(**payload)


def latest_version(engine: Engine, as_of: date | None = None) -> str:
    """The newest dataset published for ``as_of`` or before (newest overall without it)."""
    query = select(datasets.c.version).order_by(
        datasets.c.as_of.desc(), datasets.c.created_at.desc()
    )
    if as_of is not None:
        query = query.where(datasets.c.as_of <= as_of)
    with engine.connect() as conn:
        version = conn.execute(query.limit(1)).scalar()
    if version is None:
        when = f" for {as_of} or earlier" if as_of else ""
        raise DataError(f"No dataset has been published{when}: run `mlops data-prep` first.")
    return version


def load(store: ObjectStore, version: str) -> tuple[Manifest, pd.DataFrame]:
    """A published dataset and its manifest."""
    manifest = read_manifest(store, version)
    frame = get_parquet(store, manifest.data_key)
    if len(frame) != manifest.rows:
        raise DataError(
            f"Dataset {version} holds {len(frame)} rows but its manifest says {manifest.rows}."
        )
    return manifest, frame
