"""Splits of any common ratio break the series (or are back-adjusted), zero volume is flagged.

Synthetic bars: a random walk of 120 weekdays moving about 1.5 % a day, with a consistent
open, high and low; a split of n:m multiplies every price from its day on by m/n (and the
volume by n/m).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.contracts import datasets
from mlops.data_prep.quality import series_breaks
from mlops.data_prep.sources import load_sample
from mlops.data_prep.splits import SPLITS, match_splits
from mlops.data_prep.stage import run

DAYS = 120
SPLIT_AT = 70  # the first bar after the split


def _walk(symbol: str = "XYZ", sigma: float = 0.015, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, DAYS)))
    open_ = np.r_[50.0, close[:-1]] * (1 + rng.normal(0.0, 0.003, DAYS))
    high = np.fmax(open_, close) * (1 + np.abs(rng.normal(0.0, 0.005, DAYS)))
    low = np.fmin(open_, close) * (1 - np.abs(rng.normal(0.0, 0.005, DAYS)))
    return pd.DataFrame(
        {
            "date": pd.bdate_range("2017-01-02", periods=DAYS),
            "symbol": symbol,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.integers(500_000, 2_000_000, DAYS).astype("float64"),
        }
    )


def _split(bars: pd.DataFrame, factor: float, at: int = SPLIT_AT) -> pd.DataFrame:
    """The same bars as a vendor shows them unadjusted, after a split of price factor ``factor``."""
    out = bars.copy()
    after = out.index >= at
    out.loc[after, ["open", "high", "low", "close"]] *= factor
    out.loc[after, "volume"] /= factor
    return out


def _run_file(make_ctx, tmp_path: Path, frame: pd.DataFrame, name: str = "bars.csv", **env):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    ctx = make_ctx(home=tmp_path / "home", DATA_SOURCE="files", DATA_FILES=str(path), **env)
    result = run(ctx)
    manifest, rows = datasets.load(ctx.store, result.version)
    return result, manifest, rows.sort_values("date").reset_index(drop=True)


SPLIT_CASES = [("3:2", 2 / 3), ("5:4", 0.8), ("1:10", 10.0)]


@pytest.mark.parametrize(("name", "factor"), SPLIT_CASES, ids=[n for n, _ in SPLIT_CASES])
def test_a_split_is_flagged_and_breaks_the_series(make_ctx, tmp_path, name, factor) -> None:
    bars = _split(_walk(), factor)
    result, manifest, rows = _run_file(make_ctx, tmp_path, bars)
    day = str(bars["date"][SPLIT_AT].date())
    assert [(f["symbol"], f["date"], f["rule"]) for f in manifest.quality_flags] == [
        ("XYZ", day, "split")
    ]
    assert manifest.quality_flags[0]["detail"].startswith(f"matches a {name} ")
    assert result.quality_flags == 1 and result.quarantined == 0
    # No fake return: the day before the split has no target, none crosses it, and every
    # return left is an ordinary day's.
    assert np.isnan(rows.loc[SPLIT_AT - 1, "next_return"])
    assert np.isnan(rows.loc[SPLIT_AT - 1, "next_close"])
    assert rows["next_return"].abs().max() < 0.1
    assert np.isnan(rows.loc[SPLIT_AT, "return_1d"])  # nor does a feature
    # Indicators warm up again after the break.
    assert rows.loc[SPLIT_AT : SPLIT_AT + 17, "warmup"].all()
    assert not rows.loc[SPLIT_AT + 18 :, "warmup"].any()
    assert len(rows) == DAYS  # flagged, not dropped


ADJUSTED_SPELLINGS = [
    ("Adj Close", {}),
    ("XYZ.Adjusted", {}),  # quantmod's name
    ("Adjusted Price", {"DATA_COLUMN_MAP": "adjusted_close=Adjusted Price"}),
]


@pytest.mark.parametrize(("name", "factor"), SPLIT_CASES, ids=[n for n, _ in SPLIT_CASES])
@pytest.mark.parametrize(
    ("column", "env"), ADJUSTED_SPELLINGS, ids=["adj-close", "quantmod", "mapped"]
)
def test_an_adjusted_close_back_adjusts_instead_of_breaking(
    make_ctx, tmp_path, name, factor, column, env
) -> None:
    original = _walk()
    bars = _split(original, factor)
    # The vendor's adjusted close puts the past on today's scale: x factor before the split.
    bars[column] = original["close"] * factor
    # One file per symbol (no symbol column): the symbol is the file name.
    result, manifest, rows = _run_file(
        make_ctx, tmp_path, bars.drop(columns="symbol"), name="XYZ.csv", **env
    )
    assert manifest.quality_flags == [] and result.quality_flags == 0
    assert result.adjusted_symbols == manifest.adjusted_symbols == ["XYZ"]
    # Every price is the unsplit one on the new scale, the volume on the new share count.
    for price in ("open", "high", "low", "close"):
        np.testing.assert_allclose(rows[price], original[price] * factor, rtol=1e-12)
    np.testing.assert_allclose(rows["volume"], original["volume"] / factor, rtol=1e-12)
    assert "adjusted_close" not in rows.columns and column not in rows.columns
    # The move across the split is the real one, and the series is unbroken.
    real = original["close"][SPLIT_AT] / original["close"][SPLIT_AT - 1] - 1
    assert rows.loc[SPLIT_AT - 1, "next_return"] == pytest.approx(real, abs=1e-12)
    assert not rows.loc[18:, "warmup"].any()


def test_a_symbol_with_adjusted_closes_quarantines_a_row_without_one(make_ctx, tmp_path) -> None:
    bars = _walk()
    bars["Adj Close"] = bars["close"]
    bars.loc[30, "Adj Close"] = np.nan
    result, _, rows = _run_file(make_ctx, tmp_path, bars, QUALITY_MAX_BAD_SHARE=0.05)
    assert result.quarantined == 1 and len(rows) == DAYS - 1
    assert result.adjusted_symbols == ["XYZ"]


def test_never_leaves_the_adjusted_close_unused(make_ctx, tmp_path) -> None:
    original = _walk()
    bars = _split(original, 2 / 3)
    bars["Adj Close"] = original["close"] * 2 / 3
    result, manifest, _ = _run_file(make_ctx, tmp_path, bars, DATA_ADJUST_PRICES="never")
    assert result.adjusted_symbols == []
    assert [f["rule"] for f in manifest.quality_flags] == ["split"]


@pytest.mark.parametrize("move", [1.10, 0.90, 1.15, 0.87])
def test_an_ordinary_large_move_is_no_split(move: float) -> None:
    """A real 10 % move is not a 10:1 split, nor any other (the nearest are -20 %, +25 %)."""
    bars = _split(_walk(), move)
    starts, flags = series_breaks(bars, max_gap_days=5, max_jump_factor=1.8)
    assert flags == [] and not starts.any()


def test_a_split_sized_move_within_a_symbols_normal_range_is_no_split() -> None:
    """-20 % is a 5:4 split for a calm stock, but an ordinary day for one moving 6 % a day."""
    calm = _split(_walk(sigma=0.01), 0.8)
    wild = _split(_walk(sigma=0.06), 0.8)
    assert [f.rule for f in series_breaks(calm, max_gap_days=5, max_jump_factor=1.8)[1]] == [
        "split"
    ]
    assert series_breaks(wild, max_gap_days=5, max_jump_factor=1.8)[1] == []


def test_a_bad_open_alone_is_no_split() -> None:
    bars = _walk()
    open_ = bars["open"].to_numpy().copy()
    open_[SPLIT_AT] /= 2  # the close stays on the old scale
    assert (match_splits(open_, bars["close"].to_numpy()) < 0).all()


def test_every_ratio_and_its_reverse_is_matched() -> None:
    names = {s.name for s in SPLITS}
    for n, m in [(2, 1), (3, 2), (4, 3), (5, 4), (3, 1), (4, 1), (7, 1), (10, 1)]:
        assert {f"{n}:{m}", f"{m}:{n}"} <= names
    for index, split in enumerate(SPLITS):
        bars = _split(_walk(), split.factor)
        found = match_splits(bars["open"].to_numpy(), bars["close"].to_numpy())
        assert found.tolist() == [-1] * (SPLIT_AT - 1) + [index] + [-1] * (DAYS - SPLIT_AT - 1)


def test_the_bundled_sample_has_no_split(make_ctx) -> None:
    """Its five symbols hold no split in 2015-2017 (AAPL's 7:1 was in 2014): no flag at all."""
    for _, group in load_sample().sort_values(["symbol", "date"]).groupby("symbol"):
        found = match_splits(group["open"].to_numpy(), group["close"].to_numpy())
        assert (found < 0).all()
    result = run(make_ctx())
    assert result.quality_flags == 0
    assert datasets.read_manifest(make_ctx().store, result.version).quality_flags == []


def test_zero_volume_bars_are_flagged_and_kept(make_ctx, tmp_path) -> None:
    bars = _walk()
    bars.loc[[40, 41, 90], "volume"] = 0.0
    result, manifest, rows = _run_file(make_ctx, tmp_path, bars)
    flags = [(f["date"], f["rule"]) for f in manifest.quality_flags]
    assert flags == [("2017-02-27", "zero_volume"), ("2017-05-08", "zero_volume")]
    assert "volume is 0 on 2 bars, 2017-02-27 to 2017-02-28" in manifest.quality_flags[0]["detail"]
    assert "volume is 0 on 2017-05-08" in manifest.quality_flags[1]["detail"]
    assert result.quality_flags == 2 and result.quarantined == 0
    assert len(rows) == DAYS and (rows["volume"] == 0).sum() == 3
