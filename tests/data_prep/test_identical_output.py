"""Data prep's output is pinned: speed work must not change a bit of what it publishes.

The benchmark's own data (``benchmarks/data_prep_benchmark.py``'s random walks, one
Parquet file per symbol), a year of it, with what the stage has to find in real files: a
3:2 split, a gap, a jump, no-trade days, bad and duplicate rows, a symbol whose bars are
all bad, one symbol as CSV, a long-layout file, a symbol split over both layouts. Small
parts and row groups, so that part boundaries fall between and across batches. The
versions, quarantine keys and flags were printed by the stage before its speed-up
(commit 5c971ef); the sample's version is pinned in ``test_outcomes``.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.contracts import datasets
from mlops.data_prep import dataset, stage
from mlops.data_prep.stage import run

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "data_prep_benchmark.py"
AS_OF = date(2024, 12, 31)


def _benchmark_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("data_prep_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def _edit(folder: Path, symbol: str, change) -> None:  # type: ignore[no-untyped-def]
    path = folder / f"{symbol}.parquet"
    frame = change(pd.read_parquet(path))
    frame.to_parquet(path, index=False)


def _split(frame: pd.DataFrame) -> pd.DataFrame:
    prices = ["open", "high", "low", "close"]
    frame.loc[120:, prices] = frame.loc[120:, prices] * (2 / 3)
    frame.loc[120:, "volume"] = frame.loc[120:, "volume"] * 1.5
    return frame


def _bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[10, "high"] = frame.loc[10, "close"] * 0.9
    frame.loc[11, "volume"] = np.nan
    frame.loc[12, "open"] = -1.0
    return pd.concat([frame, frame.iloc[[40]]], ignore_index=True)  # a duplicate day


def _jump(frame: pd.DataFrame) -> pd.DataFrame:
    prices = ["open", "high", "low", "close"]
    frame.loc[200:, prices] = frame.loc[200:, prices] * 2.5
    return frame


def _zero_volume(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[30:31, "volume"] = 0.0
    return frame


def _all_bad(frame: pd.DataFrame) -> pd.DataFrame:
    frame["volume"] = -5.0
    return frame


def _universe(folder: Path) -> None:
    bench = _benchmark_module()
    bench.generate(folder, 14, 1, long_file=False)
    _edit(folder, "S00002", _split)
    _edit(folder, "S00003", lambda f: f.drop(index=range(50, 61)))  # a gap
    _edit(folder, "S00004", _zero_volume)
    _edit(folder, "S00005", _bad_rows)
    _edit(folder, "S00006", _jump)
    _edit(folder, "S00008", _all_bad)
    csv = pd.read_parquet(folder / "S00009.parquet")
    csv.to_csv(folder / "S00009.csv", index=False)
    (folder / "S00009.parquet").unlink()
    long_folder = folder.parent / "long"
    bench.generate(long_folder, 3, 1, long_file=True)  # symbols S00000 .. S00002, renamed
    long = pd.read_parquet(long_folder / "bars.parquet")
    long["symbol"] = long["symbol"].str.replace("S0000", "L")
    both = pd.read_parquet(folder / "S00010.parquet")  # S00010: half here, half there
    both.iloc[126:].to_parquet(folder / "S00010.parquet", index=False)
    long = pd.concat([long, both.iloc[:126].assign(symbol="S00010")], ignore_index=True)
    long.to_parquet(folder / "long.parquet", index=False)


@pytest.fixture
def universe(tmp_path: Path) -> Path:
    folder = tmp_path / "bars"
    _universe(folder)
    return folder


def test_the_benchmark_datas_dataset_is_unchanged(make_ctx, universe: Path, monkeypatch) -> None:
    monkeypatch.setattr(stage, "PART_ROWS", 700)  # a part every two or three symbols
    monkeypatch.setattr(dataset, "GROUP_ROWS", 300)
    monkeypatch.setattr(stage, "BATCH_ROWS", 1000)  # batches of four symbols or so
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=str(universe), QUALITY_MAX_BAD_SHARE=0.2)
    result = run(ctx, as_of=AS_OF)
    manifest, frame = datasets.load(ctx.store, result.version)
    assert result.version == "2024-12-31-bc3209de9bb2"
    assert [p["content_hash"][:12] for p in manifest.part_list] == [
        "8e9518d7ddc7",
        "5c6a5d788346",
        "04750282b11a",
        "7e6c0fada490",
        "3d632fa35aa1",
        "4f816ba935b2",
        "3c91fd2f2ce1",
        "85812c315831",
    ]
    assert result.quarantine_keys == [
        "quarantine/2024-12-31/2024-12-31-bc3209de9bb2-4765bfd96084.parquet"
    ]
    assert result.rows == len(frame) == 4017
    assert result.quarantined == 257
    assert result.skipped_symbols == {"S00008": "all 252 of its bars were quarantined"}
    assert [(f["symbol"], f["date"], f["rule"]) for f in manifest.quality_flags] == [
        ("S00002", "2024-07-01", "split"),
        ("S00003", "2024-04-09", "gap"),
        ("S00004", "2024-02-26", "zero_volume"),
        ("S00006", "2024-10-21", "jump"),
    ]


def test_a_replayed_day_and_a_sharded_run_are_unchanged(
    make_ctx, universe: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(stage, "PART_ROWS", 500)
    env = {"DATA_SOURCE": "files", "DATA_FILES": str(universe), "QUALITY_MAX_BAD_SHARE": 0.2}
    replay = run(make_ctx(home=tmp_path / "replay", **env), as_of=date(2024, 9, 30))
    home = tmp_path / "shards"
    shards = [
        run(make_ctx(home=home, DATA_PREP_SHARDS=2, JOB_COMPLETION_INDEX=i, **env), as_of=AS_OF)
        for i in (0, 1)
    ]
    assert (replay.version, replay.rows) == ("2024-09-30-30d87f96496a", 2961)
    assert replay.quarantine_keys == [
        "quarantine/2024-09-30/2024-09-30-30d87f96496a-5f475beba4d3.parquet"
    ]
    assert shards[0].version is None  # waiting for shard 1, which finalizes
    assert (shards[1].version, shards[1].rows) == ("2024-12-31-075eafa716ae", 4017)
    assert shards[1].quarantine_keys == [
        "quarantine/2024-12-31/shard-1-of-2-4765bfd9608410c5050d4e0d.parquet"
    ]
