"""Indicators equal TA-Lib's on the bundled sample, and no feature looks ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from mlops.contracts import datasets
from mlops.data_prep.features import FEATURE_COLUMNS, TARGET_COLUMN, symbol_features
from mlops.data_prep.sources import sample_path
from mlops.data_prep.stage import run

INDICATORS = {
    "rsi_14": lambda close: talib.RSI(close, timeperiod=14),
    "sma_10": lambda close: talib.SMA(close, timeperiod=10),
    "ema_10": lambda close: talib.EMA(close, timeperiod=10),
    "dema_10": lambda close: talib.DEMA(close, timeperiod=10),
}
# TA-Lib's lookbacks: RSI 14 needs 14 earlier closes, DEMA 10 needs 2 * (10 - 1) = 18.
WARMUP_ROWS = 18


def _raw_sample() -> pd.DataFrame:
    """The sample read independently of the project's loader."""
    raw = pd.read_csv(sample_path())
    raw["Date"] = pd.to_datetime(raw["Date"])
    return raw


@pytest.fixture
def published(make_ctx) -> pd.DataFrame:
    ctx = make_ctx()
    result = run(ctx)
    return datasets.load(ctx.store, result.version)[1]


def test_indicators_equal_talib_per_symbol_on_the_sample(published: pd.DataFrame) -> None:
    raw = _raw_sample()
    assert sorted(published["symbol"].unique()) == sorted(raw["Stock"].unique())
    for symbol, group in raw.groupby("Stock"):
        group = group.sort_values("Date")
        close = group["Close"].to_numpy(dtype="float64")
        ours = published[published["symbol"] == symbol].sort_values("date")
        assert list(ours["date"]) == list(group["Date"])
        for column, indicator in INDICATORS.items():
            expected = indicator(close)
            got = ours[column].to_numpy()
            # Warm-up rows: missing in both, at the same places.
            assert np.array_equal(np.isnan(got), np.isnan(expected)), (symbol, column)
            valid = ~np.isnan(expected)
            assert valid.sum() == len(close) - (
                14 if column == "rsi_14" else 9 if column in {"sma_10", "ema_10"} else WARMUP_ROWS
            )
            np.testing.assert_allclose(got[valid], expected[valid], rtol=0, atol=1e-9)
        # Warm-up rows are marked, and only those.
        warmup = ours["warmup"].to_numpy()
        assert warmup[:WARMUP_ROWS].all()
        assert not warmup[WARMUP_ROWS:].any()
        assert not ours.loc[~ours["warmup"], FEATURE_COLUMNS].isna().any().any()


def _reference_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The features written the plain pandas way, to hold the vectorised code to."""
    bars = bars.sort_values("date").reset_index(drop=True)
    close = bars["close"].to_numpy(dtype="float64")
    out = bars.copy()
    for column, indicator in INDICATORS.items():
        out[column] = indicator(close)
    out["change"] = bars["close"].diff()
    out["return_1d"] = bars["close"].pct_change()
    out["range_pct"] = (bars["high"] - bars["low"]) / bars["close"]
    out["log_volume"] = np.log1p(bars["volume"])
    for name in ("sma_10", "ema_10", "dema_10"):
        out[f"close_to_{name}"] = bars["close"] / out[name] - 1.0
    out["warmup"] = out[FEATURE_COLUMNS].isna().any(axis=1)
    out[TARGET_COLUMN] = bars["close"].shift(-1)
    out["next_return"] = out[TARGET_COLUMN] / bars["close"] - 1.0
    out["target_date"] = bars["date"].shift(-1)
    # The direction label a dataset is loaded with (contracts.columns.with_direction).
    out["next_up"] = np.where(
        out[TARGET_COLUMN].isna(), np.nan, (out[TARGET_COLUMN] > bars["close"]).astype(float)
    )
    return out


def test_every_column_equals_the_plain_pandas_computation(published: pd.DataFrame) -> None:
    for _, ours in published.groupby("symbol"):
        ours = ours.reset_index(drop=True)
        bars = ours[["date", "symbol", "open", "high", "low", "close", "volume"]]
        pd.testing.assert_frame_equal(ours, _reference_features(bars), check_exact=True)


def test_rsi_is_wilders_smoothing() -> None:
    """An independent Wilder RSI agrees with TA-Lib's (and so with ours) to 1e-9."""
    raw = _raw_sample()
    close = raw[raw["Stock"] == "AAPL"].sort_values("Date")["Close"].to_numpy(dtype="float64")
    delta = np.diff(close)
    gain, loss = np.clip(delta, 0, None), np.clip(-delta, 0, None)
    avg_gain, avg_loss = gain[:14].mean(), loss[:14].mean()
    expected = [100 - 100 / (1 + avg_gain / avg_loss)]
    for g, lo in zip(gain[14:], loss[14:], strict=True):
        avg_gain = (avg_gain * 13 + g) / 14
        avg_loss = (avg_loss * 13 + lo) / 14
        expected.append(100 - 100 / (1 + avg_gain / avg_loss))
    ours = symbol_features(
        pd.DataFrame(
            {
                "date": pd.bdate_range("2015-01-01", periods=len(close)),
                "symbol": "AAPL",
                "open": close,
                "high": close,
                "low": close,
                "close": close,
                "volume": 1.0,
            }
        )
    )["rsi_14"].to_numpy()
    np.testing.assert_allclose(ours[14:], expected, rtol=0, atol=1e-9)


CUT = pd.Timestamp("2016-06-15")


def _future_scaled(raw: pd.DataFrame) -> pd.DataFrame:
    out = raw.copy()
    after = out["Date"] > CUT
    factor = np.random.default_rng(7).uniform(0.9, 1.1, after.sum())
    for column in ("Open", "High", "Low", "Close"):
        out.loc[after, column] = out.loc[after, column] * factor
    out.loc[after, "Volume"] = out.loc[after, "Volume"] * 3
    return out


def _future_shifted(raw: pd.DataFrame) -> pd.DataFrame:
    """Every bar after the cut takes the values of the bar 5 days later (dates stay)."""
    parts = []
    for _, group in raw.sort_values("Date").groupby("Stock"):
        group = group.copy()
        after = (group["Date"] > CUT).to_numpy()
        for column in ("Open", "High", "Low", "Close", "Volume"):
            values = group[column].to_numpy()
            shifted = np.roll(values, -5)
            shifted[-5:] = values[-5:]
            group.loc[after, column] = shifted[after]
        parts.append(group)
    return pd.concat(parts)


def _future_dropped_and_gapped(raw: pd.DataFrame) -> pd.DataFrame:
    """Drop three weeks right after the cut (a gap) and halve prices later (a split)."""
    gap = (raw["Date"] > CUT) & (raw["Date"] <= pd.Timestamp("2016-07-06"))
    out = raw[~gap].copy()
    later = out["Date"] > pd.Timestamp("2016-08-15")
    for column in ("Open", "High", "Low", "Close"):
        out.loc[later, column] = out.loc[later, column] / 2
    return out


@pytest.mark.parametrize(
    "change",
    [_future_scaled, _future_shifted, _future_dropped_and_gapped, lambda r: r[r["Date"] <= CUT]],
    ids=["scaled", "shifted", "gap-and-split", "truncated"],
)
def test_changing_the_future_leaves_past_features_unchanged(
    make_ctx, tmp_path: Path, change
) -> None:
    raw = _raw_sample()
    frames = {}
    for name, data in (("original", raw), ("changed", change(raw))):
        path = tmp_path / f"{name}.csv"
        data.to_csv(path, index=False)
        # The raw prices: the changes leave the file's AdjClose as it was (and an adjusted
        # close is back-adjusted from the future by its nature, see docs/data-prep.md).
        ctx = make_ctx(
            home=tmp_path / name,
            DATA_SOURCE="files",
            DATA_FILES=str(path),
            DATA_ADJUST_PRICES="never",
        )
        frames[name] = datasets.load(ctx.store, run(ctx).version)[1]

    columns = ["date", "symbol", *FEATURE_COLUMNS, "warmup"]
    past = {name: f[f["date"] <= CUT].reset_index(drop=True) for name, f in frames.items()}
    pd.testing.assert_frame_equal(past["original"][columns], past["changed"][columns])
    # The test has teeth: the future did change, and so did the target of the cut day.
    future = {name: f[f["date"] > CUT] for name, f in frames.items()}
    assert not future["original"]["close"].equals(future["changed"]["close"])
    cut_targets = {n: f.loc[f["date"] == CUT, TARGET_COLUMN].to_numpy() for n, f in past.items()}
    assert not np.array_equal(cut_targets["original"], cut_targets["changed"], equal_nan=True)
