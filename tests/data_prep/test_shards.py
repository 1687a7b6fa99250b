"""Indexed Job shards: a stable split, one dataset for readers, finalize by hand or by the last."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_in_process
from mlops.contracts import datasets, keys
from mlops.data_prep.shards import Shard, stable_hash
from mlops.data_prep.stage import run
from mlops.errors import ConfigError, DataError

LAST = date(2017, 12, 29)
SYMBOLS = ["AAPL", "COKE", "GOOGL", "TSLA", "YHOO"]


def test_stable_hash_is_sha256_and_the_same_in_every_process() -> None:
    expected = int.from_bytes(hashlib.sha256(b"AAPL").digest()[:8], "big")
    assert stable_hash("AAPL") == expected
    code = "from mlops.data_prep.shards import stable_hash; print(stable_hash('AAPL'))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        assert int(out.stdout) == expected


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_every_symbol_is_in_exactly_one_shard(count: int) -> None:
    symbols = [f"S{i:04d}" for i in range(500)]
    owners = [[i for i in range(count) if Shard(i, count).owns(s)] for s in symbols]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(o == [i] for o in owners) for i in range(count)]
    assert min(sizes) > 500 / count * 0.7  # roughly even


def test_shard_settings_are_checked(make_settings, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, DATA_PREP_SHARDS=4, JOB_COMPLETION_INDEX=3)
    assert Shard.from_settings(settings) == Shard(3, 4)
    wrong = make_settings(tmp_path, DATA_PREP_SHARDS=4, JOB_COMPLETION_INDEX=4)
    with pytest.raises(ConfigError, match="JOB_COMPLETION_INDEX 4 must be below DATA_PREP_SHARDS"):
        Shard.from_settings(wrong)


@pytest.mark.parametrize("count", [2, 4])
def test_shards_publish_one_dataset_equal_to_the_unsharded_one(
    make_ctx, tmp_path: Path, count: int
) -> None:
    single = make_ctx(home=tmp_path / "single")
    expected_manifest, expected = datasets.load(single.store, run(single, as_of=LAST).version)

    home = tmp_path / "sharded"
    results = []
    for index in range(count):
        ctx = make_ctx(home=home, DATA_PREP_SHARDS=count, JOB_COMPLETION_INDEX=index)
        results.append(run(ctx, as_of=LAST))
    # Only the shard that completed the set published the dataset.
    assert [r.version is None for r in results] == [True] * (count - 1) + [False]
    assert [r.shard for r in results] == [f"{i}-of-{count}" for i in range(count)]
    final = results[-1]
    assert final.new and final.symbols == SYMBOLS

    manifest, frame = datasets.load(ctx.store, final.version)
    pd.testing.assert_frame_equal(frame, expected)
    assert manifest.shards == count
    assert manifest.stale_symbols == expected_manifest.stale_symbols == ["YHOO"]
    assert manifest.data_key == ""
    assert all(p["key"].startswith("datasets/features/shards/2017-12-29/") for p in manifest.parts)
    assert datasets.latest_version(ctx.engine) == final.version
    # Each shard holds only its own symbols.
    for index in range(count):
        part = json.loads(ctx.store.get_bytes(keys.shard_manifest_key(LAST, index, count)))[
            "contents"
        ]
        assert all(Shard(index, count).owns(s) for s in part["symbols"])


def test_an_empty_shard_still_reports(make_ctx, tmp_path: Path) -> None:
    # With 4 shards nothing of the sample lands on shard 2.
    assert not any(Shard(2, 4).owns(s) for s in SYMBOLS)
    ctx = make_ctx(DATA_PREP_SHARDS=4, JOB_COMPLETION_INDEX=2)
    result = run(ctx, as_of=LAST)
    assert (result.version, result.rows, result.symbols) == (None, 0, [])
    assert ctx.store.exists(keys.shard_manifest_key(LAST, 2, 4))


def test_sharded_run_needs_an_as_of(make_ctx) -> None:
    ctx = make_ctx(DATA_PREP_SHARDS=2, JOB_COMPLETION_INDEX=0)
    with pytest.raises(ConfigError, match="every shard needs the same --as-of"):
        run(ctx)


def test_finalize_names_the_missing_shards(make_ctx) -> None:
    ctx = make_ctx(DATA_PREP_SHARDS=3, JOB_COMPLETION_INDEX=1)
    run(ctx, as_of=LAST)
    with pytest.raises(DataError, match=r"Shards 0-of-3, 2-of-3 have not published for 2017-12-29"):
        run(ctx, as_of=LAST, finalize=True)
    assert ctx.store.list("datasets/features/2017") == []


def test_a_rerun_shard_replaces_its_share(make_ctx, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = [
        run(make_ctx(home=home, DATA_PREP_SHARDS=2, JOB_COMPLETION_INDEX=i), as_of=LAST)
        for i in (0, 1)
    ]
    again = run(make_ctx(home=home, DATA_PREP_SHARDS=2, JOB_COMPLETION_INDEX=0), as_of=LAST)
    assert (again.version, again.new) == (first[1].version, False)


def _cli(home: Path, env: dict[str, str], *args: str) -> tuple[int, dict | None, str]:
    """Run ``mlops``; returns (exit code, the --output JSON or None, stderr)."""
    output = home / "result.json"
    output.unlink(missing_ok=True)
    extra = ["--output", str(output)] if args[0] == "data-prep" else []
    done = run_in_process({**env, "MLOPS_HOME": str(home)}, *args, *extra, cwd=home)
    payload = json.loads(output.read_text()) if output.exists() else None
    return done.returncode, payload, done.stderr


def test_cli_shards_and_finalize(tmp_path: Path, subprocess_env) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = subprocess_env(DATA_PREP_SHARDS="2")
    day = ["--as-of", "2017-12-29"]
    assert _cli(home, env, "migrate")[0] == 0

    code, payload, err = _cli(home, {**env, "JOB_COMPLETION_INDEX": "0"}, "data-prep", *day)
    assert code == 0, err
    assert payload is not None and payload["version"] is None

    code, payload, err = _cli(home, env, "data-prep", "--finalize", *day)
    assert code == 3 and payload is None
    assert err.strip().splitlines() == [
        "error: Shards 1-of-2 have not published for 2017-12-29 yet; run them, then "
        "`mlops data-prep --finalize --as-of 2017-12-29`."
    ]

    code, payload, err = _cli(home, {**env, "JOB_COMPLETION_INDEX": "1"}, "data-prep", *day)
    assert code == 0, err
    version = payload["version"]
    assert version.startswith("2017-12-29-")

    code, payload, err = _cli(home, env, "data-prep", "--finalize", *day)
    assert code == 0, err
    assert (payload["version"], payload["new"], payload["rows"]) == (version, False, 3634)

    code, _, err = _cli(home, env, "data-prep", "--finalize")
    assert code == 2
    assert "--finalize needs --as-of" in err


def test_finalize_refuses_a_stale_source(make_ctx, tmp_path: Path) -> None:
    home = tmp_path / "home"
    late = date(2018, 3, 1)
    assert run(make_ctx(home=home, DATA_PREP_SHARDS=2, JOB_COMPLETION_INDEX=0), as_of=late)
    last = make_ctx(home=home, DATA_PREP_SHARDS=2, JOB_COMPLETION_INDEX=1)
    with pytest.raises(DataError, match="the source looks stale, so nothing was published"):
        run(last, as_of=late)
    assert last.store.list("datasets/features/2018") == []
