"""Stock splits in daily bars: jumps that match a split ratio, and back-adjustment.

A split of n:m (n shares for m) multiplies the price by m/n from one day to the next: a
3:2 split by 2/3, a 1:10 reverse split by 10. Unadjusted bars then show a fake crash (or
rally) that no trader saw. ``SPLITS`` holds 2:1, 3:2, 4:3, 5:4, 3:1, 4:1, 7:1, 10:1 and their
reverse splits.

``match_splits``, on one symbol's date-sorted valid bars, matches the move between two
consecutive bars to a split when:

* the overnight move (the open after the previous close) or the close-to-close move is
  within ``SPLIT_TOLERANCE`` (2 %) of the split's factor, and both moves are nearer the
  factor than no move at all (the day trades and closes on the new scale: one bad open is
  no split);
* the move is beyond the symbol's normal daily range: at least ``SPLIT_MIN_SIGMAS`` (5)
  times its typical daily move, a robust standard deviation (median absolute daily log
  return / 0.6745) of the ``NORMAL_WINDOW`` (60) close-to-close moves before it (of the
  whole series when fewer than ``MIN_NORMAL`` (10) come before).

The two nearest factors (x0.75 for 4:3, x0.8 for 5:4) are 6 % apart, so a move matches at
most one split, and a real 10 % move matches none (the smallest split moves are -20 % and
+25 %). A real move of a split's exact size on a calm stock (a -20 % crash on a stock that
moves 1 % a day) cannot be told from a 5:4 split by prices alone: it is flagged as a
possible split too; an adjusted close settles it (``back_adjust``).

``back_adjust`` puts a symbol's bars on the scale of its adjusted close (the vendor's close
adjusted for splits and dividends): with factor = adjusted_close / close on each row, open,
high, low and close are multiplied by it (the close becomes the adjusted close, to the
last bit of a float) and the volume divided by it (price times volume is unchanged). The
split jump is then gone, so the series does not break there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops.data_prep.bars import ADJUSTED_CLOSE, PRICE_COLUMNS

SPLIT_TOLERANCE = 0.02  # a move within 2 % of a split's factor matches it
SPLIT_MIN_SIGMAS = 5.0  # ... when it is at least this many typical daily moves
NORMAL_WINDOW = 60  # close-to-close moves before a jump that set the typical daily move
MIN_NORMAL = 10  # fewer before it: the whole series sets it
MAD_TO_SIGMA = 0.6745  # median |x| of a normal distribution, in standard deviations


@dataclass(frozen=True)
class Split:
    new: int  # shares after the split ...
    old: int  # ... for this many before

    @property
    def name(self) -> str:
        return f"{self.new}:{self.old}"

    @property
    def factor(self) -> float:
        """What the price is multiplied by across the split."""
        return self.old / self.new

    @property
    def kind(self) -> str:
        return "split" if self.new > self.old else "reverse split"


_FORWARD = [(2, 1), (3, 2), (4, 3), (5, 4), (3, 1), (4, 1), (7, 1), (10, 1)]
SPLITS: tuple[Split, ...] = tuple(
    [Split(n, m) for n, m in _FORWARD] + [Split(m, n) for n, m in _FORWARD]
)
_LOG_FACTORS = np.log([s.factor for s in SPLITS])
_LEAST_MOVE = float(np.abs(_LOG_FACTORS).min()) - np.log1p(SPLIT_TOLERANCE)


def match_splits(open_: np.ndarray, close: np.ndarray) -> np.ndarray:
    """For each move between consecutive bars, the index in ``SPLITS`` it matches, or -1.

    ``open_`` and ``close``: one symbol's valid (positive) prices, sorted by date.
    """
    n = len(close)
    found = np.full(max(n - 1, 0), -1, dtype=np.int64)
    if n < 2:
        return found
    move = np.log(close[1:] / close[:-1])
    overnight = np.log(open_[1:] / close[:-1])
    tolerance = np.log1p(SPLIT_TOLERANCE)
    size = np.abs(move)
    for i in np.flatnonzero(_large(size, overnight)):
        off_move, off_night = np.abs(move[i] - _LOG_FACTORS), np.abs(overnight[i] - _LOG_FACTORS)
        k = int(np.argmin(np.minimum(off_move, off_night)))
        half = abs(_LOG_FACTORS[k]) / 2
        if min(off_move[k], off_night[k]) > tolerance or max(off_move[k], off_night[k]) >= half:
            continue  # near no split, or the day does not trade on the new scale
        before = size[max(0, i - NORMAL_WINDOW) : i]
        if before.size < MIN_NORMAL:
            before = np.delete(size, i)
        typical = float(np.median(before)) / MAD_TO_SIGMA if before.size else 0.0
        if abs(_LOG_FACTORS[k]) >= SPLIT_MIN_SIGMAS * typical:  # beyond an ordinary day
            found[i] = k
    return found


def _large(size: np.ndarray, overnight: np.ndarray) -> np.ndarray:
    """Moves at least as large as the smallest split's (rare): only they are looked at closely."""
    return (size >= _LEAST_MOVE) | (np.abs(overnight) >= _LEAST_MOVE)


def split_candidates(open_: np.ndarray, close: np.ndarray) -> np.ndarray:
    """For each move between consecutive bars, whether ``match_splits`` looks at it closely
    (a superset of its matches; the bars may be several symbols' back to back)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        move = np.log(close[1:] / close[:-1])
        overnight = np.log(open_[1:] / close[:-1])
    return _large(np.abs(move), overnight)


def back_adjust(bars: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Bars on their adjusted close's scale, without the ``adjusted_close`` column, and
    the symbols that carried one.

    Rows without an adjusted close keep their prices (the quality gate has quarantined
    such rows of a symbol that carries adjusted closes).
    """
    if ADJUSTED_CLOSE not in bars.columns:
        return bars, []
    adjusted = bars[ADJUSTED_CLOSE].to_numpy(dtype="float64", na_value=np.nan)
    usable = np.isfinite(adjusted) & (adjusted > 0)
    bars = bars.drop(columns=ADJUSTED_CLOSE)
    if not usable.any():
        return bars, []
    symbols = sorted(map(str, bars.loc[usable, "symbol"].dropna().unique()))
    close = bars["close"].to_numpy(dtype="float64")
    factor = np.where(usable, adjusted / close, 1.0)
    bars = bars.copy()
    for column in PRICE_COLUMNS:  # one factor for all four keeps low <= open, close <= high
        if column in bars.columns:  # close-only bars: the close alone
            bars[column] = bars[column].to_numpy(dtype="float64") * factor
    if "volume" in bars.columns:
        bars["volume"] = bars["volume"].to_numpy(dtype="float64") / factor
    return bars, symbols
