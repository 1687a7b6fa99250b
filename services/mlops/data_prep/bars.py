"""The canonical layout of daily bars that every source produces."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.contracts.columns import BAR_COLUMNS
from mlops.errors import DataError

PRICE_COLUMNS = ["open", "high", "low", "close"]

# Column names seen in common exports, mapped to the canonical ones (lower-cased keys).
KNOWN_ALIASES = {
    "date": "date",
    "timestamp": "date",
    "day": "date",
    "symbol": "symbol",
    "stock": "symbol",
    "ticker": "symbol",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
}


def canonicalize(
    frame: pd.DataFrame, *, source: str, mapping: dict[str, str] | None = None
) -> pd.DataFrame:
    """Rename columns to the canonical layout and coerce their types; fail on a missing column.

    ``mapping`` maps canonical names to the file's own column names.
    """
    renames: dict[str, str] = {}
    if mapping:
        renames.update({theirs: ours for ours, theirs in mapping.items()})
    for column in frame.columns:
        alias = KNOWN_ALIASES.get(str(column).strip().lower())
        if alias and column not in renames and alias not in renames.values():
            renames[column] = alias
    frame = frame.rename(columns=renames)
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source} has no column {', '.join(missing)}; expected {BAR_COLUMNS}.")
    frame = frame[BAR_COLUMNS].copy()
    dates = frame["date"]
    if not pd.api.types.is_datetime64_any_dtype(dates):
        dates = pd.to_datetime(dates, errors="coerce")
    if getattr(dates.dt, "tz", None) is not None:  # a trading day is a calendar date
        dates = dates.dt.tz_localize(None)
    frame["date"] = dates.dt.normalize().astype("datetime64[ns]")
    frame["symbol"] = _clean_symbols(frame["symbol"])
    for column in [*PRICE_COLUMNS, "volume"]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def _clean_symbols(symbols: pd.Series) -> pd.Series:
    """Stripped, upper-case symbols as a string column; normalises each distinct value once."""
    codes, uniques = pd.factorize(symbols)
    names = pd.Series(uniques, dtype=object).astype("string").str.strip().str.upper()
    values = np.append(names.to_numpy(dtype=object, na_value=pd.NA), pd.NA)
    return pd.Series(pd.array(values[codes], dtype="string"), index=symbols.index)
