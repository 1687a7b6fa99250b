"""The canonical layout of daily bars that every source produces.

Beside the canonical columns, a source may carry one optional column, ``adjusted_close``
(a vendor's close adjusted for splits and dividends: ``Adj Close``, ``AdjClose``,
``Adj. Close``, quantmod's ``AAPL.Adjusted``, or the column ``DATA_COLUMN_MAP`` names); the
quality gate puts the prices on its scale (``splits.back_adjust``) and drops it.

Close-only bars (``DATA_BARS=close_only``: index levels, fund prices) have the date, the
symbol and the close (and the optional adjusted close) and nothing else: ``close_only``
below reads only those, and a source's open, high, low and volume are neither required
nor kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.contracts.columns import BAR_COLUMNS, CLOSE_ONLY, OHLCV, bar_columns
from mlops.errors import ConfigError, DataError

PRICE_COLUMNS = ["open", "high", "low", "close"]
NOT_IN_CLOSE_ONLY = ["open", "high", "low", "volume"]
ADJUSTED_CLOSE = "adjusted_close"
OPTIONAL_COLUMNS = [ADJUSTED_CLOSE]  # taken when a source has them, never required
MAPPABLE_COLUMNS = [*BAR_COLUMNS, *OPTIONAL_COLUMNS]  # the names DATA_COLUMN_MAP accepts

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
    "adj close": ADJUSTED_CLOSE,
    "adj. close": ADJUSTED_CLOSE,
    "adj_close": ADJUSTED_CLOSE,
    "adjclose": ADJUSTED_CLOSE,
    "adjusted close": ADJUSTED_CLOSE,
    "adjusted_close": ADJUSTED_CLOSE,
    "adjusted": ADJUSTED_CLOSE,
}


def known_alias(name: object) -> str | None:
    """The canonical column a file's column name spells, if any (``X.Adjusted``: quantmod)."""
    key = str(name).strip().lower()
    if key in KNOWN_ALIASES:
        return KNOWN_ALIASES[key]
    return ADJUSTED_CLOSE if key.endswith(".adjusted") else None


def shown_columns(columns: list) -> str:
    """A file's column names for an error message."""
    names = [str(c) for c in columns]
    return ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")


def kind(close_only: bool) -> str:
    """``close_only`` or ``ohlcv``: what bars hold (``DATA_BARS``)."""
    return CLOSE_ONLY if close_only else OHLCV


def wanted_columns(close_only: bool) -> list[str]:
    """The canonical columns a source is read for (the optional one included)."""
    return [*bar_columns(kind(close_only)), *OPTIONAL_COLUMNS]


def column_sources(
    columns: list, mapping: dict[str, str] | None, source: str, *, close_only: bool = False
) -> dict[str, object]:
    """For each canonical column (and ``adjusted_close`` when present), the file's column.

    The map's entries first (matched exactly, else ignoring case), then the built-in
    spellings for the canonical columns the map does not name (the exact canonical name
    preferred when several spellings are present). A mapped column the file lacks is a
    ``ConfigError``, a canonical column found nowhere a ``DataError``; both list the
    file's columns. With ``close_only``, only the date, symbol, close and adjusted close
    are looked for (the map's other entries do not apply).
    """
    wanted = wanted_columns(close_only)
    chosen: dict[str, object] = {}
    for ours, theirs in (mapping or {}).items():
        if ours not in wanted:
            continue
        match = theirs if theirs in columns else None
        if match is None:
            folded = [c for c in columns if str(c).strip().lower() == theirs.strip().lower()]
            match = folded[0] if folded else None
        if match is None:
            raise ConfigError(
                f"DATA_COLUMN_MAP maps {ours} to {theirs!r}, which {source} does not have "
                f"(its columns: {shown_columns(columns)})."
            )
        chosen[ours] = match
    used = set(chosen.values())
    for ours in wanted:
        if ours in chosen:
            continue
        spelled = [c for c in columns if c not in used and known_alias(c) == ours]
        exact = [c for c in spelled if str(c).strip().lower() == ours]
        if spelled:
            chosen[ours] = (exact or spelled)[0]
            used.add(chosen[ours])
    missing = [c for c in wanted if c not in chosen and c not in OPTIONAL_COLUMNS]
    if missing == NOT_IN_CLOSE_ONLY:  # a date, a symbol and a close: closes only?
        raise DataError(
            f"{source} has no column {', '.join(missing)} (its columns: "
            f"{shown_columns(columns)}); if it holds closes only (index levels, fund "
            "prices), set DATA_BARS=close_only, otherwise name them with DATA_COLUMN_MAP, "
            f"e.g. {missing[0]}=<column>."
        )
    if missing:
        raise DataError(
            f"{source} has no column {', '.join(missing)} (its columns: "
            f"{shown_columns(columns)}); name it with DATA_COLUMN_MAP, e.g. "
            f"{missing[0]}=<column>."
        )
    return chosen


def canonicalize(
    frame: pd.DataFrame,
    *,
    source: str,
    mapping: dict[str, str] | None = None,
    close_only: bool = False,
) -> pd.DataFrame:
    """Take the canonical columns (see ``column_sources``) and coerce their types.

    ``mapping`` maps canonical names to the file's own column names. The result has the
    canonical columns (of close-only bars with ``close_only``), and ``adjusted_close``
    after them when the source has one.
    """
    chosen = column_sources(list(frame.columns), mapping, source, close_only=close_only)
    names = [c for c in MAPPABLE_COLUMNS if c in chosen]
    frame = pd.DataFrame({ours: frame[chosen[ours]] for ours in names}, index=frame.index)
    dates = frame["date"]
    if not pd.api.types.is_datetime64_any_dtype(dates):
        dates = pd.to_datetime(dates, errors="coerce")
    if getattr(dates.dt, "tz", None) is not None:  # a trading day is a calendar date
        dates = dates.dt.tz_localize(None)
    if not _midnights(dates):
        dates = dates.dt.normalize()
    frame["date"] = dates.astype("datetime64[ns]")
    frame["symbol"] = _clean_symbols(frame["symbol"])
    for column in [*PRICE_COLUMNS, "volume", *OPTIONAL_COLUMNS]:
        if column in chosen:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def closes_only(frame: pd.DataFrame) -> pd.DataFrame:
    """Bars of any source without their open, high, low and volume (close-only bars)."""
    dropped = [c for c in NOT_IN_CLOSE_ONLY if c in frame.columns]
    return frame.drop(columns=dropped) if dropped else frame


def _midnights(dates: pd.Series) -> bool:
    """Every date is at midnight already (or missing): normalizing would change nothing."""
    values = dates.to_numpy()
    if values.dtype == np.dtype("datetime64[ns]"):  # the usual case, in integers
        nanoseconds = values.view("int64")
        return bool(((nanoseconds % 86_400_000_000_000 == 0) | np.isnat(values)).all())
    values = values[~np.isnat(values)]
    return bool((values == values.astype("datetime64[D]")).all())


def _clean_symbols(symbols: pd.Series) -> pd.Series:
    """Stripped, upper-case symbols as a string column; normalises each distinct value once."""
    codes, uniques = pd.factorize(symbols)
    names = pd.Series(uniques, dtype=object).astype("string").str.strip().str.upper()
    values = np.append(names.to_numpy(dtype=object, na_value=pd.NA), pd.NA)
    return pd.Series(pd.array(values[codes], dtype="string"), index=symbols.index)
