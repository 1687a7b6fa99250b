"""Wide multi-symbol files: one row per day, each symbol's columns side by side.

R's quantmod and similar exports write a date column beside ``AAPL.Open, AAPL.High,
AAPL.Low, AAPL.Close, AAPL.Volume, AAPL.Adjusted, MSFT.Open, ...``: the symbol is the
prefix before the last ``.`` (so ``BRK.B.Close`` is BRK.B's close), the rest a column name
the usual spellings or ``DATA_COLUMN_MAP`` recognise (``AAPL.Adj Close``, ``X.Last`` with
``close=Last``). ``layout`` tells such a file by its header, without a setting:

* it has no symbol column, and at least one column ``<prefix>.<price or volume column>``;
* its own unprefixed price and volume columns, if any, do not make a complete file of
  one symbol (``Close, ..., Volume, Prev.Close`` is an ordinary file with an extra column).

The date column is the mapped one, else one spelled as a date, else the only column
without a symbol prefix (quantmod's ``Index``, an unnamed index: ``Unnamed: 0``). Columns
with a prefix but no price or volume name after it (``AAPL.Dividends``) are ignored.

Each mistake in such a header is one sentence (``ConfigError``, exit 2): prefixed columns
mixed with unprefixed price columns (``AAPL.Open, ..., Volume``), a prefix that is not a
ticker (``My Fund.Close``), one symbol's column given twice (``AAPL.Close`` and
``aapl.close``), a symbol without one of the columns the bars need (``MSFT.Volume``; with
``DATA_BARS=close_only`` only the close is needed), no date column to be found.

``unpivot`` turns the rows into the long layout (a row per day and symbol); a day on which
a symbol's columns are all empty (before its listing, after its delisting: what a merge
of several series leaves) is no bar of that symbol and is dropped, while a day with only
some of them empty stays, for the quality gate to quarantine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from mlops.data_prep.bars import (
    ADJUSTED_CLOSE,
    KNOWN_ALIASES,
    NOT_IN_CLOSE_ONLY,
    shown_columns,
    wanted_columns,
)
from mlops.errors import ConfigError, DataError
from mlops.symbols import is_symbol

SEPARATOR = "."
_SYMBOL_ALIASES = {k for k, v in KNOWN_ALIASES.items() if v == "symbol"}


@dataclass(frozen=True)
class WideLayout:
    """Where a wide file's values are: its date column, and each symbol's columns."""

    date: object
    symbols: dict[str, dict[str, object]]  # symbol: {canonical column: the file's column}
    columns: tuple[str, ...]  # the canonical columns of a bar, in order


def _field_names(mapping: dict[str, str]) -> dict[str, str]:
    """Lower-cased column names (as a suffix after the prefix too) and their canonical
    price or volume column: the map's, then the built-in spellings."""
    fields = {k: v for k, v in KNOWN_ALIASES.items() if v not in ("date", "symbol")}
    fields.update(
        {theirs.strip().lower(): ours for ours, theirs in mapping.items() if ours != "date"}
    )
    return fields


def _date_column(columns: list, plain: list, mapping: dict[str, str], source: str) -> object:
    mapped = mapping.get("date")
    if mapped is not None:
        found = [c for c in columns if str(c).strip().lower() == mapped.strip().lower()]
        if not found:
            raise ConfigError(
                f"DATA_COLUMN_MAP maps date to {mapped!r}, which {source} does not have "
                f"(its columns: {shown_columns(columns)})."
            )
        return mapped if mapped in columns else found[0]
    spelled = [c for c in plain if KNOWN_ALIASES.get(str(c).strip().lower()) == "date"]
    if spelled or len(plain) == 1:
        return (spelled or plain)[0]
    raise DataError(
        f"{source} is a wide file (SYMBOL.Column columns) without a date column (its "
        f"columns: {shown_columns(columns)}); name it with DATA_COLUMN_MAP, e.g. date=<column>."
    )


def layout(
    columns: list, mapping: dict[str, str] | None, source: str, *, close_only: bool = False
) -> WideLayout | None:
    """The file's wide layout from its header, or None when it is not wide (see the module
    doc); a malformed wide header is a ``ConfigError``."""
    mapping = {k: v for k, v in (mapping or {}).items() if k != "symbol"}
    names = {str(c).strip().lower() for c in columns}
    if names & _SYMBOL_ALIASES:
        return None
    fields = _field_names(mapping)
    wanted = [c for c in wanted_columns(close_only) if c not in ("date", "symbol")]
    own: dict[str, object] = {}  # unprefixed price and volume columns
    prefixed: dict[str, list[tuple[str, object]]] = {}
    plain: list = []  # columns that are neither
    for column in columns:
        name = str(column).strip()
        if name.lower() in fields:
            own.setdefault(fields[name.lower()], column)
            continue
        prefix, dot, rest = name.rpartition(SEPARATOR)
        field = fields.get(rest.strip().lower()) if dot else None
        if field is None:
            plain.append(column)
        else:
            prefixed.setdefault(prefix, []).append((field, column))
    if not prefixed:
        return None
    required = [c for c in wanted if c != ADJUSTED_CLOSE]
    if own and all(c in own for c in required):
        return None  # a file of one symbol; the prefixed columns are extras
    if own:
        _mixed(prefixed, own, source)
    symbols = _symbols(prefixed, wanted, required, source, close_only)
    date = _date_column(list(columns), plain, mapping, source)
    kept = [c for c in ("date", "symbol", *wanted) if c in ("date", "symbol") or _any(symbols, c)]
    return WideLayout(date, symbols, tuple(kept))


def _any(symbols: dict[str, dict[str, object]], column: str) -> bool:
    return any(column in fields for fields in symbols.values())


def _mixed(prefixed: dict[str, list], own: dict[str, object], source: str) -> None:
    examples = [str(c) for items in prefixed.values() for _, c in items][:3]
    raise ConfigError(
        f"{source} mixes columns with a symbol prefix ({', '.join(examples)}) and columns "
        f"without one ({', '.join(str(c) for c in own.values())}): in a wide file every price "
        "and volume column is SYMBOL.Column (AAPL.Open, AAPL.Close, ...), in a file of one "
        "symbol none is."
    )


def _symbols(
    prefixed: dict[str, list[tuple[str, object]]],
    wanted: list[str],
    required: list[str],
    source: str,
    close_only: bool,
) -> dict[str, dict[str, object]]:
    """Each symbol's column of each canonical column it needs or has (sorted by symbol)."""
    symbols: dict[str, dict[str, object]] = {}
    for prefix, items in prefixed.items():
        symbol = prefix.strip().upper()
        if not is_symbol(symbol):
            raise ConfigError(
                f"{source} has a column {str(items[0][1])!r} whose prefix {prefix!r} is not a "
                "ticker (1 to 16 characters, A-Z and 0-9 with single . or - between them): a "
                "wide file's columns are SYMBOL.Column, e.g. AAPL.Close."
            )
        fields = symbols.setdefault(symbol, {})
        for field, column in items:
            if field not in wanted:
                continue  # the open, high, low and volume of close-only bars
            if field in fields:
                raise ConfigError(
                    f"{source} has two {field} columns for {symbol} ({fields[field]!r} and "
                    f"{column!r}): keep one."
                )
            fields[field] = column
    for symbol, fields in sorted(symbols.items()):
        missing = [c for c in required if c not in fields]
        if missing:
            hint = ""
            if not close_only and "close" in fields and missing == NOT_IN_CLOSE_ONLY:
                hint = " (for closes only, set DATA_BARS=close_only)"
            columns = "column" if len(missing) == 1 else "columns"
            raise ConfigError(
                f"{source} is a wide file without {symbol}'s {', '.join(missing)} {columns} "
                f"(e.g. {symbol}.{missing[0].capitalize()}): each symbol needs "
                f"{', '.join(required)}{hint}."
            )
    return dict(sorted(symbols.items()))


def unpivot(
    frame: pd.DataFrame, wide: WideLayout, owned: Callable[[object], bool] | None = None
) -> pd.DataFrame:
    """A wide file's rows as bars in the long layout (canonical names, values as read),
    symbol by symbol, only the symbols ``owned``; days without any value of a symbol
    are none of its bars."""
    dates = frame[wide.date].to_numpy()
    parts = []
    for symbol, fields in wide.symbols.items():
        if owned is not None and not owned(symbol):
            continue
        values = {name: frame[column].to_numpy() for name, column in fields.items()}
        part = pd.DataFrame({"date": dates, "symbol": symbol, **values})
        present = part[list(fields)].notna().any(axis=1).to_numpy()
        parts.append(part[present] if not present.all() else part)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in wide.columns})
    long = pd.concat(parts, ignore_index=True)
    return long.reindex(columns=list(wide.columns))
