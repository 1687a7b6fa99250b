"""Where daily bars come from: the bundled sample, the user's files, or Alpha Vantage."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import pandas as pd

from mlops.data_prep.bars import canonicalize
from mlops.errors import DataError
from mlops.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_FILE = "daily_ohlcv_5_symbols_2015_2017.csv"
FILE_SUFFIXES = {".csv", ".parquet", ".pq"}


def sample_path() -> Path:
    """Path of the bundled sample (real Quandl WIKI prices, see PROVENANCE.md beside it)."""
    return Path(str(resources.files("mlops") / "resources" / "sample" / SAMPLE_FILE))


def load_sample() -> pd.DataFrame:
    """The bundled sample in the canonical layout."""
    return read_bar_file(sample_path())


def read_bar_file(path: Path, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """Read one CSV or Parquet file of bars, long layout or one symbol per file."""
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        elif path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{path} is neither a .csv nor a .parquet file.")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"Data file {path} does not exist.") from None
    except Exception as exc:  # pandas and pyarrow raise many kinds for a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"Data file {path} cannot be read: {first}.") from None
    if frame.empty:
        raise DataError(f"Data file {path} holds no rows.")
    symbol_col = (mapping or {}).get("symbol")
    has_symbol = (symbol_col in frame.columns) if symbol_col else any(
        str(c).strip().lower() in {"symbol", "stock", "ticker"} for c in frame.columns
    )
    if not has_symbol:
        frame = frame.assign(symbol=path.stem.split("_")[0].upper())
        if mapping and "symbol" in mapping:
            mapping = {k: v for k, v in mapping.items() if k != "symbol"}
    return canonicalize(frame, source=str(path), mapping=mapping)


def load_files(location: str, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a file, or every CSV and Parquet file of a folder."""
    path = Path(location)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES)
        if not files:
            raise DataError(f"Folder {path} holds no .csv or .parquet files.")
    elif path.exists():
        files = [path]
    else:
        raise DataError(f"DATA_FILES points at {path}, which does not exist.")
    return pd.concat([read_bar_file(p, mapping) for p in files], ignore_index=True)


def load_bars(settings: Settings) -> pd.DataFrame:
    """Bars from the configured source, limited to ``SYMBOLS`` when set."""
    if settings.data_source == "sample":
        bars = load_sample()
    elif settings.data_source == "files":
        assert settings.data_files is not None
        bars = load_files(settings.data_files, settings.column_map)
    else:
        from mlops.data_prep.alphavantage import load_alphavantage

        bars = load_alphavantage(settings)
    wanted = settings.symbol_list
    if wanted:
        unknown = sorted(set(wanted) - set(bars["symbol"].dropna().unique()))
        if unknown:
            log.warning("No bars for symbols %s; they are skipped.", ", ".join(unknown))
        bars = bars[bars["symbol"].isin(wanted)]
    return bars.reset_index(drop=True)
