"""Two common layouts through `mlops data-prep` (in process): a file of closes only (index
levels, fund prices: DATA_BARS=close_only) and a wide file of several symbols' columns side
by side (quantmod's ``AAPL.Open, ..., AAPL.Adjusted, MSFT.Open, ...``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_in_process
from mlops.contracts import datasets
from mlops.contracts.columns import CLOSE_FEATURE_COLUMNS, NOT_FROM_CLOSES
from mlops.data_prep.sources import load_sample
from mlops.data_prep.wide import layout
from mlops.errors import ConfigError

LAST = "2017-12-29"
OHLCV = ["open", "high", "low", "close", "volume"]


def _cli(home: Path, env: dict[str, str], *args: str) -> tuple[int, dict | None, list[str]]:
    """``mlops ARGS`` in this process: exit code, the JSON result (or None), the errors."""
    done = run_in_process({**env, "MLOPS_HOME": str(home)}, *args, cwd=home)
    payload = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return done.returncode, payload, errors


def _home(tmp_path: Path, name: str, env: dict[str, str]) -> Path:
    home = tmp_path / name
    home.mkdir()
    assert _cli(home, env, "migrate")[0] == 0
    return home


def _dataset(home: Path, version: str) -> tuple[datasets.Manifest, pd.DataFrame]:
    from mlops.store import LocalStore

    return datasets.load(LocalStore(home / "store"), version)


def test_a_file_of_closes_only_is_refused_with_the_way_out_then_prepared_as_close_only(
    tmp_path: Path, subprocess_env
) -> None:
    levels = load_sample()[["date", "symbol", "close"]]
    path = tmp_path / "levels.csv"
    levels.rename(columns=str.capitalize).to_csv(path, index=False)
    env = subprocess_env(DATA_SOURCE="files", DATA_FILES=str(path))
    home = _home(tmp_path, "home", env)

    # Bars are OHLCV by default: the refusal names the setting that reads closes alone.
    code, _, errors = _cli(home, env, "data-prep")
    assert code == 3 and errors == [
        f"error: {path} has no column open, high, low, volume (its columns: Date, Symbol, "
        "Close); if it holds closes only (index levels, fund prices), set "
        "DATA_BARS=close_only, otherwise name them with DATA_COLUMN_MAP, e.g. open=<column>."
    ]

    code, result, errors = _cli(home, {**env, "DATA_BARS": "close_only"}, "data-prep")
    assert code == 0 and not errors and result is not None
    assert (result["bars"], result["rows"], result["quarantined"]) == ("close_only", 3634, 0)
    manifest, frame = _dataset(home, result["version"])
    assert manifest.bars == "close_only"
    # No open, high, low or volume, and no feature made of them: left out, not faked.
    assert manifest.columns == [
        "date",
        "symbol",
        *CLOSE_FEATURE_COLUMNS,
        "warmup",
        "next_close",
        "next_return",
        "target_date",
    ]
    assert not set(manifest.columns) & {"open", "high", "low", "volume", *NOT_FROM_CLOSES}
    # Each remaining column is the one the full bars of the same days give.
    code, full, _ = _cli(home, subprocess_env(DATA_SOURCE="sample"), "data-prep")
    assert code == 0 and full is not None and full["bars"] == "ohlcv"
    _, whole = _dataset(home, full["version"])
    shared = [c for c in frame.columns if c != "next_up"]
    pd.testing.assert_frame_equal(frame[shared], whole[shared])


def _quantmod(bars: pd.DataFrame) -> pd.DataFrame:
    """``bars`` as quantmod writes merged series (``write.zoo``): an ``Index`` column of
    dates, then ``<SYMBOL>.Open ... <SYMBOL>.Adjusted``; a day a symbol has no bar is empty."""
    names = {c: c.capitalize() for c in OHLCV}
    if "adjusted_close" in bars.columns:
        names["adjusted_close"] = "Adjusted"
    wide = None
    for symbol, part in bars.groupby("symbol"):
        part = part.set_index("date")[list(names)]
        part.columns = [f"{symbol}.{names[c]}" for c in part.columns]
        wide = part if wide is None else wide.join(part, how="outer")
    assert wide is not None
    return wide.rename_axis("Index").reset_index()


def test_a_wide_file_gives_the_dataset_of_the_same_bars_in_the_long_layout(
    tmp_path: Path, subprocess_env
) -> None:
    bars = load_sample(adjusted=True)
    wide = _quantmod(bars)
    assert wide["YHOO.Close"].isna().sum() > 100  # delisted on 2017-06-16: empty after
    (tmp_path / "wide").mkdir()
    wide.to_csv(tmp_path / "wide" / "prices.csv", index=False)
    bars.to_csv(tmp_path / "long.csv", index=False)

    long_env = subprocess_env(DATA_SOURCE="files", DATA_FILES=str(tmp_path / "long.csv"))
    home = _home(tmp_path, "home", long_env)
    code, long, _ = _cli(home, long_env, "data-prep")
    assert code == 0 and long is not None and long["new"]

    env = subprocess_env(DATA_SOURCE="files", DATA_FILES=str(tmp_path / "wide"))
    code, result, errors = _cli(home, env, "data-prep")
    assert code == 0 and not errors and result is not None
    assert (result["version"], result["new"]) == (long["version"], False)  # the same rows
    assert result["symbols"] == ["AAPL", "COKE", "GOOGL", "TSLA", "YHOO"]
    assert result["adjusted_symbols"] == result["symbols"]  # from <SYMBOL>.Adjusted
    assert (result["rows"], result["quarantined"], result["stale_symbols"]) == (3634, 0, ["YHOO"])

    # A symbol without one of its columns: one sentence, exit 2, nothing published.
    broken = tmp_path / "broken.csv"
    wide.drop(columns="TSLA.Volume").to_csv(broken, index=False)
    code, _, errors = _cli(home, {**env, "DATA_FILES": str(broken)}, "data-prep")
    assert code == 2 and errors == [
        f"error: {broken} is a wide file without TSLA's volume column (e.g. TSLA.Volume): "
        "each symbol needs open, high, low, close, volume."
    ]
    assert [p.name for p in (home / "store" / "datasets" / "features").iterdir()] == [
        long["version"]
    ]


PREFIXED = ["AAPL.Open", "AAPL.High", "AAPL.Low", "AAPL.Close", "AAPL.Volume"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            ["Index", *PREFIXED[:4], "Volume"],
            "f.csv mixes columns with a symbol prefix (AAPL.Open, AAPL.High, AAPL.Low) and "
            "columns without one (Volume): in a wide file every price and volume column is "
            "SYMBOL.Column",
        ),
        (
            ["Date", "My Fund.Close", "My Fund.Open"],
            "f.csv has a column 'My Fund.Close' whose prefix 'My Fund' is not a ticker",
        ),
        (
            ["Date", *PREFIXED, "aapl.close"],
            "f.csv has two close columns for AAPL ('AAPL.Close' and 'aapl.close'): keep one.",
        ),
        (
            ["Date", "AAPL.Close", "MSFT.Close"],
            "f.csv is a wide file without AAPL's open, high, low, volume columns (e.g. "
            "AAPL.Open): each symbol needs open, high, low, close, volume (for closes only, "
            "set DATA_BARS=close_only).",
        ),
    ],
    ids=["mixed", "not-a-ticker", "twice", "closes-only"],
)
def test_wide_header_mistakes(columns: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        layout(columns, None, "f.csv")
    assert str(caught.value).startswith(message)


def test_wide_headers_read_as_such() -> None:
    # quantmod's Index is the date; BRK.B's columns are BRK.B's; close-only needs a close.
    found = layout(["Index", "BRK.B.Close", "SPY.Close"], None, "f.csv", close_only=True)
    assert found is not None and found.date == "Index"
    assert found.symbols == {"BRK.B": {"close": "BRK.B.Close"}, "SPY": {"close": "SPY.Close"}}
    # An ordinary file of one symbol with an extra dotted column is not wide.
    assert layout(["Date", *(c.capitalize() for c in OHLCV), "Prev.Close"], None, "f") is None
    assert layout(["date", "ticker", "AAPL.Close"], None, "f") is None  # a long file
