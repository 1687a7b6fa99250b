"""Features computed per symbol from past and present bars only, and the next-day target.

RSI 14 (Wilder), SMA 10, EMA 10 and DEMA 10 on the close come from TA-Lib itself.
Rows whose indicators are still warming up are marked ``warmup`` and are not trained on.
Every feature of a row depends only on that row and the rows before it (TA-Lib's
indicators are causal, the differences look back); only the target looks one day ahead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

FEATURE_COLUMNS = [
    "close",
    "rsi_14",
    "sma_10",
    "ema_10",
    "dema_10",
    "change",
    "return_1d",
    "range_pct",
    "log_volume",
    "close_to_sma_10",
    "close_to_ema_10",
    "close_to_dema_10",
]
TARGET_COLUMN = "next_close"
TARGET_RETURN_COLUMN = "next_return"


def symbol_features(
    bars: pd.DataFrame, segment_starts: np.ndarray | None = None
) -> pd.DataFrame:
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
    close = bars["close"].to_numpy(dtype="float64")
    out = bars.copy()
    out["rsi_14"] = talib.RSI(close, timeperiod=14)
    out["sma_10"] = talib.SMA(close, timeperiod=10)
    out["ema_10"] = talib.EMA(close, timeperiod=10)
    out["dema_10"] = talib.DEMA(close, timeperiod=10)
    out["change"] = bars["close"].diff()
    out["return_1d"] = bars["close"].pct_change()
    out["range_pct"] = (bars["high"] - bars["low"]) / bars["close"]
    out["log_volume"] = np.log1p(bars["volume"])
    for name in ("sma_10", "ema_10", "dema_10"):
        out[f"close_to_{name}"] = bars["close"] / out[name] - 1.0
    out["warmup"] = out[FEATURE_COLUMNS].isna().any(axis=1)
    # The target looks one trading day ahead; the last day of a symbol has none yet.
    out[TARGET_COLUMN] = bars["close"].shift(-1)
    out[TARGET_RETURN_COLUMN] = out[TARGET_COLUMN] / bars["close"] - 1.0
    out["target_date"] = bars["date"].shift(-1)
    return out


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Features for every symbol, one symbol at a time (memory bounded by the largest)."""
    parts = [symbol_features(group) for _, group in bars.groupby("symbol", sort=True)]
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["date", "symbol"]).reset_index(drop=True)
