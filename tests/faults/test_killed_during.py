"""A server dies while a stage runs, at the moment the stage writes its output: one sentence
and the right exit code, nothing half-written, the run recorded, and the rerun (the server
back) converges to exactly one copy of everything.
"""

from __future__ import annotations

from datetime import date

from faults.conftest import DAYS, assert_fails, assert_no_run_left_running, assert_ok
from mlops.db.schema import datasets, monitoring_metrics, orders, trade_decisions

DAY = DAYS[-1]  # 2017-06-02: a dataset, no predictions yet
TRADE_DAY = DAYS[1]  # 2017-06-01: predictions, no trade yet
NEW_DAY = date(2017, 6, 5)  # no dataset yet


def _statuses(world, stage: str) -> list[str]:
    return [r.status for r in world.runs(stage)]


# PostgreSQL dies mid-stage.


def test_postgres_dies_while_batch_infer_writes_predictions(world, cli) -> None:
    died = world.pg.kill_when(b"INTO predictions")
    outcome = cli(world.env, "batch-infer", "--as-of", DAY.isoformat())
    assert died.is_set()
    assert_fails(outcome, 6, "The database stopped answering")
    world.pg.restore()
    assert world.predictions_on(DAY) == 0  # the insert never committed
    assert world.s3_keys(f"predictions/{DAY}") == []
    result = assert_ok(cli(world.env, "batch-infer", "--as-of", DAY.isoformat()))
    assert result["new_rows"] == 5 and world.predictions_on(DAY) == 5
    assert _statuses(world, "batch-infer") == ["failed", "succeeded"]
    assert "stopped answering" in world.runs("batch-infer")[0].error
    assert_no_run_left_running(world)


def test_postgres_dies_while_data_prep_claims_its_dataset(world, cli) -> None:
    died = world.pg.kill_when(b"INTO datasets")
    outcome = cli(world.env, "data-prep", "--as-of", NEW_DAY.isoformat())
    assert died.is_set(), outcome
    assert_fails(outcome, 6, "The database stopped answering")
    world.pg.restore()
    # Parts may be in the store, but no manifest names them and no row points at them.
    assert [k for k in world.s3_keys(f"datasets/features/{NEW_DAY}") if "manifest" in k] == []
    assert world.count(datasets, datasets.c.as_of == NEW_DAY) == 0
    first = assert_ok(cli(world.env, "data-prep", "--as-of", NEW_DAY.isoformat()))
    again = assert_ok(cli(world.env, "data-prep", "--as-of", NEW_DAY.isoformat()))
    assert (first["new"], again["new"], again["version"]) == (True, False, first["version"])
    assert world.count(datasets, datasets.c.as_of == NEW_DAY) == 1
    assert _statuses(world, "data-prep") == ["failed", "succeeded", "succeeded"]


def test_postgres_dies_while_trade_records_decisions(world, cli) -> None:
    died = world.pg.kill_when(b"INTO trade_decisions")
    outcome = cli(world.env, "trade", "--as-of", TRADE_DAY.isoformat())
    assert died.is_set()
    assert_fails(outcome, 6, "The database stopped answering")
    world.pg.restore()
    first = assert_ok(cli(world.env, "trade", "--as-of", TRADE_DAY.isoformat()))
    decisions, placed = world.count(trade_decisions), world.count(orders)
    again = assert_ok(cli(world.env, "trade", "--as-of", TRADE_DAY.isoformat()))
    assert again["orders_placed"] == [] and world.count(orders) == placed
    assert world.count(trade_decisions) == decisions == len(first["decisions"])
    assert_no_run_left_running(world)


def test_postgres_dies_while_monitor_records_metrics(world, cli) -> None:
    died = world.pg.kill_when(b"INTO monitoring_metrics")
    outcome = cli(world.env, "monitor", "--as-of", DAY.isoformat())
    assert died.is_set()
    assert_fails(outcome, 6, "The database stopped answering")
    world.pg.restore()
    assert world.count(monitoring_metrics) == 0
    first = assert_ok(cli(world.env, "monitor", "--as-of", DAY.isoformat()))
    rows = world.count(monitoring_metrics)
    assert_ok(cli(world.env, "monitor", "--as-of", DAY.isoformat()))
    assert world.count(monitoring_metrics) == rows > 0 and first["evaluated"] == 5
    assert _statuses(world, "monitor") == ["failed", "succeeded", "succeeded"]


# The object store dies mid-stage.


def test_object_store_dies_while_data_prep_writes_its_manifest(world, cli) -> None:
    died = world.s3.kill_when(f"PUT /{world.bucket}/datasets/features/{NEW_DAY}".encode())
    outcome = cli(world.env, "data-prep", "--as-of", NEW_DAY.isoformat())
    assert died.is_set(), outcome
    assert_fails(outcome, 7, "object store", "is not answering")
    world.s3.restore()
    assert [k for k in world.s3_keys(f"datasets/features/{NEW_DAY}") if "manifest" in k] == []
    assert world.count(datasets, datasets.c.as_of == NEW_DAY) == 0  # the claim rolled back
    result = assert_ok(cli(world.env, "data-prep", "--as-of", NEW_DAY.isoformat()))
    assert world.dataset_versions().count(result["version"]) == 1
    assert _statuses(world, "data-prep") == ["failed", "succeeded"]


def test_object_store_dies_while_batch_infer_writes_its_batch(world, cli) -> None:
    died = world.s3.kill_when(f"PUT /{world.bucket}/predictions/{DAY}".encode())
    outcome = cli(world.env, "batch-infer", "--as-of", DAY.isoformat())
    assert died.is_set()
    assert_fails(outcome, 7, "is not answering")
    world.s3.restore()
    rerun = assert_ok(cli(world.env, "batch-infer", "--as-of", DAY.isoformat()))
    # The rows were in before the file: the rerun adds none and writes the file.
    assert rerun["new_rows"] == 0 and world.predictions_on(DAY) == 5
    assert world.s3_keys(f"predictions/{DAY}") == [rerun["store_key"]]
    assert _statuses(world, "batch-infer") == ["failed", "succeeded"]


def test_object_store_dies_while_monitor_writes_reports(world, cli) -> None:
    died = world.s3.kill_when(f"PUT /{world.bucket}/reports/monitoring/{DAY}".encode())
    outcome = cli(world.env, "monitor", "--as-of", DAY.isoformat())
    assert died.is_set()
    assert_fails(outcome, 7, "is not answering")
    world.s3.restore()
    assert world.count(monitoring_metrics) == 0  # metrics are recorded after the reports
    assert_ok(cli(world.env, "monitor", "--as-of", DAY.isoformat()))
    assert sorted(k.rsplit("/", 1)[1] for k in world.s3_keys(f"reports/monitoring/{DAY}")) == [
        "drift.html",
        "quality.html",
        "summary.json",
    ]
    assert_no_run_left_running(world)


# The tracking server dies mid-stage.


def test_tracking_server_dies_while_batch_infer_downloads_the_model(world, cli) -> None:
    died = world.mlflow.kill_when(b"GET /api/2.0/mlflow-artifacts/presigned/")
    outcome = cli(world.env, "batch-infer", "--as-of", DAY.isoformat())
    assert died.is_set(), str(outcome)
    assert_fails(outcome, 8, "The MLflow tracking server is not answering")
    world.mlflow.restore()
    assert world.predictions_on(DAY) == 0
    assert assert_ok(cli(world.env, "batch-infer", "--as-of", DAY.isoformat()))["new_rows"] == 5
    assert _statuses(world, "batch-infer") == ["failed", "succeeded"]


def test_tracking_server_dies_while_monitor_looks_up_the_champion(world, cli) -> None:
    died = world.mlflow.kill_when(b"registered-models/alias")
    outcome = cli(world.env, "monitor", "--as-of", DAY.isoformat())
    assert died.is_set()
    assert_fails(outcome, 8, "The MLflow tracking server is not answering")
    world.mlflow.restore()
    assert world.count(monitoring_metrics) == 0
    assert_ok(cli(world.env, "monitor", "--as-of", DAY.isoformat()))
    assert_no_run_left_running(world)
