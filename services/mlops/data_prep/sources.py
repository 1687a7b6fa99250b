"""Where daily bars come from: the bundled sample, the user's files, or Alpha Vantage.

``iter_bars`` hands the stage one symbol's whole history at a time, so memory is bounded
by the largest symbol rather than by the universe:

* one file per symbol (no symbol column; the symbol is the file name up to the first
  ``_``, so ``AAPL.csv`` and ``AAPL_2016.parquet`` both hold AAPL): only the files of the
  wanted symbols are read, one symbol at a time;
* long layout (a symbol column, many symbols per file): the file is read in chunks of
  ``CHUNK_ROWS`` rows, rows of other shards are dropped at once, and the rest is regrouped
  by symbol through a few temporary Parquet "bucket" files (``BUCKET_ROWS`` rows each on
  average) when it is too large to regroup in memory;
* wide layout (``AAPL.Open, ..., MSFT.Open, ...``: a row per day, each symbol's columns
  side by side, the symbol from their prefix, see ``wide``): read in chunks like a long
  file, each chunk turned into the long layout (only this shard's symbols);
* Alpha Vantage: one request per symbol (see ``alphavantage.py``).

``DATA_COLUMN_MAP`` (``date=Date,symbol=Ticker,...``, or per file, see ``columns``) maps
the canonical names to the file's own; common spellings (Date, Ticker, Stock, ...) are
recognised without it, and still are for the columns a map does not name.

An adjusted close (``adjusted_close``: ``Adj Close``, ``AdjClose``, ``X.Adjusted`` or a
mapped column) is passed on for the quality gate to adjust the prices by, as
``DATA_ADJUST_PRICES`` says (``adjusts``); otherwise it is dropped here.

Close-only bars (``DATA_BARS=close_only``, ``close_only`` below): files are read for the
date, symbol, close and adjusted close only, and every source's frames come without an
open, high, low or volume.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.data_prep.background import read_ahead
from mlops.data_prep.bars import (
    ADJUSTED_CLOSE,
    BAR_COLUMNS,
    canonicalize,
    closes_only,
    column_sources,
    wanted_columns,
)
from mlops.data_prep.columns import ColumnMaps
from mlops.data_prep.shards import Shard, stable_hash
from mlops.data_prep.wide import WideLayout, unpivot
from mlops.data_prep.wide import layout as wide_layout
from mlops.errors import DataError, MlopsError
from mlops.settings import Settings
from mlops.store import ObjectStore

if TYPE_CHECKING:
    from mlops.data_prep.fetch import FetchReport

log = logging.getLogger(__name__)

SAMPLE_FILE = "daily_ohlcv_5_symbols_2015_2017.csv"
FILE_SUFFIXES = {".csv", ".parquet", ".pq"}
SYMBOL_ALIASES = {"symbol", "stock", "ticker"}
CHUNK_ROWS = 250_000  # rows read at a time from a long-layout file
BUCKET_ROWS = 500_000  # rows regrouped at a time when long-layout files are split by symbol
CSV_BYTES_PER_ROW = 40  # a low guess, so a CSV is rather split into too many buckets


def sample_path() -> Path:
    """Path of the bundled sample (real Quandl WIKI prices, see PROVENANCE.md beside it)."""
    return Path(str(resources.files("mlops") / "resources" / "sample" / SAMPLE_FILE))


def load_sample(*, adjusted: bool = False) -> pd.DataFrame:
    """The bundled sample in the canonical layout (with its ``adjusted_close`` if asked)."""
    frame = read_bar_file(sample_path())
    return frame if adjusted else frame.drop(columns=ADJUSTED_CLOSE)


def adjusts(settings: Settings) -> bool:
    """Whether the configured source's adjusted closes are used (``DATA_ADJUST_PRICES``)."""
    if settings.data_adjust_prices == "auto":
        return settings.data_source == "files"
    return settings.data_adjust_prices == "always"


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq"}


def _unreadable(path: Path, exc: BaseException) -> DataError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return DataError(f"Data file {path} cannot be read: {first}.")


def _file_symbol(path: Path) -> str:
    return path.stem.split("_")[0].strip().upper()


def read_bar_file(
    path: Path, mapping: dict[str, str] | None = None, *, close_only: bool = False
) -> pd.DataFrame:
    """Read one CSV or Parquet file of bars: long or wide layout, or one symbol per file."""
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        elif _is_parquet(path):
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{path} is neither a .csv nor a .parquet file.")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"Data file {path} does not exist.") from None
    except Exception as exc:  # pandas and pyarrow raise many kinds for a malformed file
        raise _unreadable(path, exc) from None
    if frame.empty:
        raise DataError(f"Data file {path} holds no rows.")
    frame = _index_as_columns(frame)
    wide = _wide(path, list(frame.columns), mapping, close_only)
    if wide is not None:
        return canonicalize(unpivot(frame, wide), source=str(path), close_only=close_only)
    if not _has_symbol_column(list(frame.columns), mapping):
        frame = frame.assign(symbol=_file_symbol(path))
        if mapping and "symbol" in mapping:
            mapping = {k: v for k, v in mapping.items() if k != "symbol"}
    return canonicalize(frame, source=str(path), mapping=mapping, close_only=close_only)


def _index_as_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A named index (pandas writes a frame's index into Parquet, e.g. its dates) as the
    column it was in the file."""
    if all(name is None for name in frame.index.names):
        return frame
    return frame.reset_index()


def _wide(
    path: Path, columns: list, mapping: dict[str, str] | None, close_only: bool
) -> WideLayout | None:
    """The file's wide layout (``wide.layout``), None for a long file or one of one symbol."""
    if _has_symbol_column(columns, mapping):
        return None
    return wide_layout(columns, mapping, str(path), close_only=close_only)


def _has_symbol_column(columns: list, mapping: dict[str, str] | None) -> bool:
    """Long layout (a symbol column: the mapped one or a built-in spelling) or not."""
    symbol_col = (mapping or {}).get("symbol", "").strip().lower()
    names = {str(c).strip().lower() for c in columns}
    return (bool(symbol_col) and symbol_col in names) or bool(names & SYMBOL_ALIASES)


def _file_columns(path: Path) -> list[str]:
    """Column names of a file, read from its header or Parquet schema only."""
    try:
        if path.suffix.lower() == ".csv":
            return list(pd.read_csv(path, nrows=0).columns)
        if _is_parquet(path):
            return list(_parquet_schema(path).names)
    except FileNotFoundError:
        raise DataError(f"Data file {path} does not exist.") from None
    except Exception as exc:
        raise _unreadable(path, exc) from None
    raise DataError(f"{path} is neither a .csv nor a .parquet file.")


def _parquet_schema(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_schema(path)


def _needed_columns(
    columns: list[str], mapping: dict[str, str] | None, close_only: bool
) -> list[str] | None:
    """The file's columns that become canonical ones (``None``: read all, to report gaps)."""
    try:
        chosen = set(column_sources(columns, mapping, "the file", close_only=close_only).values())
    except Exception:
        return None
    return [c for c in columns if c in chosen] or None


def list_files(location: str) -> list[Path]:
    """A file, or every CSV and Parquet file of a folder, sorted by name."""
    path = Path(location)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES)
        if not files:
            raise DataError(f"Folder {path} holds no .csv or .parquet files.")
        return files
    if path.exists():
        return [path]
    raise DataError(f"DATA_FILES points at {path}, which does not exist.")


def _as_maps(mapping: ColumnMaps | dict[str, str] | None) -> ColumnMaps:
    if isinstance(mapping, ColumnMaps):
        return mapping
    if not mapping:
        return ColumnMaps()
    return ColumnMaps.parse(json.dumps(mapping))


def load_files(
    location: str,
    mapping: ColumnMaps | dict[str, str] | None = None,
    *,
    close_only: bool = False,
) -> pd.DataFrame:
    """Read a file, or every CSV and Parquet file of a folder, whole (small data only)."""
    maps = _as_maps(mapping)
    files = list_files(location)
    maps.check_files(files)
    frames = [read_bar_file(p, maps.for_file(p), close_only=close_only) for p in files]
    return pd.concat(frames, ignore_index=True)


def iter_file_chunks(
    path: Path,
    mapping: dict[str, str] | None = None,
    *,
    close_only: bool = False,
    owned: Callable[[object], bool] | None = None,
) -> Iterator[pd.DataFrame]:
    """A long- or wide-layout file in canonical chunks of at most ``CHUNK_ROWS`` rows (of
    the long layout: a wide file's chunks hold fewer of its rows); only the symbols
    ``owned`` of a wide file are turned into bars."""
    header = _file_columns(path)
    wide = _wide(path, header, mapping, close_only)
    # Parquet reads only these columns (all of a wide file's).
    columns = None if wide else _needed_columns(header, mapping, close_only)
    chunk_rows = CHUNK_ROWS if wide is None else max(1, CHUNK_ROWS // len(wide.symbols))

    def canonical(chunk: pd.DataFrame) -> pd.DataFrame:
        chunk = _index_as_columns(chunk)
        if wide is not None:
            chunk, theirs = unpivot(chunk, wide, owned), None
        else:
            theirs = mapping
        return canonicalize(chunk, source=str(path), mapping=theirs, close_only=close_only)

    rows = 0
    try:
        if path.suffix.lower() == ".csv":
            # All columns: with ``usecols`` pandas would accept ragged rows silently.
            with pd.read_csv(path, chunksize=chunk_rows) as reader:
                for chunk in reader:
                    rows += len(chunk)
                    yield canonical(chunk)
        else:
            import pyarrow.parquet as pq

            with pq.ParquetFile(path) as parquet:
                for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
                    rows += batch.num_rows
                    yield canonical(batch.to_pandas())
    except MlopsError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None
    if rows == 0:
        raise DataError(f"Data file {path} holds no rows.")


def _estimated_rows(path: Path) -> int:
    if _is_parquet(path):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:
            raise _unreadable(path, exc) from None
    return path.stat().st_size // CSV_BYTES_PER_ROW + 1


class _SymbolBuckets:
    """Rows regrouped by symbol, in memory or through temporary Parquet bucket files."""

    def __init__(self, count: int, shard_count: int, folder: Path, close_only: bool) -> None:
        self.count = max(1, count)
        self.shard_count = shard_count
        self.folder = folder
        self.schema = _bucket_schema(close_only)
        self.memory: list[pd.DataFrame] = []
        self.writers: dict[int, Any] = {}
        self._bucket_of: dict[str, int] = {}

    def _bucket(self, symbol: str) -> int:
        bucket = self._bucket_of.get(symbol)
        if bucket is None:
            # Divide out the shard part of the hash so one shard's symbols use every bucket.
            bucket = (stable_hash(symbol) // self.shard_count) % self.count
            self._bucket_of[symbol] = bucket
        return bucket

    def add(self, frame: pd.DataFrame) -> None:
        if self.count == 1:
            self.memory.append(frame)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if ADJUSTED_CLOSE not in frame.columns:  # one schema for every bucket file
            frame = frame.assign(**{ADJUSTED_CLOSE: float("nan")})
        buckets = {s: self._bucket(s) for s in frame["symbol"].dropna().unique()}
        ids = frame["symbol"].map(buckets).fillna(0).astype("int64")
        for bucket, part in frame.groupby(ids.to_numpy(), sort=True):
            table = pa.Table.from_pandas(part, schema=self.schema, preserve_index=False)
            writer = self.writers.get(int(bucket))
            if writer is None:
                path = self.folder / f"bucket-{int(bucket):05d}.parquet"
                writer = pq.ParquetWriter(path, table.schema)
                self.writers[int(bucket)] = writer
            writer.write_table(table)

    def groups(self) -> Iterator[pd.DataFrame]:
        """Each symbol's rows (and the rows without a symbol) as one frame."""
        frames: Iterator[pd.DataFrame] | list[pd.DataFrame]
        if self.count == 1:
            frames = [pd.concat(self.memory, ignore_index=True)] if self.memory else []
            self.memory = []
        else:
            frames = self._bucket_frames()
        for frame in frames:
            for group in _by_symbol(frame):
                if ADJUSTED_CLOSE in group.columns and group[ADJUSTED_CLOSE].isna().all():
                    group = group.drop(columns=ADJUSTED_CLOSE)  # the bucket schema's, not its
                yield group

    def _bucket_frames(self) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        for writer in self.writers.values():
            writer.close()
        for bucket in sorted(self.writers):
            path = self.folder / f"bucket-{bucket:05d}.parquet"
            frame = pq.read_table(path).to_pandas()
            path.unlink()
            frame["symbol"] = frame["symbol"].astype("string")
            yield frame


def _bucket_schema(close_only: bool) -> Any:
    import pyarrow as pa

    fields = [pa.field("date", pa.timestamp("ns")), pa.field("symbol", pa.string())]
    fields += [pa.field(c, pa.float64()) for c in wanted_columns(close_only)[2:]]
    return pa.schema(fields)


def _by_symbol(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for _, group in frame.groupby("symbol", sort=True, dropna=False):
        yield group.reset_index(drop=True)


def _owned_rows(frame: pd.DataFrame, owned: Callable[[object], bool]) -> pd.DataFrame:
    symbols = frame["symbol"]
    keep = [s for s in symbols.dropna().unique() if owned(s)]
    mask = symbols.isin(keep).fillna(False).to_numpy(dtype=bool)
    if owned(None):
        mask |= symbols.isna().to_numpy(dtype=bool)
    return frame[mask] if not mask.all() else frame


def _read_symbol(paths: list[Path], maps: ColumnMaps, close_only: bool) -> pd.DataFrame:
    parts = [read_bar_file(p, maps.for_file(p), close_only=close_only) for p in paths]
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _symbol_frames(
    symbols: list[str],
    files: dict[str, list[Path]],
    maps: ColumnMaps,
    batch_rows: int,
    close_only: bool,
) -> Iterator[pd.DataFrame]:
    """The frames of these symbols' files (one symbol per frame, or batched through Arrow
    where they qualify: read ahead in a thread, see ``background``)."""
    if batch_rows <= 0:
        for symbol in symbols:
            yield _read_symbol(files[symbol], maps, close_only)
        return

    def read(symbol: str) -> list[Any]:
        return [
            _arrow_piece(path, symbol, maps.for_file(path), close_only) for path in files[symbol]
        ]

    pieces = _ArrowPieces(close_only)
    for symbol, tables in zip(symbols, read_ahead(read, symbols), strict=True):
        if not pieces.add(tables):
            yield from pieces.flush()
            yield _read_symbol(files[symbol], maps, close_only)
        elif pieces.rows >= batch_rows:
            yield from pieces.flush()
    yield from pieces.flush()


class _ArrowPieces:
    """Per-symbol Parquet files read with Arrow, several symbols made canonical at once.

    A file qualifies when its date column is a date or timestamp and its prices and
    volume are numbers (so ``canonicalize`` does the same to every row, whichever file it
    comes from, and a batch gives the frames ``read_bar_file`` would, back to back); all
    files of a batch, and of a symbol, have the same column types. ``add`` returns False
    for a symbol that does not qualify (or whose types differ from the batch's): the
    caller flushes the batch and reads that symbol the usual way.
    """

    def __init__(self, close_only: bool) -> None:
        self.tables: list[Any] = []
        self.rows = 0
        self.close_only = close_only

    def add(self, tables: list[Any]) -> bool:
        """Take one symbol's files (``_arrow_piece`` of each); False when one is None."""
        schema = tables[0].schema if tables[0] is not None else None
        if schema is None or any(t is None or not t.schema.equals(schema) for t in tables):
            return False
        if self.tables and not schema.equals(self.tables[0].schema):
            return False
        self.tables.extend(tables)
        self.rows += sum(t.num_rows for t in tables)
        return True

    def flush(self) -> Iterator[pd.DataFrame]:
        if not self.tables:
            return
        import pyarrow as pa

        table = pa.concat_tables(self.tables)
        self.tables, self.rows = [], 0
        yield canonicalize(table.to_pandas(), source="Parquet files", close_only=self.close_only)


def _arrow_piece(path: Path, symbol: str, mapping: dict[str, str], close_only: bool) -> Any:
    """One symbol's Parquet file as an Arrow table of canonical columns, or None when it
    does not qualify (see ``_ArrowPieces``; ``read_bar_file`` then reads it, or says why not)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not _is_parquet(path):
        return None
    try:
        parquet = pq.ParquetFile(path)
        chosen = _arrow_columns(parquet, path, mapping, close_only)
        if chosen is None:
            return None
        table = parquet.read(columns=list(chosen.values()), use_threads=False)
    except Exception:  # read_bar_file tells what is wrong with the file
        return None
    table = table.rename_columns(list(chosen)).replace_schema_metadata(None)
    indices = pa.array(np.zeros(len(table), dtype="int32"))
    symbols = pa.DictionaryArray.from_arrays(indices, pa.array([symbol], pa.string()))
    return table.append_column("symbol", symbols)  # a categorical for pandas: made once


def _arrow_columns(
    parquet: Any, path: Path, mapping: dict[str, str], close_only: bool
) -> dict[str, str] | None:
    """The file's column for each canonical one but the symbol (the file's name), when they
    are plain: a date or timestamp, numbers; None otherwise."""
    import pyarrow as pa

    schema = parquet.schema_arrow
    pandas_index = (schema.pandas_metadata or {}).get("index_columns", [])
    names = [n for n in schema.names if n not in pandas_index]  # pandas reads those as index
    if parquet.metadata.num_rows == 0 or len(set(names)) < len(names):
        return None
    theirs = {k: v for k, v in mapping.items() if k != "symbol"}
    found = column_sources([*names, "symbol"], theirs, str(path), close_only=close_only)
    chosen = {k: str(v) for k, v in found.items()}
    del chosen["symbol"]
    types = {ours: schema.field(column).type for ours, column in chosen.items()}
    if not (pa.types.is_timestamp(types["date"]) or pa.types.is_date(types["date"])):
        return None
    numbers = (
        pa.types.is_integer(t) or pa.types.is_floating(t) for c, t in types.items() if c != "date"
    )
    return chosen if all(numbers) else None


def iter_file_bars(
    location: str,
    mapping: ColumnMaps | dict[str, str] | None = None,
    *,
    owned: Callable[[object], bool] = lambda _symbol: True,
    shard_count: int = 1,
    batch_rows: int = 0,
    close_only: bool = False,
) -> Iterator[pd.DataFrame]:
    """Bars of the files at ``location``, one symbol per frame, only symbols ``owned``.

    With ``batch_rows``, the Parquet files of consecutive symbols (one file per symbol)
    whose columns have the same types are read with Arrow and come as one frame of about
    that many rows, in the order of their symbols (see ``_ArrowPieces``).
    """
    maps = _as_maps(mapping)
    files = list_files(location)
    maps.check_files(files)
    per_symbol: dict[str, list[Path]] = {}
    long_files: dict[Path, int] = {}  # several symbols each: how many bars a row holds
    for path in files:
        header, theirs = _file_columns(path), maps.for_file(path)
        wide = _wide(path, header, theirs, close_only)
        if wide is not None:
            long_files[path] = len(wide.symbols)
        elif _has_symbol_column(header, theirs):
            long_files[path] = 1
        else:
            per_symbol.setdefault(_file_symbol(path), []).append(path)

    with tempfile.TemporaryDirectory(prefix="mlops-buckets-") as folder:
        buckets: _SymbolBuckets | None = None
        seen: set[str] = set()
        if long_files:
            estimate = sum(_estimated_rows(p) * n for p, n in long_files.items()) / shard_count
            count = math.ceil(estimate / BUCKET_ROWS)
            buckets = _SymbolBuckets(count, shard_count, Path(folder), close_only)
            for path in long_files:
                theirs = maps.for_file(path)
                for chunk in iter_file_chunks(path, theirs, close_only=close_only, owned=owned):
                    chunk = _owned_rows(chunk, owned)
                    if not chunk.empty:
                        buckets.add(chunk)
                        seen.update(chunk["symbol"].dropna().unique())
        symbols = [s for s in sorted(per_symbol) if owned(s)]
        if buckets is not None:
            for symbol in (s for s in symbols if s in seen):  # in a long file too: merged
                buckets.add(_read_symbol(per_symbol[symbol], maps, close_only))
            symbols = [s for s in symbols if s not in seen]
        yield from _symbol_frames(symbols, per_symbol, maps, batch_rows, close_only)
        if buckets is not None:
            yield from buckets.groups()


def iter_bars(
    settings: Settings,
    store: ObjectStore | None = None,
    *,
    shard: Shard | None = None,
    as_of: object = None,
    skipped: dict[str, str] | None = None,
    batch_rows: int = 0,
    fetch: FetchReport | None = None,
) -> Iterator[pd.DataFrame]:
    """Bars from the configured source, one symbol per frame, for this shard's symbols.

    With ``batch_rows``, consecutive symbols come together in frames of about that many
    rows when nothing downstream can tell (see ``batched``): the quality gate and the
    features then run on many symbols at once.

    Limited to ``SYMBOLS`` when set; rows without a symbol come as a frame of their own
    (on shard 0) so the quality gate can quarantine them. A frame has an
    ``adjusted_close`` column only when the source carries one and ``adjusts`` says so.
    ``skipped``, when given, receives the wanted symbols the source had no bars for, and
    why (once the frames are exhausted); ``fetch`` what Alpha Vantage was asked.
    """
    shard = shard or Shard()
    wanted = set(settings.symbol_list)
    report = skipped is None  # the caller reports what it collects
    skipped = {} if skipped is None else skipped
    adjust = adjusts(settings)
    close_only = settings.data_bars == "close_only"

    def owned(symbol: object) -> bool:
        if wanted and symbol not in wanted:
            return False
        return shard.owns(symbol)

    if settings.data_source == "sample":
        sample = load_sample(adjusted=adjust)
        frames: Iterable[pd.DataFrame] = _by_symbol(_owned_rows(sample, owned))
    elif settings.data_source == "files":
        assert settings.data_files is not None
        maps = ColumnMaps.parse(settings.data_column_map)  # checked before any file is read
        frames = iter_file_bars(
            settings.data_files,
            maps,
            owned=owned,
            shard_count=shard.count,
            batch_rows=batch_rows,
            close_only=close_only,
        )
    else:
        frames = _alphavantage_frames(settings, store, shard, as_of, skipped, fetch)

    found: set[str] = set()
    frames = _noted(frames, found if wanted else None, adjust, close_only)
    yield from batched(frames, batch_rows) if batch_rows > 0 else frames
    missing = sorted(s for s in wanted if shard.owns(s) and s not in found)
    for symbol in missing:
        skipped.setdefault(symbol, "the source has no bars for it")
    if missing and report:
        log.warning("No bars for symbols %s; they are skipped.", ", ".join(missing))


def _alphavantage_frames(
    settings: Settings,
    store: ObjectStore | None,
    shard: Shard,
    as_of: object,
    skipped: dict[str, str],
    fetch: FetchReport | None,
) -> Iterator[pd.DataFrame]:
    from mlops.data_prep.alphavantage import iter_alphavantage
    from mlops.store import open_store

    symbols = [s for s in settings.symbol_list if shard.owns(s)]
    return iter_alphavantage(
        settings, store or open_store(settings), symbols, until=as_of, unknown=skipped, report=fetch
    )


def _noted(
    frames: Iterable[pd.DataFrame], found: set[str] | None, adjust: bool, close_only: bool
) -> Iterator[pd.DataFrame]:
    """The frames, their symbols added to ``found`` (when given: to tell the wanted symbols
    that had no bars), their ``adjusted_close`` dropped unless ``adjust``, their open,
    high, low and volume with ``close_only`` (the sample's, Alpha Vantage's)."""
    for frame in frames:
        if found is not None:
            found.update(s for s in frame["symbol"].unique() if isinstance(s, str))
        if not adjust and ADJUSTED_CLOSE in frame.columns:
            frame = frame.drop(columns=ADJUSTED_CLOSE)
        if close_only:
            frame = closes_only(frame)
        yield frame


def batched(frames: Iterable[pd.DataFrame], batch_rows: int) -> Iterator[pd.DataFrame]:
    """Consecutive one-symbol frames combined into frames of about ``batch_rows`` rows.

    Only frames that change nothing downstream are combined: the same columns and types,
    each frame's symbol after the previous one's (the quality gate sorts a batch by
    symbol, so the rows keep their order), every row with a symbol. Others, and frames of
    ``batch_rows`` or more, pass on their own.
    """
    pending: list[pd.DataFrame] = []
    rows = 0
    last: str | None = None
    for frame in frames:
        symbol = _only_symbol(frame) if len(frame) < batch_rows else None
        if pending and (
            symbol is None
            or last is None
            or symbol <= last
            or rows + len(frame) > batch_rows
            or not frame.dtypes.equals(pending[0].dtypes)
        ):
            yield _combined(pending)
            pending, rows = [], 0
        if symbol is None:
            yield frame
            continue
        pending.append(frame)
        rows, last = rows + len(frame), symbol
    if pending:
        yield _combined(pending)


def _only_symbol(frame: pd.DataFrame) -> str | None:
    """The frame's one symbol, or None (no rows, no symbol, or several)."""
    values = frame["symbol"].to_numpy(dtype=object, na_value=None)
    if not len(values) or not isinstance(values[0], str) or not (values == values[0]).all():
        return None
    return values[0]


def _combined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def load_bars(settings: Settings, store: ObjectStore | None = None) -> pd.DataFrame:
    """All bars from the configured source, limited to ``SYMBOLS`` when set."""
    frames = list(iter_bars(settings, store))
    if not frames:
        return canonicalize(pd.DataFrame(columns=BAR_COLUMNS), source=settings.data_source)
    return pd.concat(frames, ignore_index=True)
