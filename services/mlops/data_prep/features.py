"""Features computed per symbol from past and present bars only, and the next-day target.

RSI 14 (Wilder), SMA 10, EMA 10 and DEMA 10 on the close come from TA-Lib itself.
Rows whose indicators are still warming up are marked ``warmup`` and are not trained on.
Close-only bars (no high, low or volume) get the features computable from closes alone:
``range_pct`` and ``log_volume`` are left out (``contracts.columns.NOT_FROM_CLOSES``).
Every feature of a row depends only on that row and the rows before it (TA-Lib's
indicators are causal, the differences look back); only the target looks one day ahead.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import talib

from mlops.contracts.columns import (
    FEATURE_COLUMNS,
    TARGET_COLUMN,
    TARGET_DATE_COLUMN,
    TARGET_RETURN_COLUMN,
    WARMUP_COLUMN,
)


def symbol_features(bars: pd.DataFrame, segment_starts: np.ndarray | None = None) -> pd.DataFrame:
    """Features of one symbol's bars, sorted by date.

    ``segment_starts`` (aligned with ``bars``) marks rows where the series breaks (a long
    gap or a possible split, see ``quality.series_breaks``): each segment is computed on
    its own, so indicators warm up again after a break and no target crosses it.
    """
    order = np.argsort(bars["date"].to_numpy(), kind="stable")
    bars = bars.iloc[order].reset_index(drop=True)
    if segment_starts is None or not np.asarray(segment_starts)[order][1:].any():
        return _segment_features(bars)
    segment = np.cumsum(np.asarray(segment_starts, dtype=bool)[order])
    parts = [_segment_features(part.reset_index(drop=True)) for _, part in bars.groupby(segment)]
    return pd.concat(parts, ignore_index=True)


def _segment_features(bars: pd.DataFrame) -> pd.DataFrame:
    new = segment_arrays(
        bars["close"].to_numpy(dtype="float64"),
        _column(bars, "high"),
        _column(bars, "low"),
        _column(bars, "volume"),
        bars["date"].to_numpy(dtype="datetime64[ns]"),
    )
    out = {c: bars[c] for c in bars.columns}
    out.update({c: pd.Series(v, index=bars.index) for c, v in new.items()})
    return pd.DataFrame(out, index=bars.index)


def _column(bars: pd.DataFrame, name: str) -> np.ndarray | None:
    """A float64 column of the bars, None when they have none (close-only bars)."""
    return bars[name].to_numpy(dtype="float64") if name in bars.columns else None


def segment_arrays(
    close: np.ndarray,
    high: np.ndarray | None,
    low: np.ndarray | None,
    volume: np.ndarray | None,
    dates: np.ndarray,
) -> dict[str, np.ndarray]:
    """The feature and target columns of one unbroken, date-sorted series (contiguous
    float64 arrays; ``dates`` as datetime64[ns]), in the dataset's column order. Without
    a high and low (or a volume) the feature made of them is left out."""
    previous = np.r_[np.nan, close[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        new: dict[str, np.ndarray] = {
            "rsi_14": talib.RSI(close, timeperiod=14),
            "sma_10": talib.SMA(close, timeperiod=10),
            "ema_10": talib.EMA(close, timeperiod=10),
            "dema_10": talib.DEMA(close, timeperiod=10),
            "change": close - previous,
            "return_1d": close / previous - 1.0,
        }
        if high is not None and low is not None:
            new["range_pct"] = (high - low) / close
        if volume is not None:
            new["log_volume"] = np.log1p(volume)
        for name in ("sma_10", "ema_10", "dema_10"):
            new[f"close_to_{name}"] = close / new[name] - 1.0
        features = [
            close if c == "close" else new[c] for c in FEATURE_COLUMNS if c in new or c == "close"
        ]
        new[WARMUP_COLUMN] = np.isnan(np.column_stack(features)).any(axis=1)
        # The target looks one trading day ahead; the last day of a symbol has none yet.
        new[TARGET_COLUMN] = np.r_[close[1:], np.nan]
        new[TARGET_RETURN_COLUMN] = new[TARGET_COLUMN] / close - 1.0
    new[TARGET_DATE_COLUMN] = np.r_[dates[1:], np.datetime64("NaT", "ns")]
    return new


def batch_features(bars: pd.DataFrame, segment_starts: np.ndarray) -> dict[str, np.ndarray]:
    """The feature and target columns of several symbols' bars at once, sorted by symbol,
    then date (as the quality gate leaves them): the columns ``symbol_features`` adds,
    symbol by symbol, with the same values.

    ``segment_starts`` marks each row that starts a series segment (a symbol's first row
    or a break); each segment is computed on its own, on contiguous slices of the columns.
    """
    n = len(bars)
    close = bars["close"].to_numpy(dtype="float64")
    high, low, volume = (_column(bars, c) for c in ("high", "low", "volume"))  # close-only: None
    dates = bars["date"].to_numpy(dtype="datetime64[ns]")
    edges = [*np.flatnonzero(segment_starts).tolist(), n]
    if edges[0] != 0:
        edges.insert(0, 0)
    out: dict[str, np.ndarray] = {}
    for lo, hi in itertools.pairwise(edges):
        new = segment_arrays(
            close[lo:hi],
            None if high is None else high[lo:hi],
            None if low is None else low[lo:hi],
            None if volume is None else volume[lo:hi],
            dates[lo:hi],
        )
        if not out:
            out = {c: np.empty(n, dtype=v.dtype) for c, v in new.items()}
        for c, values in new.items():
            out[c][lo:hi] = values
    return out


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Features for every symbol, one symbol at a time (memory bounded by the largest)."""
    parts = [symbol_features(group) for _, group in bars.groupby("symbol", sort=True)]
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["date", "symbol"]).reset_index(drop=True)
