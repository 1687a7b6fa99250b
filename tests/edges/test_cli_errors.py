"""The real ``mlops`` command in a subprocess: clear one-line errors, nothing half-published."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from mlops.data_prep.sources import sample_path
from mlops.db.schema import datasets, stage_runs

SAMPLE = sample_path()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def mlops(home: Path, subprocess_env: Callable[..., dict[str, str]]) -> Callable[..., Result]:
    """``mlops("data-prep", ENV=value, ...)``: run the real CLI with MLOPS_HOME=home."""

    def run(*args: str, **env: str) -> Result:
        completed = subprocess.run(
            [sys.executable, "-m", "mlops.cli", *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=home,
            env=subprocess_env(MLOPS_HOME=str(home), **env),
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)

    return run


def _ok(result: Result) -> Result:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _dataset_rows(url: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(datasets.c.version, datasets.c.rows))]
    finally:
        engine.dispose()


def _sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'mlops.db'}"


def _assert_one_clear_line(result: Result, *fragments: str) -> str:
    assert result.returncode != 0
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in line
    return line


def _prep_json(home: Path, name: str = "result.json") -> tuple[Path, list[str]]:
    output = home / name
    return output, ["data-prep", "--output", str(output)]


def test_data_prep_before_migrate_says_run_migrate(mlops, home: Path) -> None:
    result = mlops("data-prep")
    _assert_one_clear_line(result, "`mlops migrate`")
    assert not (home / "store" / "datasets").exists()


def test_migrate_then_data_prep_publishes(mlops, home: Path) -> None:
    migrated = _ok(mlops("migrate"))
    assert "revision" in migrated.stdout
    output, args = _prep_json(home)
    result = _ok(mlops(*args))
    payload = json.loads(output.read_text())
    assert payload["version"].startswith(payload["as_of"])
    assert payload["new"] is True
    assert payload["version"] in result.stdout
    # stdout ends with the same JSON the --output file holds.
    assert result.stdout.rstrip().endswith(output.read_text().rstrip())
    assert (
        home / "store" / "datasets" / "features" / payload["version"] / "manifest.json"
    ).is_file()
    assert _dataset_rows(_sqlite_url(home)) == [(payload["version"], payload["rows"])]


def test_data_prep_twice_gives_same_version(mlops, home: Path) -> None:
    _ok(mlops("migrate"))
    first_out, first_args = _prep_json(home, "first.json")
    second_out, second_args = _prep_json(home, "second.json")
    _ok(mlops(*first_args))
    _ok(mlops(*second_args))
    first = json.loads(first_out.read_text())
    second = json.loads(second_out.read_text())
    assert first["version"] == second["version"]
    assert (first["new"], second["new"]) == (True, False)
    assert _dataset_rows(_sqlite_url(home)) == [(first["version"], first["rows"])]
    manifests = list((home / "store" / "datasets" / "features").glob("*/manifest.json"))
    assert len(manifests) == 1


def _without_close(path: Path) -> None:
    lines = SAMPLE.read_text().splitlines()[:200]
    header = lines[0].split(",")
    drop = {i for i, name in enumerate(header) if name.strip().lower() in {"close", "adjclose"}}
    rows = [",".join(v for i, v in enumerate(line.split(",")) if i not in drop) for line in lines]
    path.write_text("\n".join(rows) + "\n")


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _ragged(path: Path) -> None:
    path.write_text("date,symbol,open,high,low,close,volume\n2017-01-03,AAPL,1,2\n" + "x," * 40)


def _no_numbers(path: Path) -> None:
    lines = ["date,symbol,open,high,low,close,volume"]
    lines += [f"2017-01-{d:02d},AAPL,n/a,n/a,n/a,n/a,n/a" for d in range(2, 28)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("name", "make", "fragments"),
    [
        ("no_close.csv", _without_close, ["no column close"]),
        ("garbage.csv", _garbage, ["garbage.csv", "cannot be read"]),
        ("garbage.parquet", _garbage, ["garbage.parquet", "cannot be read"]),
        ("ragged.csv", _ragged, ["ragged.csv", "cannot be read"]),
        ("no_numbers.csv", _no_numbers, ["quality gate", "nothing was published"]),
    ],
    ids=["missing-close-column", "binary-csv", "binary-parquet", "ragged-csv", "all-rows-bad"],
)
def test_malformed_file_publishes_nothing(
    mlops, home: Path, tmp_path: Path, name: str, make, fragments: list[str]
) -> None:
    _ok(mlops("migrate"))
    bad = tmp_path / name
    make(bad)
    result = mlops("data-prep", DATA_SOURCE="files", DATA_FILES=str(bad))
    _assert_one_clear_line(result, *fragments)
    assert result.returncode == 3  # DataError
    assert not (home / "store" / "datasets").exists()
    assert _dataset_rows(_sqlite_url(home)) == []
    # The failure is recorded with its reason.
    engine = create_engine(_sqlite_url(home))
    try:
        with engine.connect() as conn:
            runs = conn.execute(select(stage_runs.c.status, stage_runs.c.error)).all()
    finally:
        engine.dispose()
    assert [status for status, _ in runs] == ["failed"]
    assert fragments[0] in runs[0][1]


def test_missing_data_files_setting_is_a_config_error(mlops) -> None:
    result = mlops("data-prep", DATA_SOURCE="files")
    _assert_one_clear_line(result, "DATA_FILES")
    assert result.returncode == 2


def test_data_prep_on_s3_and_postgres(
    mlops, home: Path, s3_endpoint: str, s3_bucket: str, fresh_pg_database: str
) -> None:
    env = {
        "STORE_BACKEND": "s3",
        "S3_BUCKET": s3_bucket,
        "S3_ENDPOINT_URL": s3_endpoint,
        # Dummy credentials for moto.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "DATABASE_URL": fresh_pg_database,
    }
    before = mlops("data-prep", **env)
    _assert_one_clear_line(before, "`mlops migrate`")

    _ok(mlops("migrate", **env))
    output, args = _prep_json(home)
    _ok(mlops(*args, **env))
    payload = json.loads(output.read_text())
    version = payload["version"]

    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert f"datasets/features/{version}/manifest.json" in keys
    assert f"datasets/features/{version}/data.parquet" in keys
    manifest = json.loads(
        client.get_object(Bucket=s3_bucket, Key=f"datasets/features/{version}/manifest.json")[
            "Body"
        ].read()
    )
    assert manifest["version"] == version
    assert manifest["rows"] == payload["rows"]

    assert _dataset_rows(fresh_pg_database) == [(version, payload["rows"])]
    # Nothing was written locally.
    assert not (home / "store").exists()
    assert not (home / "mlops.db").exists()
