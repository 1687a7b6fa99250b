"""Files as input: CSV or Parquet, long layout or one file per symbol, with a column map."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops.contracts import datasets
from mlops.data_prep import sources
from mlops.data_prep.shards import Shard
from mlops.data_prep.sources import iter_bars, load_bars, load_sample
from mlops.data_prep.stage import run
from mlops.errors import DataError

THEIRS = {
    "date": "trade_day",
    "symbol": "sym",
    "open": "o",
    "high": "h",
    "low": "l",
    "close": "c",
    "volume": "vol",
}
COLUMN_MAP = ",".join(f"{ours}={theirs}" for ours, theirs in THEIRS.items())


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["symbol", "date"]).reset_index(drop=True)


def _theirs(frame: pd.DataFrame) -> pd.DataFrame:
    """The sample as a user's export: their own column names, an extra column, shuffled."""
    out = frame.rename(columns=THEIRS).assign(note="x")
    out["trade_day"] = out["trade_day"].dt.strftime("%Y-%m-%d")
    return out.sample(frac=1.0, random_state=3)


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_long_layout_with_column_map(make_settings, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"export{suffix}"
    _write(_theirs(load_sample()), path)
    settings = make_settings(
        tmp_path, DATA_SOURCE="files", DATA_FILES=str(path), DATA_COLUMN_MAP=COLUMN_MAP
    )
    pd.testing.assert_frame_equal(_sorted(load_bars(settings)), _sorted(load_sample()))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_one_file_per_symbol_with_column_map(make_settings, tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    sample = load_sample()
    for symbol, group in sample.groupby("symbol"):
        mine = _theirs(group).drop(columns="sym")
        # AAPL comes in two files, by year: the name up to "_" is the symbol.
        if symbol == "AAPL":
            year = pd.to_datetime(mine["trade_day"]).dt.year
            _write(mine[year < 2017], folder / f"{symbol}_2015-2016{suffix}")
            _write(mine[year == 2017], folder / f"{symbol}_2017{suffix}")
        else:
            _write(mine, folder / f"{symbol.lower()}{suffix}")
    settings = make_settings(
        tmp_path, DATA_SOURCE="files", DATA_FILES=str(folder), DATA_COLUMN_MAP=COLUMN_MAP
    )
    frames = list(iter_bars(settings))
    expected = [[s] for s in sorted(set(sample["symbol"]))]
    assert [f["symbol"].unique().tolist() for f in frames] == expected  # one symbol per frame
    pd.testing.assert_frame_equal(_sorted(pd.concat(frames)), _sorted(sample))


def test_common_column_names_need_no_map(make_settings, tmp_path: Path) -> None:
    """The bundled sample's own layout (Date, Open, ..., AdjClose, Stock) is recognised as is."""
    settings = make_settings(tmp_path, DATA_SOURCE="files", DATA_FILES=str(sources.sample_path()))
    expected = load_sample(adjusted=True)
    assert expected.columns[-1] == "adjusted_close"
    pd.testing.assert_frame_equal(_sorted(load_bars(settings)), _sorted(expected))


def test_symbols_setting_limits_the_load(make_settings, tmp_path: Path, caplog) -> None:
    settings = make_settings(tmp_path, SYMBOLS="aapl, TSLA,NOPE")
    bars = load_bars(settings)
    assert sorted(bars["symbol"].unique()) == ["AAPL", "TSLA"]
    assert any("NOPE" in r.getMessage() for r in caplog.records)


def test_large_long_files_are_regrouped_by_symbol_through_buckets(
    make_settings, tmp_path: Path, monkeypatch
) -> None:
    """Read in small chunks, split into bucket files; each symbol still comes whole, once."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", 250)
    monkeypatch.setattr(sources, "BUCKET_ROWS", 600)
    sample = load_sample()
    half = len(sample) // 2
    shuffled = sample.sample(frac=1.0, random_state=1)
    folder = tmp_path / "long"
    folder.mkdir()
    shuffled.iloc[:half].to_parquet(folder / "a.parquet", index=False)
    shuffled.iloc[half:].to_csv(folder / "b.csv", index=False)
    written: list[Path] = []
    original = sources._SymbolBuckets._bucket_frames

    def spy(self):  # type: ignore[no-untyped-def]
        written.extend(sorted(self.folder.glob("bucket-*.parquet")))
        yield from original(self)

    monkeypatch.setattr(sources._SymbolBuckets, "_bucket_frames", spy)
    settings = make_settings(tmp_path, DATA_SOURCE="files", DATA_FILES=str(folder))
    frames = list(iter_bars(settings))
    assert len(written) > 1  # really spilled to more than one bucket
    symbols = [f["symbol"].unique().tolist() for f in frames]
    assert sorted(s for (s,) in symbols) == sorted(sample["symbol"].unique())
    pd.testing.assert_frame_equal(_sorted(pd.concat(frames)), _sorted(sample))


def test_a_shard_reads_only_its_own_symbols_files(make_settings, tmp_path: Path) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    for symbol, group in load_sample().groupby("symbol"):
        group.drop(columns="symbol").to_csv(folder / f"{symbol}.csv", index=False)
    # COKE belongs to shard 0 of 2; the others to shard 1. Break COKE's file.
    assert Shard(0, 2).owns("COKE") and not Shard(1, 2).owns("COKE")
    (folder / "COKE.csv").write_bytes(b"date,open\n\x00\x01garbage")
    settings = make_settings(tmp_path, DATA_SOURCE="files", DATA_FILES=str(folder))
    frames = list(iter_bars(settings, shard=Shard(1, 2)))
    assert sorted(f["symbol"].iloc[0] for f in frames) == ["AAPL", "GOOGL", "TSLA", "YHOO"]
    with pytest.raises(DataError, match=r"COKE\.csv"):
        list(iter_bars(settings, shard=Shard(0, 2)))


def test_rows_without_symbol_are_quarantined_not_dropped(make_ctx, tmp_path: Path) -> None:
    sample = load_sample()
    sample["symbol"] = sample["symbol"].astype(object)
    sample.loc[sample.index[:3], "symbol"] = ""
    path = tmp_path / "bars.csv"
    sample.to_csv(path, index=False)
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=str(path))
    manifest = datasets.read_manifest(ctx.store, run(ctx).version)
    assert manifest.quarantined_rows == 3


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "cannot be read"),
        (b"date,symbol,open,high,low,close,volume\n", "holds no rows"),
        (b"when,symbol,open,high,low,close,volume\n2017-01-03,A,1,2,1,1,1\n", "no column date"),
    ],
    ids=["empty-file", "header-only", "missing-column"],
)
def test_unusable_files_fail_with_one_sentence(
    make_settings, tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "bars.csv"
    path.write_bytes(content)
    settings = make_settings(tmp_path, DATA_SOURCE="files", DATA_FILES=str(path))
    with pytest.raises(DataError, match=fragment):
        list(iter_bars(settings))


def test_timezone_aware_dates_become_trading_days(make_settings, tmp_path: Path) -> None:
    sample = load_sample()
    sample["date"] = sample["date"].dt.tz_localize("America/New_York")
    path = tmp_path / "bars.parquet"
    sample.to_parquet(path, index=False)
    settings = make_settings(tmp_path, DATA_SOURCE="files", DATA_FILES=str(path))
    pd.testing.assert_frame_equal(_sorted(load_bars(settings)), _sorted(load_sample()))


def test_an_unnamed_first_column_is_called_unnamed_0(make_settings, tmp_path: Path) -> None:
    """Dates written as a frame's index (no header) are mapped by pandas' name for them."""
    path = tmp_path / "AAPL.csv"
    aapl = load_sample().query("symbol == 'AAPL'").drop(columns="symbol").set_index("date")
    aapl.to_csv(path, index_label="")  # the header starts with ",open,high,..."
    assert path.read_text().startswith(",open,")
    for text in ("date=Unnamed: 0", "AAPL.csv: date=Unnamed: 0", '{"date": "Unnamed: 0"}'):
        settings = make_settings(
            tmp_path, DATA_SOURCE="files", DATA_FILES=str(path), DATA_COLUMN_MAP=text
        )
        bars = load_bars(settings)
        assert len(bars) == len(aapl) and bars["date"].notna().all()
