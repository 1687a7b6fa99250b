"""What a run did not put into the dataset is visible: its own quarantine (also on a rerun
of published data), skipped symbols, the refused rows; the sample's version is stable."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd

from mlops.contracts import datasets, keys
from mlops.data_prep.sources import load_sample
from mlops.data_prep.stage import run
from mlops.store import get_parquet, put_json

LAST = date(2017, 12, 29)
SAMPLE_VERSION = "2017-12-29-9195ff992219"  # published since before issue 20


def _future_bar(frame: pd.DataFrame) -> pd.DataFrame:
    bar = frame.iloc[-1:].copy()
    bar["date"] = pd.Timestamp("2030-01-02")
    return pd.concat([frame, bar], ignore_index=True)


def test_the_samples_dataset_version_is_unchanged(make_ctx, tmp_path: Path) -> None:
    """Its AdjClose is not used by default, so its prices, hash and version stay as they were."""
    result = run(make_ctx())
    assert result.version == SAMPLE_VERSION
    assert result.adjusted_symbols == [] and result.skipped_symbols == {}
    adjusted = run(make_ctx(home=tmp_path / "adjusted", DATA_ADJUST_PRICES="always"))
    assert adjusted.version != SAMPLE_VERSION  # AAPL's and COKE's dividends
    assert adjusted.adjusted_symbols == ["AAPL", "COKE", "GOOGL", "TSLA", "YHOO"]


def test_a_rerun_of_published_data_writes_and_reports_its_own_quarantine(
    make_ctx, tmp_path: Path
) -> None:
    path = tmp_path / "bars.csv"
    load_sample().to_csv(path, index=False)
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=str(path))
    first = run(ctx)
    assert first.quarantined == 0

    _future_bar(load_sample()).to_csv(path, index=False)  # a typo'd bar added to the file
    again = run(ctx)
    # The clean rows are the same: the same dataset, not published again ...
    assert (again.version, again.new) == (first.version, False)
    # ... but this run's bad row is counted as its own and written where it says.
    assert again.quarantined == 1
    assert first.quarantine_keys == []
    (key,) = again.quarantine_keys
    assert key.startswith(f"quarantine/2017-12-29/{first.version}-")
    rows = get_parquet(ctx.store, key)
    assert len(rows) == 1 and rows["reason"].iloc[0].startswith("date is after today (")
    assert rows["date"].iloc[0] == pd.Timestamp("2030-01-02")
    # The manifest is immutable: it still tells the first run's story.
    manifest = datasets.read_manifest(ctx.store, first.version)
    assert manifest.quarantined_rows == 0 and manifest.quarantine_keys == []

    before = sorted(ctx.store.list(""))
    third = run(ctx)  # the same bad row again: the same file, nothing new
    assert (third.quarantined, third.quarantine_keys) == (1, [key])
    assert sorted(ctx.store.list("")) == before


def test_an_unknown_symbol_is_listed_in_the_result_and_the_manifest(make_ctx, tmp_path) -> None:
    ctx = make_ctx(SYMBOLS="AAPL,NOPE")
    result = run(ctx)
    assert result.symbols == ["AAPL"]
    assert result.skipped_symbols == {"NOPE": "the source has no bars for it"}
    manifest = datasets.read_manifest(ctx.store, result.version)
    assert manifest.skipped_symbols == result.skipped_symbols
    assert manifest.schema_version == datasets.SCHEMA_VERSION == 4
    # The same rows without the unknown symbol asked for are another dataset version.
    assert run(make_ctx(home=tmp_path / "plain", SYMBOLS="AAPL")).version != result.version


def test_skipped_for_every_reason(make_ctx, tmp_path: Path) -> None:
    sample = load_sample()
    late = sample[(sample["symbol"] == "TSLA") & (sample["date"] >= "2016-01-01")]
    broken = sample[sample["symbol"] == "COKE"].nsmallest(3, "date").assign(volume=-1.0)
    frame = pd.concat([sample[sample["symbol"] == "AAPL"], late, broken], ignore_index=True)
    path = tmp_path / "bars.csv"
    frame.to_csv(path, index=False)
    env = {"DATA_SOURCE": "files", "DATA_FILES": str(path), "QUALITY_MAX_BAD_SHARE": 0.05}
    result = run(make_ctx(SYMBOLS="AAPL,TSLA,COKE,NOPE", **env), as_of=date(2015, 12, 31))
    assert result.symbols == ["AAPL"]
    assert result.skipped_symbols == {
        "COKE": "all 3 of its bars were quarantined",
        "NOPE": "the source has no bars for it",
        "TSLA": "it has no bar on or before 2015-12-31",
    }


def test_an_unknown_alphavantage_symbol_is_skipped_visibly(make_ctx, av_env) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,NOSUCH"}))
    result = run(ctx, as_of=LAST)
    assert result.skipped_symbols == {"NOSUCH": "Alpha Vantage does not know it"}
    manifest = datasets.read_manifest(ctx.store, result.version)
    assert manifest.skipped_symbols == result.skipped_symbols


def test_sharded_skipped_symbols_reach_the_dataset(make_ctx, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"DATA_PREP_SHARDS": 2, "SYMBOLS": "AAPL,COKE,GOOGL,TSLA,YHOO,NOPE"}
    results = [run(make_ctx(home=home, **env, JOB_COMPLETION_INDEX=i), as_of=LAST) for i in (0, 1)]
    final = results[1]
    assert final.skipped_symbols == {"NOPE": "the source has no bars for it"}
    manifest = datasets.read_manifest(make_ctx(home=home).store, final.version)
    assert manifest.skipped_symbols == final.skipped_symbols


def test_manifests_of_schema_2_and_of_newer_code_still_load(make_ctx) -> None:
    ctx = make_ctx()
    version = run(ctx).version
    payload = json.loads(ctx.store.get_bytes(keys.manifest_key(version)))
    old = {k: v for k, v in payload.items() if k not in {"skipped_symbols", "adjusted_symbols"}}
    put_json(ctx.store, keys.manifest_key(version), old | {"schema_version": 2})
    manifest = datasets.read_manifest(ctx.store, version)
    assert manifest.schema_version == 2 and manifest.skipped_symbols == {}
    put_json(ctx.store, keys.manifest_key(version), payload | {"a_later_field": [1]})
    assert datasets.read_manifest(ctx.store, version) == datasets.Manifest(**payload)
