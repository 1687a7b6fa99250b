"""Writing immutable, versioned feature datasets to the object store.

The reader half (the manifest, ``latest_version``, ``load``) and the key layout are
contracts every stage shares: ``mlops.contracts.datasets`` and ``mlops.contracts.keys``.
A dataset is one or more Parquet *parts* and a *manifest* naming them, written last:

* ``datasets/features/<version>/manifest.json``, with ``version`` = ``<as_of>-<first 12
  hex of the dataset hash>``; the hash covers the parts' content hashes, the stale
  symbols and the skipped ones, so the same data gives the same version and republishing
  it changes nothing;
* its parts: ``datasets/features/<version>/data.parquet`` when there is one, else
  ``part-00000.parquet``, ``part-00001.parquet``, ... (at most ``PART_ROWS`` rows each,
  written symbol by symbol); a sharded dataset names the shards' parts instead;
* the quarantined rows with their reasons: ``quarantine/<as_of>/<version>-<first 12 hex
  of their content hash>.parquet``, written by every run, also one whose clean rows equal
  a dataset already published (its manifest names the first run's quarantine; the run's
  result names its own);
* the bad rows of a batch the quality gate refused whole (no dataset):
  ``quarantine/<as_of>/refused-<content hash>.parquet``, named in the error sentence.

Readers go through the manifest (``contracts.datasets.load`` reads every part it names,
checks the row counts and sorts the rows by date, then symbol) and the ``datasets`` table
indexes the manifests for lookup by date. Files that no manifest names are invisible.

Shards (Kubernetes Indexed Job, ``DATA_PREP_SHARDS`` > 1): each shard writes its parts to
``datasets/features/shards/<as_of>/<index>-of-<count>/<content hash>.parquet``, then its
*shard manifest* ``.../<index>-of-<count>/manifest.json``. Once all ``count`` shard
manifests of an as-of day exist, ``read_shards`` + ``publish_contents`` combine them into
one dataset manifest as above (naming the shards' parts): readers see one version
whatever the shard count. The shard that completes the set finalizes on its own;
``mlops data-prep --finalize --as-of D`` does the same by hand. A shard rerun replaces its
shard manifest; the dataset is the union of the newest manifest of every shard.

Publishing is exactly once under concurrency. Two shards finishing together both see
the set complete and both finalize (check-then-act: each checks the others' manifests
after writing its own); two runs of the same day may publish the same version side by
side. The ``datasets`` row is the claim: inside one transaction the row is inserted
(``ON CONFLICT DO NOTHING``), and only the process whose insert counted writes the
manifest, then commits; a concurrent publisher's insert waits for that commit, finds the
row and reads the manifest instead (``new`` is False for it). A manifest write that
fails rolls the row back, so no row ever names a missing manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.core.util.hashing import combine_hash_arrays
from sqlalchemy import Engine

from mlops.contracts import keys
from mlops.contracts.columns import OHLCV
from mlops.contracts.datasets import Manifest, read_manifest
from mlops.data_prep.background import WriteBehind
from mlops.db.schema import datasets
from mlops.db.upsert import insert_new
from mlops.errors import DataError
from mlops.runs import utcnow
from mlops.store import ObjectStore, get_json, put_json

log = logging.getLogger(__name__)

PART_ROWS = 250_000  # rows per part file (a part is read whole on upload)
GROUP_ROWS = 50_000  # rows per Parquet row group while writing
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
    skipped_symbols: dict[str, str] = field(default_factory=dict)  # symbol: why
    adjusted_symbols: list[str] = field(default_factory=list)
    bars: str = OHLCV  # what the bars hold: ohlcv or close_only (DATA_BARS)

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
            skipped_symbols=dict(
                sorted((k, v) for c in items for k, v in c.skipped_symbols.items())
            ),
            adjusted_symbols=sorted({s for c in items for s in c.adjusted_symbols}),
            bars=items[0].bars if items else OHLCV,
        )

    def dataset_hash(self) -> str:
        return dataset_hash(
            [p["content_hash"] for p in self.parts], self.stale_symbols, self.skipped_symbols
        )


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
        return keys.shard_manifest_key(date.fromisoformat(self.as_of), self.index, self.count)


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
    """Streams feature rows, symbol by symbol, into local Parquet parts of bounded size.

    Rows are written in row groups of about ``group_rows`` as they come, encoded and
    written by a thread while the caller goes on (memory: up to three row groups plus
    the frame being added), in the order they were added; a part is closed
    once it holds ``max_rows``. A frame may hold several pieces (``runs``: one symbol's
    rows each) that count as added one at a time: a part ends between two pieces, never
    inside one, so the parts do not depend on how many symbols a frame holds. Each part's
    content hash is computed on the way (row hashes, so it equals ``content_hash`` of the
    whole part). Nothing reaches the store until the parts are published: a batch refused
    by the quality gate leaves no dataset there (only its bad rows, see ``put_refused``).
    """

    def __init__(
        self,
        folder: Path,
        max_rows: int = PART_ROWS,
        name: str = "part",
        group_rows: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.max_rows = max_rows
        self.name = name
        self.group_rows = GROUP_ROWS if group_rows is None else group_rows
        self.parts: list[StagedPart] = []
        self._pending: list[_Rows] = []
        self._pending_rows = 0
        self._writer: Any = None
        self._schema: Any = None
        self._path: Path | None = None
        self._digest: Any = None
        self._rows = 0
        self._symbols: set[str] = set()
        self._first: pd.Timestamp | None = None
        self._last: pd.Timestamp | None = None
        self._columns: list[str] = []
        self._columns_schema: Any = None  # of the ``Columns`` added, from their first rows
        self._writes = WriteBehind()  # Parquet encoding and writing, in a thread

    def add(self, frame: pd.DataFrame | Columns, runs: Iterable[int] | None = None) -> None:
        """Add ``frame``'s rows; ``runs``: the lengths of its pieces (default: one piece)."""
        if len(frame) == 0:
            return
        if isinstance(frame, Columns):
            if self._columns_schema is None:
                self._columns_schema = frame.schema()
            rows = _Rows.of_columns(frame, self._columns_schema)
        else:
            rows = _Rows.of(frame)
        taken = 0  # rows of ``frame`` before this are pending (or written)
        end = 0
        for length in [len(frame)] if runs is None else runs:
            if length == 0:
                continue
            held = self._rows + self._pending_rows
            if held and held + length > self.max_rows:
                self._take(rows, taken, end)
                taken = end
                self._close_part()
            end += length
            self._pending_rows += length
            if self._pending_rows >= self.group_rows:
                self._take(rows, taken, end)
                taken = end
                self._write_group()
        self._take(rows, taken, end)

    def _take(self, rows: _Rows, start: int, end: int) -> None:
        if end > start:
            self._pending.append(rows.slice(start, end))

    def _write_group(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, [], 0
        tables = [p.table for p in pending]
        for i, other in enumerate(tables[1:], start=1):  # one schema, as pd.concat would
            if not other.schema.equals(tables[0].schema, check_metadata=False):
                tables[i] = other.cast(tables[0].schema)
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        if self._writer is None:
            self._path = self.folder / f"{self.name}-{len(self.parts):05d}.parquet"
            self._schema = table.schema
            options = parquet_options(table.schema)
            self._writer = pq.ParquetWriter(self._path, self._schema, **options)
            self._digest = hashlib.sha256(",".join(table.schema.names).encode())
            self._columns = list(table.schema.names)
        elif not table.schema.equals(self._schema, check_metadata=False):
            table = table.cast(self._schema)
        else:
            table = table.replace_schema_metadata(self._schema.metadata)
        self._writes.submit(self._writer.write_table, table)
        for part in pending:
            self._digest.update(part.hashes.tobytes())
            self._rows += part.rows
            self._symbols.update(part.symbols)
            if part.first is not None and part.last is not None:
                self._first = part.first if self._first is None else min(self._first, part.first)
                self._last = part.last if self._last is None else max(self._last, part.last)

    def _close_part(self) -> None:
        self._write_group()
        if self._writer is None:
            return
        self._writes.wait()
        self._writer.close()
        assert self._path is not None
        self.parts.append(
            StagedPart(
                path=self._path,
                rows=self._rows,
                content_hash=self._digest.hexdigest(),
                symbols=sorted(self._symbols),
                first_date=self._first.date().isoformat() if self._first is not None else "",
                last_date=self._last.date().isoformat() if self._last is not None else "",
                columns=self._columns,
            )
        )
        self._writer = self._schema = self._path = self._digest = None
        self._rows, self._symbols, self._first, self._last = 0, set(), None, None

    def close(self) -> list[StagedPart]:
        try:
            self._close_part()
        finally:
            self._writes.close()
        return self.parts


def parquet_options(schema: Any) -> dict[str, Any]:
    """How parts are written: dictionary encoding for the columns that repeat (symbol,
    dates, reasons), not for the prices and features, whose values rarely repeat (trying
    it costs three times the writing time and makes no smaller file)."""
    import pyarrow as pa

    return {"use_dictionary": [f.name for f in schema if not pa.types.is_floating(f.type)]}


@dataclass(frozen=True)
class Columns:
    """Rows as named columns, in the dataset's order: numpy arrays, and the symbol as a
    ``pd.Categorical`` (codes into the names). What the stage hands ``PartWriter``
    without building a DataFrame; the rows, their hashes and their Parquet schema are
    those of the DataFrame of these columns with the symbol as pandas' ``string``."""

    arrays: dict[str, Any]

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def frame(self, rows: slice | None = None) -> pd.DataFrame:
        """These columns as a DataFrame (the symbol as ``string``), or some of their rows."""
        cut = rows or slice(None)
        return pd.DataFrame(
            {
                name: pd.array(np.asarray(values[cut], dtype=object), dtype="string")
                if isinstance(values, pd.Categorical)
                else values[cut]
                for name, values in self.arrays.items()
            }
        )

    def schema(self) -> Any:
        """The Arrow schema ``pa.Table.from_pandas`` gives their DataFrame (pandas metadata
        included, so readers get the same dtypes back)."""
        import pyarrow as pa

        return pa.Schema.from_pandas(self.frame(slice(0, 1)), preserve_index=False)


@dataclass(frozen=True)
class _Rows:
    """Rows on their way into a part: as Arrow, with their row hashes and what they hold."""

    table: Any  # pyarrow.Table
    hashes: Any  # numpy uint64, one per row
    symbol_codes: Any  # numpy int64 codes into ``names`` (-1: none)
    names: Any  # the symbols' names
    dates: Any  # numpy datetime64[ns] or None

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Rows:
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        hashes = row_hashes(frame)
        codes, names = (None, None)
        if "symbol" in frame.columns:
            codes, names = pd.factorize(frame["symbol"])
        dates = frame["date"].to_numpy(dtype="datetime64[ns]") if "date" in frame.columns else None
        return cls(table, hashes, codes, names, dates)

    @classmethod
    def of_columns(cls, columns: Columns, schema: Any) -> _Rows:
        import pyarrow as pa

        arrays, codes, names = [], None, None
        for values in columns.arrays.values():
            if isinstance(values, pd.Categorical):
                codes, names = values.codes.astype("int64"), np.asarray(values.categories, object)
                indices = pa.array(values.codes, mask=values.codes < 0)
                dictionary = pa.array(names, type=pa.string())
                arrays.append(pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string()))
            else:
                arrays.append(_arrow(values))
        table = pa.Table.from_arrays(arrays, schema=schema)
        hashes = _row_hashes(list(columns.arrays.values()))
        date = columns.arrays.get("date")
        dates = None if date is None else np.asarray(date, dtype="datetime64[ns]")
        return cls(table, hashes, codes, names, dates)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def slice(self, start: int, end: int) -> _Rows:
        if start == 0 and end == self.rows:
            return self
        cut = slice(start, end)
        return _Rows(
            self.table.slice(start, end - start),
            self.hashes[cut],
            None if self.symbol_codes is None else self.symbol_codes[cut],
            self.names,
            None if self.dates is None else self.dates[cut],
        )

    @property
    def symbols(self) -> list[str]:
        if self.symbol_codes is None:
            return []
        codes = np.unique(self.symbol_codes)
        return [str(self.names[c]) for c in codes[codes >= 0]]

    @property
    def first(self) -> pd.Timestamp | None:
        known = self._known_dates()
        return None if known is None else pd.Timestamp(known.min())

    @property
    def last(self) -> pd.Timestamp | None:
        known = self._known_dates()
        return None if known is None else pd.Timestamp(known.max())

    def _known_dates(self) -> Any:
        if self.dates is None:
            return None
        known = self.dates[~np.isnat(self.dates)]
        return known if known.size else None


HASH_ROWS = 16_384  # rows hashed at a time: every column's share stays in the cache


def _row_hashes(columns: list[Any]) -> np.ndarray:
    """``row_hashes`` of the DataFrame of these columns, a cache-sized slice at a time
    (each row's hash depends on that row alone)."""
    n = len(columns[0])
    out = np.empty(n, dtype="uint64")
    for lo in range(0, n, HASH_ROWS):
        cut = slice(lo, min(n, lo + HASH_ROWS))
        out[cut] = combine_hash_arrays((pd.util.hash_array(c[cut]) for c in columns), len(columns))
    return out


def _arrow(values: np.ndarray) -> Any:
    """A numpy column as Arrow, missing values (NaN, NaT) as nulls, as from a DataFrame."""
    import pyarrow as pa

    if values.dtype.kind == "f":
        return pa.array(values, mask=np.isnan(values))
    if values.dtype.kind == "M":
        return pa.array(values, mask=np.isnat(values))
    return pa.array(values, from_pandas=True)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """``pd.util.hash_pandas_object(frame, index=False)``, as a numpy array."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _describe(staged: list[StagedPart], part_keys: list[str]) -> Contents:
    firsts = [p.first_date for p in staged if p.first_date]
    lasts = [p.last_date for p in staged if p.last_date]
    return Contents(
        parts=[
            {"key": key, "rows": part.rows, "content_hash": part.content_hash}
            for part, key in zip(staged, part_keys, strict=True)
        ],
        rows=sum(p.rows for p in staged),
        symbols=sorted({s for p in staged for s in p.symbols}),
        first_date=min(firsts) if firsts else None,
        last_date=max(lasts) if lasts else None,
        columns=staged[0].columns if staged else [],
    )


def _put_files(store: ObjectStore, staged: list[StagedPart], part_keys: list[str]) -> None:
    for part, key in zip(staged, part_keys, strict=True):
        if not store.exists(key):  # content-addressed keys: same key, same bytes
            store.put_file(key, part.path, "application/vnd.apache.parquet")


def dataset_hash(
    part_hashes: list[str], stale_symbols: list[str], skipped_symbols: Iterable[str] = ()
) -> str:
    """The hash a dataset version is named after: its parts' contents, its stale symbols
    and the names of its skipped ones (left out when none: older versions keep their hash)."""
    payload: dict[str, Any] = {"parts": list(part_hashes), "stale_symbols": sorted(stale_symbols)}
    skipped = sorted(skipped_symbols)
    if skipped:
        payload["skipped_symbols"] = skipped
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def publish_staged(
    store: ObjectStore,
    engine: Engine,
    staged: list[StagedPart],
    quarantine: list[StagedPart],
    *,
    as_of: date,
    source: str,
    quality: Contents | None = None,
) -> tuple[Manifest, bool, list[str]]:
    """Publish locally staged parts as one dataset: quarantine, parts, then the manifest.

    Parts go to ``datasets/features/<version>/data.parquet`` (one part) or
    ``.../part-00000.parquet``, ``.../part-00001.parquet`` ...; the quarantine to
    ``quarantine/<as_of>/<version>-<hash>.parquet``. ``quality`` carries the quarantine
    count, the stale, skipped and adjusted symbols and the quality flags.

    Returns the manifest, whether it is new, and the keys of this run's quarantine files:
    they are written even when the same dataset was published before (whose manifest
    names the quarantine of the run that published it).
    """
    quality = quality or Contents()
    if not staged or sum(p.rows for p in staged) == 0:
        raise DataError(f"No rows to publish for {as_of}.")
    digest = dataset_hash(
        [p.content_hash for p in staged], quality.stale_symbols, quality.skipped_symbols
    )
    version = f"{as_of.isoformat()}-{digest[:12]}"
    q_keys = keys.quarantine_keys(as_of, version, [p.content_hash for p in quarantine])
    _put_files(store, quarantine, q_keys)
    if store.exists(keys.manifest_key(version)):  # the same data again: no part to write
        manifest = read_manifest(store, version)
        _claim(store, engine, manifest, write=False)
        return manifest, False, q_keys
    part_keys = keys.dataset_part_keys(version, len(staged))
    _put_files(store, staged, part_keys)
    contents = replace(_describe(staged, part_keys), **_quality_fields(quality, q_keys))
    manifest, new = publish_contents(store, engine, contents, as_of=as_of, source=source)
    return manifest, new, q_keys


def put_refused(store: ObjectStore, quarantine: list[StagedPart], *, as_of: date) -> list[str]:
    """Write the bad rows of a batch the quality gate refused; their keys."""
    refused_keys = [keys.refused_rows_key(as_of, p.content_hash) for p in quarantine]
    _put_files(store, quarantine, refused_keys)
    return refused_keys


def _quality_fields(quality: Contents, quarantine_keys: list[str]) -> dict[str, Any]:
    return {
        "quarantined_rows": quality.quarantined_rows,
        "quarantine_keys": quarantine_keys,
        "stale_symbols": sorted(quality.stale_symbols),
        "quality_flags": quality.quality_flags[:MAX_FLAGS],
        "quality_flag_count": quality.quality_flag_count,
        "skipped_symbols": dict(sorted(quality.skipped_symbols.items())),
        "adjusted_symbols": sorted(quality.adjusted_symbols),
        "bars": quality.bars,
    }


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
        writer = PartWriter(Path(folder), max_rows=len(frame))
        writer.add(frame)
        q_writer = PartWriter(Path(folder), max_rows=PART_ROWS, name="quarantine")
        if quarantine is not None:
            q_writer.add(quarantine)
        quality = Contents(quarantined_rows=0 if quarantine is None else len(quarantine))
        manifest, new, _ = publish_staged(
            store,
            engine,
            writer.close(),
            q_writer.close(),
            as_of=as_of,
            source=source,
            quality=quality,
        )
        return manifest, new


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
    key = keys.manifest_key(version)
    if store.exists(key):
        manifest = read_manifest(store, version)
        _claim(store, engine, manifest, write=False)
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
        skipped_symbols=contents.skipped_symbols,
        adjusted_symbols=contents.adjusted_symbols,
        bars=contents.bars,
    )
    if _claim(store, engine, manifest, write=True):
        return manifest, True
    log.info("Dataset %s was published by a concurrent run; using it.", version)
    return read_manifest(store, version), False


def _claim(store: ObjectStore, engine: Engine, manifest: Manifest, *, write: bool) -> bool:
    """Index the manifest; write it (``write``) only when this process's row counted.

    One transaction: the row, then the manifest, then the commit. A concurrent claim of
    the same version waits on the row until this one commits, then counts nothing.
    """
    with engine.begin() as conn:
        claimed = insert_new(conn, datasets, [_row(manifest)], keys=["version"])
        if claimed and write:
            put_json(store, manifest.key, asdict(manifest))
    return bool(claimed)


def _row(manifest: Manifest) -> dict[str, Any]:
    return {
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


# Shards.


def publish_shard(
    store: ObjectStore,
    staged: list[StagedPart],
    quarantine: list[StagedPart],
    *,
    as_of: date,
    index: int,
    count: int,
    source: str,
    quality: Contents | None = None,
) -> ShardManifest:
    """Write one shard's parts and quarantine, then its shard manifest (last)."""
    quality = quality or Contents()
    part_keys = [keys.shard_part_key(as_of, index, count, p.content_hash) for p in staged]
    _put_files(store, staged, part_keys)
    q_keys = [keys.shard_quarantine_key(as_of, index, count, p.content_hash) for p in quarantine]
    _put_files(store, quarantine, q_keys)
    shard = ShardManifest(
        as_of=as_of.isoformat(),
        index=index,
        count=count,
        source=source,
        created_at=utcnow().isoformat(),
        contents=replace(_describe(staged, part_keys), **_quality_fields(quality, q_keys)),
    )
    put_json(store, shard.key, asdict(shard))
    return shard


def missing_shards(store: ObjectStore, as_of: date, count: int) -> list[int]:
    return [i for i in range(count) if not store.exists(keys.shard_manifest_key(as_of, i, count))]


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
        payload = get_json(store, keys.shard_manifest_key(as_of, i, count))
        payload["contents"] = Contents(**payload["contents"])
        out.append(ShardManifest(**payload))
    return out
