"""Immutable, versioned feature datasets in the object store.

A dataset is one or more Parquet *parts* and a *manifest* naming them, written last:

* parts: ``datasets/features/parts/<as_of>/<content hash>.parquet``, content-addressed
  (the same rows give the same key, so rewriting one changes nothing), each at most
  ``PART_ROWS`` rows, sorted by date and symbol;
* manifest: ``datasets/features/<version>/manifest.json``, with ``version`` =
  ``<as_of>-<first 12 hex of the dataset hash>``; the dataset hash covers the parts'
  content hashes and the stale symbols, so the same data gives the same version and
  republishing it changes nothing.

Readers go through the manifest (``load`` reads every part, in order, and checks the row
counts) and the ``datasets`` table indexes the manifests for lookup by date. Parts that
no manifest names are invisible.

Shards (Kubernetes Indexed Job, ``DATA_PREP_SHARDS`` > 1): each shard writes its parts and
then a *shard manifest* at ``datasets/features/shards/<as_of>/<index>-of-<count>.json``.
Once all ``count`` shard manifests of an as-of day exist, ``finalize`` combines them into
one dataset manifest as above: readers see one version whatever the shard count. The
shard that completes the set finalizes on its own; ``mlops data-prep --finalize`` does
the same by hand. A shard rerun replaces its shard manifest; the dataset is the union of
the newest manifest of every shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from mlops.db.schema import datasets
from mlops.db.upsert import insert_new
from mlops.errors import DataError
from mlops.runs import utcnow
from mlops.store import ObjectStore, get_json, get_parquet, put_json

log = logging.getLogger(__name__)

PREFIX = "datasets/features"
PARTS_PREFIX = f"{PREFIX}/parts"
SHARDS_PREFIX = f"{PREFIX}/shards"
QUARANTINE_PREFIX = "quarantine"
SCHEMA_VERSION = 2
PART_ROWS = 500_000
MAX_FLAGS = 1000  # quality flags kept in a manifest (the count is always complete)


@dataclass(frozen=True)
class Contents:
    """What a dataset (or one shard's share of it) holds."""

    parts: list[dict[str, Any]] = field(default_factory=list)  # key, rows, content_hash
    rows: int = 0
    symbols: list[str] = field(default_factory=list)
    first_date: str | None = None
    last_date: str | None = None
    columns: list[str] = field(default_factory=list)
    quarantined_rows: int = 0
    quarantine_keys: list[str] = field(default_factory=list)
    stale_symbols: list[str] = field(default_factory=list)
    quality_flags: list[dict[str, str]] = field(default_factory=list)
    quality_flag_count: int = 0

    @staticmethod
    def combine(items: list[Contents]) -> Contents:
        firsts = [c.first_date for c in items if c.first_date]
        lasts = [c.last_date for c in items if c.last_date]
        columns = next((c.columns for c in items if c.columns), [])
        for item in items:
            if item.columns and item.columns != columns:
                raise DataError("The shards' parts do not have the same columns.")
        flags = [f for c in items for f in c.quality_flags]
        return Contents(
            parts=[p for c in items for p in c.parts],
            rows=sum(c.rows for c in items),
            symbols=sorted({s for c in items for s in c.symbols}),
            first_date=min(firsts) if firsts else None,
            last_date=max(lasts) if lasts else None,
            columns=columns,
            quarantined_rows=sum(c.quarantined_rows for c in items),
            quarantine_keys=[k for c in items for k in c.quarantine_keys],
            stale_symbols=sorted({s for c in items for s in c.stale_symbols}),
            quality_flags=flags[:MAX_FLAGS],
            quality_flag_count=sum(c.quality_flag_count for c in items),
        )

    def dataset_hash(self) -> str:
        payload = {
            "parts": [p["content_hash"] for p in self.parts],
            "stale_symbols": self.stale_symbols,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    version: str
    as_of: str
    content_hash: str
    rows: int
    symbols: list[str]
    first_date: str
    last_date: str
    data_key: str  # the only part of a one-part dataset; "" when there are several
    columns: list[str]
    source: str
    created_at: str
    schema_version: int = SCHEMA_VERSION
    quarantined_rows: int = 0
    quarantine_key: str | None = None  # the only quarantine file, when there is one
    parts: list[dict[str, Any]] = field(default_factory=list)
    quarantine_keys: list[str] = field(default_factory=list)
    stale_symbols: list[str] = field(default_factory=list)
    quality_flags: list[dict[str, str]] = field(default_factory=list)
    quality_flag_count: int = 0
    shards: int = 1

    @property
    def key(self) -> str:
        return manifest_key(self.version)

    @property
    def part_list(self) -> list[dict[str, Any]]:
        """Every part (manifests of schema 1 name one ``data_key``)."""
        if self.parts:
            return self.parts
        return [{"key": self.data_key, "rows": self.rows, "content_hash": self.content_hash}]


@dataclass(frozen=True)
class ShardManifest:
    as_of: str
    index: int
    count: int
    source: str
    created_at: str
    contents: Contents

    @property
    def key(self) -> str:
        return shard_manifest_key(date.fromisoformat(self.as_of), self.index, self.count)


def manifest_key(version: str) -> str:
    return f"{PREFIX}/{version}/manifest.json"


def part_key(as_of: date, digest: str) -> str:
    return f"{PARTS_PREFIX}/{as_of.isoformat()}/{digest[:24]}.parquet"


def shard_manifest_key(as_of: date, index: int, count: int) -> str:
    return f"{SHARDS_PREFIX}/{as_of.isoformat()}/{index}-of-{count}.json"


def content_hash(frame: pd.DataFrame) -> str:
    """A hash of the values and column names, independent of the Parquet encoder."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# Writing.


@dataclass(frozen=True)
class StagedPart:
    """A part written to local disk, not yet in the store."""

    path: Path
    rows: int
    content_hash: str
    symbols: list[str]
    first_date: str
    last_date: str
    columns: list[str]


class PartWriter:
    """Collects feature rows symbol by symbol into local part files of bounded size.

    Nothing reaches the store until ``upload``: a batch refused by the quality gate
    leaves no trace there.
    """

    def __init__(self, folder: Path, max_rows: int = PART_ROWS, name: str = "part") -> None:
        self.folder = Path(folder)
        self.max_rows = max_rows
        self.name = name
        self.buffer: list[pd.DataFrame] = []
        self.buffered = 0
        self.parts: list[StagedPart] = []

    def add(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        self.buffer.append(frame)
        self.buffered += len(frame)
        if self.buffered >= self.max_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        frames = self.buffer
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        self.buffer, self.buffered = [], 0
        if "symbol" in frame.columns and "date" in frame.columns:
            frame = frame.sort_values(["date", "symbol"], kind="stable").reset_index(drop=True)
        path = self.folder / f"{self.name}-{len(self.parts):05d}.parquet"
        frame.to_parquet(path, index=False)
        dates = frame["date"].dropna() if "date" in frame.columns else pd.Series([], dtype=object)
        self.parts.append(
            StagedPart(
                path=path,
                rows=len(frame),
                content_hash=content_hash(frame),
                symbols=sorted(frame["symbol"].dropna().unique().tolist()),
                first_date=dates.min().date().isoformat() if len(dates) else "",
                last_date=dates.max().date().isoformat() if len(dates) else "",
                columns=list(map(str, frame.columns)),
            )
        )

    def close(self) -> list[StagedPart]:
        self.flush()
        return self.parts


def upload_parts(store: ObjectStore, as_of: date, staged: list[StagedPart]) -> Contents:
    """Put staged parts in the store (skipping those already there) and describe them."""
    parts = []
    for part in staged:
        key = part_key(as_of, part.content_hash)
        if not store.exists(key):
            store.put_bytes(key, part.path.read_bytes(), "application/vnd.apache.parquet")
        parts.append({"key": key, "rows": part.rows, "content_hash": part.content_hash})
    firsts = [p.first_date for p in staged if p.first_date]
    lasts = [p.last_date for p in staged if p.last_date]
    return Contents(
        parts=parts,
        rows=sum(p.rows for p in staged),
        symbols=sorted({s for p in staged for s in p.symbols}),
        first_date=min(firsts) if firsts else None,
        last_date=max(lasts) if lasts else None,
        columns=staged[0].columns if staged else [],
    )


def upload_quarantine(store: ObjectStore, as_of: date, staged: list[StagedPart]) -> list[str]:
    """Put the quarantined rows (with their reasons) in the store; returns the keys."""
    keys = []
    for part in staged:
        key = f"{QUARANTINE_PREFIX}/{as_of.isoformat()}/{part.content_hash[:24]}.parquet"
        if not store.exists(key):
            store.put_bytes(key, part.path.read_bytes(), "application/vnd.apache.parquet")
        keys.append(key)
    return keys


def publish(
    store: ObjectStore,
    engine: Engine,
    frame: pd.DataFrame,
    *,
    as_of: date,
    source: str,
    quarantine: pd.DataFrame | None = None,
) -> tuple[Manifest, bool]:
    """Write one in-memory frame as a dataset (data first, manifest last) and index it."""
    if frame.empty:
        raise DataError(f"No rows to publish for {as_of}.")
    with tempfile.TemporaryDirectory(prefix="mlops-publish-") as folder:
        writer = PartWriter(Path(folder), max_rows=max(len(frame), 1))
        writer.add(frame)
        contents = upload_parts(store, as_of, writer.close())
        quarantine_keys: list[str] = []
        if quarantine is not None and not quarantine.empty:
            q_writer = PartWriter(Path(folder), max_rows=len(quarantine), name="quarantine")
            q_writer.add(quarantine)
            quarantine_keys = upload_quarantine(store, as_of, q_writer.close())
    contents = replace(
        contents,
        quarantined_rows=0 if quarantine is None else len(quarantine),
        quarantine_keys=quarantine_keys,
    )
    return publish_contents(store, engine, contents, as_of=as_of, source=source)


def publish_contents(
    store: ObjectStore,
    engine: Engine,
    contents: Contents,
    *,
    as_of: date,
    source: str,
    shards: int = 1,
) -> tuple[Manifest, bool]:
    """Write the manifest of parts already in the store, and index it."""
    if contents.rows == 0 or not contents.parts:
        raise DataError(f"No rows to publish for {as_of}.")
    digest = contents.dataset_hash()
    version = f"{as_of.isoformat()}-{digest[:12]}"
    key = manifest_key(version)
    if store.exists(key):
        manifest = read_manifest(store, version)
        _index(engine, manifest)
        return manifest, False
    single = len(contents.parts) == 1
    manifest = Manifest(
        version=version,
        as_of=as_of.isoformat(),
        content_hash=digest,
        rows=contents.rows,
        symbols=contents.symbols,
        first_date=contents.first_date or as_of.isoformat(),
        last_date=contents.last_date or as_of.isoformat(),
        data_key=contents.parts[0]["key"] if single else "",
        columns=contents.columns,
        source=source,
        created_at=utcnow().isoformat(),
        quarantined_rows=contents.quarantined_rows,
        quarantine_key=contents.quarantine_keys[0] if len(contents.quarantine_keys) == 1 else None,
        parts=contents.parts,
        quarantine_keys=contents.quarantine_keys,
        stale_symbols=contents.stale_symbols,
        quality_flags=contents.quality_flags,
        quality_flag_count=contents.quality_flag_count,
        shards=shards,
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


# Shards.


def publish_shard(
    store: ObjectStore, contents: Contents, *, as_of: date, index: int, count: int, source: str
) -> ShardManifest:
    """Write one shard's manifest (its parts must be in the store already)."""
    shard = ShardManifest(
        as_of=as_of.isoformat(),
        index=index,
        count=count,
        source=source,
        created_at=utcnow().isoformat(),
        contents=contents,
    )
    put_json(store, shard.key, asdict(shard))
    return shard


def missing_shards(store: ObjectStore, as_of: date, count: int) -> list[int]:
    return [i for i in range(count) if not store.exists(shard_manifest_key(as_of, i, count))]


def read_shards(store: ObjectStore, as_of: date, count: int) -> list[ShardManifest]:
    """All ``count`` shard manifests of ``as_of``; fails naming the shards still missing."""
    missing = missing_shards(store, as_of, count)
    if missing:
        names = ", ".join(f"{i}-of-{count}" for i in missing)
        raise DataError(
            f"Shards {names} have not published for {as_of} yet; run them, then "
            f"`mlops data-prep --finalize --as-of {as_of}`."
        )
    out = []
    for i in range(count):
        payload = get_json(store, shard_manifest_key(as_of, i, count))
        payload["contents"] = Contents(**payload["contents"])
        out.append(ShardManifest(**payload))
    return out


# Reading.


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
    """A published dataset and its manifest, all parts in one frame sorted by date, symbol."""
    manifest = read_manifest(store, version)
    frames = []
    for part in manifest.part_list:
        frame = get_parquet(store, part["key"])
        if len(frame) != part["rows"]:
            raise DataError(
                f"Part {part['key']} of dataset {version} holds {len(frame)} rows but its "
                f"manifest says {part['rows']}."
            )
        frames.append(frame)
    if len(frames) == 1:
        frame = frames[0]
    else:
        frame = pd.concat(frames, ignore_index=True)
        frame = frame.sort_values(["date", "symbol"], kind="stable").reset_index(drop=True)
    if len(frame) != manifest.rows:
        raise DataError(
            f"Dataset {version} holds {len(frame)} rows but its manifest says {manifest.rows}."
        )
    return manifest, frame

