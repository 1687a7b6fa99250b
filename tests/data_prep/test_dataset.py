"""Versioned datasets: multi-part manifests, integrity checks, the older one-file layout."""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict
from datetime import date

import pandas as pd
import pytest

from mlops.contracts import datasets, keys
from mlops.contracts.columns import with_direction
from mlops.data_prep import dataset, stage
from mlops.data_prep.features import compute_features
from mlops.data_prep.quality import check_bars
from mlops.data_prep.sources import load_sample
from mlops.data_prep.stage import run
from mlops.errors import DataError
from mlops.store import put_json, put_parquet

LAST = date(2017, 12, 29)


def test_one_part_dataset_layout_and_same_version_twice(make_ctx) -> None:
    ctx = make_ctx()
    first = run(ctx)
    manifest = datasets.read_manifest(ctx.store, first.version)
    assert manifest.data_key == f"datasets/features/{first.version}/data.parquet"
    assert [p["key"] for p in manifest.parts] == [manifest.data_key]
    assert manifest.quarantine_key is None and manifest.quarantine_keys == []
    assert sorted(ctx.store.list("")) == sorted([manifest.key, manifest.data_key])
    second = run(ctx)
    assert (second.version, second.new) == (first.version, False)
    assert sorted(ctx.store.list("")) == sorted([manifest.key, manifest.data_key])


def test_the_stage_gives_what_the_plain_functions_give(make_ctx) -> None:
    ctx = make_ctx()
    _, frame = datasets.load(ctx.store, run(ctx).version)
    expected = compute_features(check_bars(load_sample(), max_bad_share=0.01).good)
    # Loaded with its direction label (derived at load, never stored).
    pd.testing.assert_frame_equal(frame, with_direction(expected))


def test_many_parts_load_as_one_frame(make_ctx, tmp_path, monkeypatch) -> None:
    single = make_ctx(home=tmp_path / "single")
    _, expected = datasets.load(single.store, run(single).version)

    monkeypatch.setattr(stage, "PART_ROWS", 1600)
    ctx = make_ctx(home=tmp_path / "parts")
    manifest, frame = datasets.load(ctx.store, run(ctx).version)
    # About 754 rows a symbol: two symbols fit in 1600 rows, a symbol is never split.
    assert [p["rows"] for p in manifest.parts] == [753 + 754, 754 + 754, 619]
    assert manifest.data_key == ""
    assert [p["key"].rsplit("/", 1)[1] for p in manifest.parts] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert sum(p["rows"] for p in manifest.parts) == manifest.rows == len(expected)
    pd.testing.assert_frame_equal(frame, expected)


def test_a_part_that_does_not_match_its_manifest_is_refused(make_ctx) -> None:
    ctx = make_ctx()
    version = run(ctx).version
    manifest = datasets.read_manifest(ctx.store, version)
    frame = pd.read_parquet(io.BytesIO(ctx.store.get_bytes(manifest.data_key)))
    put_parquet(ctx.store, manifest.data_key, frame.iloc[:-1])
    with pytest.raises(DataError, match=r"holds 3633 rows but its manifest says 3634"):
        datasets.load(ctx.store, version)


def test_schema_1_manifests_still_load(make_ctx) -> None:
    """A manifest written before parts existed names one ``data_key``."""
    ctx = make_ctx()
    frame = compute_features(check_bars(load_sample(), max_bad_share=0.01).good)
    key = "datasets/features/2017-12-29-abcdef123456/data.parquet"
    put_parquet(ctx.store, key, frame)
    old = {
        "version": "2017-12-29-abcdef123456",
        "as_of": "2017-12-29",
        "content_hash": dataset.content_hash(frame),
        "rows": len(frame),
        "symbols": sorted(frame["symbol"].unique()),
        "first_date": "2015-01-02",
        "last_date": "2017-12-29",
        "data_key": key,
        "columns": list(frame.columns),
        "source": "sample",
        "created_at": "2025-01-01T00:00:00+00:00",
        "schema_version": 1,
        "quarantined_rows": 0,
        "quarantine_key": None,
    }
    put_json(ctx.store, keys.manifest_key(old["version"]), old)
    manifest, loaded = datasets.load(ctx.store, old["version"])
    assert manifest.schema_version == 1 and manifest.stale_symbols == []
    pd.testing.assert_frame_equal(loaded, with_direction(frame))


def test_publish_of_a_frame_still_works(make_ctx) -> None:
    ctx = make_ctx()
    frame = compute_features(check_bars(load_sample(), max_bad_share=0.01).good)
    quarantine = load_sample().head(2).assign(reason="test")
    manifest, new = dataset.publish(
        ctx.store, ctx.engine, frame, as_of=LAST, source="test", quarantine=quarantine
    )
    assert new and manifest.quarantined_rows == 2
    # Named by content: a rerun with other bad rows keeps both files.
    assert re.fullmatch(
        rf"quarantine/2017-12-29/{manifest.version}-[0-9a-f]{{12}}\.parquet",
        manifest.quarantine_key or "",
    )
    assert datasets.latest_version(ctx.engine, LAST) == manifest.version
    again, new_again = dataset.publish(ctx.store, ctx.engine, frame, as_of=LAST, source="test")
    assert (again.version, new_again) == (manifest.version, False)
    loaded = datasets.load(ctx.store, manifest.version)[1]
    pd.testing.assert_frame_equal(loaded, with_direction(frame))
    assert json.loads(ctx.store.get_bytes(manifest.key)) == asdict(manifest)
    with pytest.raises(DataError, match="No rows to publish"):
        dataset.publish(ctx.store, ctx.engine, frame.iloc[:0], as_of=LAST, source="test")


def test_data_prep_on_s3(make_ctx, s3_endpoint, s3_bucket) -> None:
    """The same layout on an S3 store (moto on loopback), sharded."""
    env = {
        "STORE_BACKEND": "s3",
        "S3_BUCKET": s3_bucket,
        "S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "DATA_PREP_SHARDS": 2,
    }
    results = [run(make_ctx(**env, JOB_COMPLETION_INDEX=i), as_of=LAST) for i in (0, 1)]
    ctx = make_ctx(**env)
    manifest, frame = datasets.load(ctx.store, results[1].version)
    assert len(frame) == 3634 and manifest.shards == 2
    assert ctx.store.uri(manifest.key).startswith(f"s3://{s3_bucket}/datasets/features/")
