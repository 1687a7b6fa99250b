"""Issue 10 in data prep: future bars, DATA_COLUMN_MAP mistakes, finalize exactly once."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from mlops.contracts import datasets, keys
from mlops.data_prep import dataset as dataset_module
from mlops.data_prep.columns import ColumnMaps
from mlops.data_prep.sources import load_bars, load_sample
from mlops.data_prep.stage import run
from mlops.db.schema import datasets as datasets_table
from mlops.errors import ConfigError, DataError
from mlops.store import get_parquet
from mlops.symbols import NOT_A_SYMBOL

LAST = date(2017, 12, 29)


# Bars from the future.


def _with_future_bar(path: Path) -> None:
    sample = load_sample()
    aapl = sample[sample["symbol"] == "AAPL"].iloc[-1:].copy()
    aapl["date"] = pd.Timestamp("2030-01-02")
    pd.concat([sample, aapl]).to_csv(path, index=False)


def test_a_bar_dated_after_today_is_quarantined_not_published(make_ctx, tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    _with_future_bar(path)
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=str(path))
    result = run(ctx)  # no --as-of: the dataset is as of the newest valid day
    assert result.as_of == LAST
    assert result.version.startswith("2017-12-29-")
    assert result.stale_symbols == ["YHOO"]  # delisted in 2017; the others not made stale
    manifest, frame = datasets.load(ctx.store, result.version)
    assert frame["date"].max() == pd.Timestamp(LAST)
    quarantine = get_parquet(ctx.store, manifest.quarantine_key)
    (row,) = quarantine.itertuples()
    assert row.date == pd.Timestamp("2030-01-02") and row.symbol == "AAPL"
    assert row.reason.startswith("date is after today (")


def test_symbols_that_are_not_tickers_are_quarantined_not_published(
    make_ctx, tmp_path: Path
) -> None:
    """Issue 21: a file with ``../../EVIL`` and an SQL-looking symbol was published, then
    batch-infer failed on the 16-character column and the broker bought the quote."""
    sample = load_sample()
    tail = sample[sample["symbol"] == "AAPL"].iloc[-8:]
    bad = ["../../EVIL", "Q'\"X; DROP TABLE DATASETS;--", "SEVENTEEN-LETTERS"]
    extra = [tail.assign(symbol=symbol) for symbol in [*bad, "BRK.B"]]
    path = tmp_path / "bars.csv"
    pd.concat([sample, *extra]).to_csv(path, index=False)
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=str(path))
    result = run(ctx)
    manifest, frame = datasets.load(ctx.store, result.version)
    assert "BRK.B" in manifest.symbols and not set(bad) & set(manifest.symbols)
    assert not set(bad) & set(frame["symbol"].astype(str))
    quarantine = get_parquet(ctx.store, manifest.quarantine_key)
    assert sorted(set(quarantine["symbol"])) == sorted(bad)
    assert set(quarantine["reason"]) == {NOT_A_SYMBOL}
    assert result.quarantined == 3 * len(tail)


def test_symbols_setting_holds_tickers_only(make_settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SYMBOLS holds '\.\./\.\./EVIL', not a ticker"):
        make_settings(tmp_path, SYMBOLS="AAPL,../../EVIL")


def test_with_as_of_later_bars_are_not_known_yet_and_future_ones_quarantined(
    make_ctx, tmp_path: Path
) -> None:
    path = tmp_path / "bars.csv"
    _with_future_bar(path)
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=str(path))
    result = run(ctx, as_of=date(2017, 6, 1))
    assert result.as_of == date(2017, 6, 1)
    assert result.quarantined == 1  # 2030; the bars of 2017-06-02 .. 2017-12-29 are not bad
    _, frame = datasets.load(ctx.store, result.version)
    assert frame["date"].max() == pd.Timestamp("2017-06-01")


# DATA_COLUMN_MAP.


def _export(path: Path, rename: dict[str, str], drop: tuple[str, ...] = ()) -> None:
    frame = load_sample().drop(columns=list(drop)).rename(columns=rename)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def _files(make_settings, tmp_path: Path, location: Path, column_map: str):
    return make_settings(
        tmp_path, DATA_SOURCE="files", DATA_FILES=str(location), DATA_COLUMN_MAP=column_map
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("clsoe=Close", "'clsoe' is not a canonical column (did you mean close?)"),
        ("price=Close", "'price' is not a canonical column; the canonical columns are date"),
        ("close=Close,close=Adj Close", "close is mapped twice"),
        ("open=Price,high=Price,low=Price,close=Price", "open, high, low, close are all mapped"),
        ("close", "'close' is not canonical=column"),
        ("close=", "is not canonical=column"),
        ('{"close": ', "starts with '{' but is not JSON"),
        ('{"close": "Last", "open": 3}', "'open': 3"),
        ('["close"]', "its JSON must be an object"),
        ('{"b.csv": {"close": 3}}', "JSON entry for 'b.csv' must map canonical names"),
    ],
)
def test_column_map_mistakes_are_one_sentence_naming_the_setting(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ColumnMaps.parse(text)
    message = str(caught.value)
    assert message.startswith("Setting DATA_COLUMN_MAP is invalid: ")
    assert fragment in message and "\n" not in message


def test_column_map_is_checked_before_any_file_is_read(make_settings, tmp_path: Path) -> None:
    settings = _files(make_settings, tmp_path, tmp_path / "missing.csv", "clsoe=Close")
    with pytest.raises(ConfigError, match="did you mean close"):
        load_bars(settings)


def test_a_map_keeps_the_built_in_spellings_for_the_other_columns(
    make_settings, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    # "Ticker" and "Date" are built-in spellings; only the close needs naming.
    _export(path, {"symbol": "Ticker", "date": "Date", "close": "Last"})
    bars = load_bars(_files(make_settings, tmp_path, path, "close=Last"))
    pd.testing.assert_frame_equal(
        bars.sort_values(["symbol", "date"]).reset_index(drop=True),
        load_sample().sort_values(["symbol", "date"]).reset_index(drop=True),
    )


def test_per_file_maps_by_name_and_glob(make_settings, tmp_path: Path) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    sample = load_sample()
    for symbol, group in sample.groupby("symbol"):
        group = group.drop(columns="symbol")
        if symbol == "AAPL":  # one vendor names the close "Last"
            group.rename(columns={"close": "Last"}).to_csv(folder / "AAPL.csv", index=False)
        else:  # another names the volume "Shares" and the date "When"
            group.rename(columns={"volume": "Shares", "date": "When"}).to_parquet(
                folder / f"{symbol}_vendor2.parquet", index=False
            )
    text = "AAPL.csv: close=Last; *_vendor2.parquet: volume=Shares, date=When"
    bars = load_bars(_files(make_settings, tmp_path, folder, text))
    assert sorted(bars["symbol"].unique()) == sorted(sample["symbol"].unique())
    assert len(bars) == len(sample)
    as_json = (
        '{"AAPL.csv": {"close": "Last"}, "*_vendor2.parquet": {"volume": "Shares", "date": "When"}}'
    )
    again = load_bars(_files(make_settings, tmp_path, folder, as_json))
    pd.testing.assert_frame_equal(again, bars)


def test_a_section_matching_no_file_is_a_typo(make_settings, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    _export(path, {})
    settings = _files(make_settings, tmp_path, path, "exprot.csv: close=Last")
    with pytest.raises(ConfigError, match=r"section 'exprot.csv' matches none of the files"):
        load_bars(settings)


def test_mapped_column_missing_from_the_file_lists_its_columns(
    make_settings, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    _export(path, {"close": "Close"})
    with pytest.raises(ConfigError) as caught:
        load_bars(_files(make_settings, tmp_path, path, "close=Adj Close"))
    message = str(caught.value)
    assert "DATA_COLUMN_MAP maps close to 'Adj Close'" in message
    assert "(its columns: date, symbol, open, high, low, Close, volume)" in message


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_column_error_lists_the_file_columns(
    make_settings, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"export{suffix}"
    _export(path, {}, drop=("close",))
    with pytest.raises(DataError) as caught:
        load_bars(_files(make_settings, tmp_path, path, ""))
    message = str(caught.value)
    assert "has no column close (its columns: date, symbol, open, high, low, volume)" in message
    assert "DATA_COLUMN_MAP" in message


# Finalize exactly once.


def test_concurrent_finalizes_publish_one_dataset(make_ctx, tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    for index in (0, 1):  # both shards publish their share first
        shard = make_ctx(home=home, DATA_PREP_SHARDS=2, JOB_COMPLETION_INDEX=index)
        run(shard, as_of=LAST)
    # Undo what the second shard's own finalize published: two finalizers now race.
    ctx = make_ctx(home=home, DATA_PREP_SHARDS=2)
    version = datasets.latest_version(ctx.engine)
    ctx.store.delete(keys.manifest_key(version))
    with ctx.engine.begin() as conn:
        conn.execute(datasets_table.delete())

    both_checked = threading.Barrier(2, timeout=60)
    real_claim = dataset_module._claim

    def claim_together(*args, **kwargs):
        both_checked.wait()  # both saw no manifest; now both claim at once
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "_claim", claim_together)
    results: list = [None, None]
    errors: list = []

    def finalize(slot: int) -> None:
        try:
            own = make_ctx(home=home, DATA_PREP_SHARDS=2)
            results[slot] = run(own, as_of=LAST, finalize=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=finalize, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(r.new for r in results) == [False, True]  # exactly one published
    assert results[0].version == results[1].version == version
    with ctx.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(datasets_table)).scalar_one() == 1
    manifests = [k for k in ctx.store.list("datasets/features/") if k.endswith("/manifest.json")]
    assert [k for k in manifests if "/shards/" not in k] == [keys.manifest_key(version)]
