"""The quality gate: rows that break a rule are quarantined with their reason.

Per row (quarantined, with the reason for each row): the date parses and is not after
today (a bar from the future is a typo or a bad feed, and would make the whole dataset
"as of" that day), the symbol is set and is a ticker (``mlops.symbols``: the rule the
database's symbol columns hold; ``../../EVIL`` or a quote never reaches a key, a query or
an order), prices are present and positive, volume is present
and not negative, high is at least max(open, close), low at most min(open, close), and
(symbol, date) is not duplicated (every copy is quarantined: there is no telling which
one is right), and, for a symbol that carries adjusted closes, the row has one (positive).

A symbol's bars that carry an adjusted close are put on its scale (``splits.back_adjust``)
once the bad rows are out, before the rules below: a split is then no jump at all.

Per symbol, on the rows that passed (trading days are weekdays, counted with
``numpy.busday_count``; exchange holidays count as missing days, which a limit of a few
days absorbs):

* a gap of more than ``QUALITY_MAX_GAP_DAYS`` missing trading days between two bars, a
  move that matches a split ratio (3:2, 5:4, 1:10, ..., see ``splits.match_splits``), or
  a close-to-close move beyond ``QUALITY_MAX_JUMP_FACTOR`` (up or down) is flagged
  (``gap``, ``split`` naming the ratio, ``jump``) and *breaks the series*: indicators
  restart after it (the rows warm up again) and the row before it gets no target, so no
  feature or target mixes prices across it. The rows themselves are kept; the flags go
  into the manifest.
* bars with a volume of 0 (no trade: the price is a stale quote) are flagged
  (``zero_volume``, one flag per run of such days) and kept.
* a symbol whose last bar is more than ``STALE_AFTER_DAYS`` trading days before the
  as-of day is *stale*: its history stays in the dataset, it has no row on the dataset's
  latest day, and the manifest lists it in ``stale_symbols``. When every symbol is stale
  the source itself is stale and nothing is published.

A batch whose share of bad rows passes ``QUALITY_MAX_BAD_SHARE`` is refused whole, and
nothing is published. Missing prices are never filled in.

Close-only bars (``DATA_BARS=close_only``: no open, high, low or volume) go through the
same rules on what they have: the close is the only price, a split is matched on the
close-to-close move alone, and there is no volume to flag.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from mlops.data_prep.bars import ADJUSTED_CLOSE, PRICE_COLUMNS
from mlops.data_prep.splits import SPLITS, Split, back_adjust, match_splits, split_candidates
from mlops.errors import DataError
from mlops.symbols import NOT_A_SYMBOL, is_symbol


@dataclass
class QualityResult:
    good: pd.DataFrame
    quarantined: pd.DataFrame  # the bad rows with a ``reason`` column

    @property
    def bad_share(self) -> float:
        total = len(self.good) + len(self.quarantined)
        return len(self.quarantined) / total if total else 0.0


@dataclass(frozen=True)
class QualityFlag:
    """A per-symbol finding that does not quarantine rows: a gap, split, jump or no trade."""

    symbol: str
    date: str  # the first bar after the gap, split or jump; the first bar without trades
    rule: str  # "gap", "split", "jump" or "zero_volume"
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def row_reasons(bars: pd.DataFrame, latest: pd.Timestamp | None = None) -> pd.Series:
    """For each row, the rules it breaks joined by '; ' (empty when it passes).

    ``latest``: the newest possible trading day (today); later bars are quarantined.
    """
    keys = _RowKeys.of(bars)
    return pd.Series(_reasons(bars, latest, keys), index=bars.index, name="reason")


@dataclass(frozen=True)
class _RowKeys:
    """Each row's symbol (a code into the sorted names, -1 when missing) and day, and the
    rows' order by symbol, then day (stable): the symbol column is gone through once."""

    codes: np.ndarray
    names: np.ndarray
    days: np.ndarray  # int64 nanoseconds, NaT as the smallest int64
    order: np.ndarray

    @classmethod
    def of(cls, bars: pd.DataFrame) -> _RowKeys:
        codes, names = pd.factorize(bars["symbol"], sort=True)
        codes = codes.astype("int64", copy=False)
        days = bars["date"].to_numpy(dtype="datetime64[ns]").view("int64")
        step, later = np.diff(codes), np.diff(days)
        if ((step > 0) | ((step == 0) & (later > 0))).all():  # sorted already, no ties
            order = np.arange(len(codes))
        else:
            order = np.lexsort((days, codes))  # the last key sorts first
        return cls(codes, np.asarray(names, dtype=object), days, order)

    def empty_symbol(self) -> np.ndarray:
        blank = np.flatnonzero(self.names == "")
        return (self.codes == -1) | np.isin(self.codes, blank)

    def not_symbols(self) -> np.ndarray:
        """True where the symbol breaks ``mlops.symbols``' rule (each name checked once; a
        missing symbol is not this reason)."""
        bad = np.array([not is_symbol(str(n)) for n in self.names] + [False], dtype=bool)
        return bad[self.codes]  # code -1 (missing): the last entry, False

    def duplicated(self) -> np.ndarray:
        """Every row whose (symbol, day) another row has too (``keep=False``)."""
        codes, days = self.codes[self.order], self.days[self.order]
        same = (codes[1:] == codes[:-1]) & (days[1:] == days[:-1])
        twice = np.zeros(len(codes), dtype=bool)
        twice[1:] |= same
        twice[:-1] |= same
        out = np.empty_like(twice)
        out[self.order] = twice
        return out


def _reasons(bars: pd.DataFrame, latest: pd.Timestamp | None, keys: _RowKeys) -> np.ndarray:
    missing_adjusted = np.zeros(len(bars), dtype=bool)
    if ADJUSTED_CLOSE in bars.columns:
        adjusted = bars[ADJUSTED_CLOSE].to_numpy(dtype="float64", na_value=np.nan)
        present = pd.Series(~np.isnan(adjusted), index=bars.index)
        carries = present.groupby(bars["symbol"].fillna(""), sort=False).transform("any")
        with np.errstate(invalid="ignore"):
            missing_adjusted = carries.to_numpy(dtype=bool) & ~(adjusted > 0)
    present = [c for c in PRICE_COLUMNS if c in bars.columns]  # the close alone: close-only
    prices = bars[present].to_numpy(dtype="float64", na_value=np.nan)
    price: dict[str, np.ndarray] = dict(zip(present, prices.T, strict=True))
    close = price["close"]
    open_, high, low = (price.get(c, close) for c in ("open", "high", "low"))
    volume = np.zeros(len(bars))
    if "volume" in bars.columns:
        volume = bars["volume"].to_numpy(dtype="float64", na_value=np.nan)
    no_date = keys.days == np.iinfo(np.int64).min  # NaT
    no_symbol = keys.empty_symbol()
    future = np.zeros(len(bars), dtype=bool)
    if latest is not None:
        future = ~no_date & (keys.days > pd.Timestamp(latest).value)  # nanoseconds
    with np.errstate(invalid="ignore"):
        rules: list[tuple[str, np.ndarray]] = [
            ("date does not parse", no_date),
            (f"date is after today ({latest:%Y-%m-%d})" if latest is not None else "", future),
            ("symbol is empty", no_symbol),
            (NOT_A_SYMBOL, keys.not_symbols() & ~no_symbol),
            ("a price is missing", np.isnan(prices).any(axis=1)),
            ("a price is not positive", (prices <= 0).any(axis=1)),
            ("volume is missing or negative", np.isnan(volume) | (volume < 0)),
            ("high is below open or close", high < np.fmax(open_, close)),
            ("low is above open or close", low > np.fmin(open_, close)),
            ("adjusted close is missing or not positive", missing_adjusted),
            ("duplicate (symbol, date)", keys.duplicated() & ~no_date),
        ]
    reasons = np.full(len(bars), "", dtype=object)
    for text, hit in rules:
        if hit.any():
            reasons[hit] = np.where(reasons[hit] == "", text, reasons[hit] + "; " + text)
    return reasons


def sort_by_symbol_and_date(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by symbol, then date (a no-op, without a copy of the data, when already so)."""
    return _take(frame, _RowKeys.of(frame).order)


def _take(frame: pd.DataFrame, order: np.ndarray) -> pd.DataFrame:
    """The rows at ``order`` (all of them in their order: the frame itself, no copy)."""
    if len(order) == len(frame) and (order == np.arange(len(order))).all():
        index = frame.index
        if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
            return frame
        return frame.reset_index(drop=True)
    return frame.take(order).reset_index(drop=True)


def _days(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype="datetime64[ns]").astype("datetime64[D]")


def series_breaks(
    bars: pd.DataFrame, *, max_gap_days: int, max_jump_factor: float
) -> tuple[np.ndarray, list[QualityFlag]]:
    """Where one symbol's valid, date-sorted bars break, and why.

    Returns a boolean array, True on each row that starts a new series segment (the
    first row is not marked), and the flags explaining each break. A move that matches a
    split is flagged ``split`` (naming the ratio) whether or not it is beyond
    ``max_jump_factor``; ``jump`` is a large move that matches no split.
    """
    n = len(bars)
    starts = np.zeros(n, dtype=bool)
    if n < 2:
        return starts, []
    days = _days(bars["date"])
    missing = np.busday_count(days[:-1] + np.timedelta64(1, "D"), days[1:])
    open_, close = _open_and_close(bars)
    ratio = close[1:] / close[:-1]
    gap = missing > max_gap_days
    split = match_splits(open_, close)
    jump = ((ratio > max_jump_factor) | (ratio < 1.0 / max_jump_factor)) & (split < 0)
    starts[1:] = gap | jump | (split >= 0)
    flags: list[QualityFlag] = []
    symbol = str(bars["symbol"].iloc[0])
    for i in np.flatnonzero(starts[1:]):
        after = str(days[i + 1])
        if gap[i]:
            flags.append(
                QualityFlag(
                    symbol,
                    after,
                    "gap",
                    f"{int(missing[i])} trading days missing after {days[i]} "
                    f"(limit {max_gap_days}); indicators restart",
                )
            )
        if split[i] >= 0:
            detail = _split_detail(SPLITS[split[i]], close[i], close[i + 1], open_[i + 1])
            flags.append(QualityFlag(symbol, after, "split", detail))
        if jump[i]:
            flags.append(
                QualityFlag(
                    symbol,
                    after,
                    "jump",
                    f"close moved x{ratio[i]:.3f} from {close[i]:g} to {close[i + 1]:g}, a "
                    f"possible split (limit x{max_jump_factor:g}); indicators restart",
                )
            )
    return starts, flags


def _open_and_close(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The opens and closes; close-only bars have no open: their close stands for it, so
    a split is matched on the close-to-close move alone."""
    close = bars["close"].to_numpy(dtype="float64")
    return (bars["open"].to_numpy(dtype="float64") if "open" in bars.columns else close), close


def _split_detail(found: Split, before: float, after: float, open_after: float) -> str:
    return (
        f"matches a {found.name} {found.kind} (x{found.factor:.3f}): close moved "
        f"x{after / before:.3f} from {before:g} to {after:g} (open {open_after:g}); indicators "
        "restart (an adjusted close would back-adjust the prices instead)"
    )


def zero_volume_flags(bars: pd.DataFrame) -> list[QualityFlag]:
    """One flag per run of consecutive bars with a volume of 0 in one symbol's sorted bars
    (none for close-only bars, which have no volume)."""
    if "volume" not in bars.columns:
        return []
    zero = bars["volume"].to_numpy(dtype="float64") == 0
    if not zero.any():
        return []
    days = _days(bars["date"])
    symbol = str(bars["symbol"].iloc[0])
    edges = np.diff(np.r_[0, zero.astype(np.int8), 0])
    flags = []
    for first, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        count = int(end - first)
        span = f"on {days[first]}"
        if count > 1:
            span = f"on {count} bars, {days[first]} to {days[end - 1]}"
        flags.append(
            QualityFlag(
                symbol,
                str(days[first]),
                "zero_volume",
                f"volume is 0 {span}: no trade, the price is a stale quote; the rows are kept",
            )
        )
    return flags


def _suspect_symbols(
    good: pd.DataFrame, edges: list[int], max_gap_days: int, max_jump_factor: float
) -> np.ndarray:
    """True on the rows of each symbol that ``series_breaks`` or ``zero_volume_flags``
    may flag: a gap, a large move (a split's or a jump's) or a volume of 0. A superset of
    what they flag; moves across two symbols' rows do not count."""
    n = len(good)
    if n < 2:
        return np.ones(n, dtype=bool)
    days = _days(good["date"])
    open_, close = _open_and_close(good)
    hit = np.zeros(n, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):  # the same expressions as theirs
        ratio = close[1:] / close[:-1]
        hit[1:] = (
            (np.busday_count(days[:-1] + np.timedelta64(1, "D"), days[1:]) > max_gap_days)
            | (ratio > max_jump_factor)
            | (ratio < 1.0 / max_jump_factor)
            | split_candidates(open_, close)
        )
    hit[edges[1:-1]] = False  # from one symbol's last row to the next one's first
    if "volume" in good.columns:
        hit |= good["volume"].to_numpy(dtype="float64") == 0
    return _spread(hit, edges)


def _spread(hit: np.ndarray, edges: list[int]) -> np.ndarray:
    """Per row: whether any row of its symbol (between ``edges``) is hit."""
    bounds = np.asarray(edges)
    any_hit = np.logical_or.reduceat(hit, bounds[:-1]) if len(hit) else hit
    return np.repeat(any_hit, np.diff(bounds))


def stale_symbols(last_days: dict[str, date], as_of: date, stale_after_days: int) -> list[str]:
    """Symbols whose last bar is more than ``stale_after_days`` trading days before as_of."""
    stale = []
    end = as_of + timedelta(days=1)
    for symbol, last in last_days.items():
        if int(np.busday_count(last + timedelta(days=1), end)) > stale_after_days:
            stale.append(symbol)
    return sorted(stale)


@dataclass
class SymbolCheck:
    good: pd.DataFrame  # sorted by symbol and date, index reset
    quarantined: pd.DataFrame  # bad rows with a ``reason`` column
    starts: np.ndarray  # aligned with ``good``: True where a series segment starts
    flags: list[QualityFlag]
    adjusted: list[str] = field(default_factory=list)  # symbols put on their adjusted close
    edges: list[int] = field(default_factory=list)  # where each symbol's rows in ``good`` begin,
    # and their end (len(good))
    codes: np.ndarray | None = None  # aligned with ``good``: each row's symbol in ``names``
    names: np.ndarray | None = None


@dataclass
class QualityGate:
    """Checks bars symbol by symbol and keeps the counts for the whole batch."""

    max_bad_share: float
    max_gap_days: int = 5
    max_jump_factor: float = 1.8
    latest: pd.Timestamp | None = None  # today: bars after it are quarantined
    total_rows: int = 0
    bad_rows: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def check(self, bars: pd.DataFrame) -> SymbolCheck:
        """Split bars (usually one symbol's) into good and quarantined rows.

        The good rows come back adjusted (when they carry an adjusted close) and with the
        canonical columns only; so do the quarantined ones, with their ``reason``.
        """
        keys = _RowKeys.of(bars)
        reasons = _reasons(bars, self.latest, keys)
        bad = reasons != ""
        order = keys.order[~bad[keys.order]]  # the good rows by symbol, then date
        good, adjusted = back_adjust(_take(bars, order))
        quarantined = bars[bad]
        if ADJUSTED_CLOSE in quarantined.columns:  # one layout for every quarantined row
            quarantined = quarantined.drop(columns=ADJUSTED_CLOSE)
        quarantined = quarantined.assign(reason=reasons[bad]).reset_index(drop=True)
        self.total_rows += len(bars)
        self._note(quarantined)
        codes = keys.codes[order]
        edges = [0, *(np.flatnonzero(codes[1:] != codes[:-1]) + 1).tolist(), len(codes)]
        starts, flags = self._breaks(good, edges)
        return SymbolCheck(good, quarantined, starts, flags, adjusted, edges, codes, keys.names)

    def _breaks(self, good: pd.DataFrame, edges: list[int]) -> tuple[np.ndarray, list[QualityFlag]]:
        """``series_breaks`` and ``zero_volume_flags`` of every symbol in ``good`` (sorted by
        symbol, then date; ``edges`` its symbol boundaries). The rules are looked up on the
        whole batch at once; only symbols with a possible finding are gone through one by one.
        """
        starts = np.zeros(len(good), dtype=bool)
        flags: list[QualityFlag] = []
        suspects = _suspect_symbols(good, edges, self.max_gap_days, self.max_jump_factor)
        for lo, hi in itertools.pairwise(edges):
            if hi > lo and suspects[lo]:
                starts[lo:hi], part_flags = series_breaks(
                    good.iloc[lo:hi],
                    max_gap_days=self.max_gap_days,
                    max_jump_factor=self.max_jump_factor,
                )
                flags.extend(part_flags)
                flags.extend(zero_volume_flags(good.iloc[lo:hi]))
        return starts, flags

    def _note(self, quarantined: pd.DataFrame) -> None:
        self.bad_rows += len(quarantined)
        if quarantined.empty:
            return
        self.reasons.update(quarantined["reason"])
        for row in quarantined.drop_duplicates("reason").itertuples():
            if row.reason not in self.examples:
                when = row.date.date().isoformat() if pd.notna(row.date) else "no date"
                symbol = row.symbol if isinstance(row.symbol, str) and row.symbol else "no symbol"
                self.examples[row.reason] = f"{symbol} {when}"

    @property
    def bad_share(self) -> float:
        return self.bad_rows / self.total_rows if self.total_rows else 0.0

    def refusal(self) -> str | None:
        """Why the batch is refused (its share of bad rows passes the limit), or None."""
        if self.bad_share <= self.max_bad_share:
            return None
        top = self.reasons.most_common(1)[0][0]
        return (
            f"{self.bad_rows} of {self.total_rows} rows ({self.bad_share:.1%}) failed the "
            f"quality gate, above the limit of {self.max_bad_share:.1%} (most often: {top}, "
            f"e.g. {self.examples.get(top, '?')}); nothing was published"
        )

    def verify(self) -> None:
        """Refuse the batch when its share of bad rows passes the limit."""
        refusal = self.refusal()
        if refusal:
            raise DataError(f"{refusal}.")


def check_bars(bars: pd.DataFrame, *, max_bad_share: float) -> QualityResult:
    """Split bars into good and quarantined rows; refuse the batch past ``max_bad_share``."""
    if bars.empty:
        raise DataError("The data source returned no bars.")
    gate = QualityGate(max_bad_share=max_bad_share)
    reasons = row_reasons(bars)
    bad = reasons != ""
    result = QualityResult(
        good=bars[~bad].sort_values(["symbol", "date"]).reset_index(drop=True),
        quarantined=bars[bad].assign(reason=reasons[bad]).reset_index(drop=True),
    )
    gate.total_rows = len(bars)
    gate._note(result.quarantined)
    gate.verify()
    return result
