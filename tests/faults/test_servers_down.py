"""A server is down (or hangs) before a stage starts: a bounded wait, said out loud, then one
sentence with its exit code; nothing written; the rerun, once the server is back, converges.
"""

from __future__ import annotations

from datetime import date

import pytest

from faults.conftest import (
    DAYS,
    assert_fails,
    assert_no_run_left_running,
    assert_ok,
)
from mlops.db.schema import monitoring_metrics, orders, trade_decisions

DAY = DAYS[-1].isoformat()  # 2017-06-02: a dataset, no predictions yet
TRADE_DAY = DAYS[1].isoformat()  # 2017-06-01: predictions, no trade yet

COMMANDS = {
    "data-prep": ["data-prep", "--as-of", "2017-06-05"],
    "train": ["train", "--as-of", "2017-05-31"],
    "batch-infer": ["batch-infer", "--as-of", DAY],
    "trade": ["trade", "--as-of", TRADE_DAY],
    "monitor": ["monitor", "--as-of", DAY],
}


def _written(world, stage: str) -> dict[str, int]:
    """What a stage writes, counted (to show a failed run wrote none of it)."""
    return {
        "datasets": len(world.dataset_versions()),
        "predictions": world.predictions_on(date.fromisoformat(DAY)),
        "decisions": world.count(trade_decisions),
        "orders": world.count(orders),
        "metrics": world.count(monitoring_metrics),
        "reports": len(world.s3_keys("reports/")),
        "prediction files": len(world.s3_keys("predictions/2017-06-02")),
    }


def _train_env(world, request) -> dict[str, str]:
    # A model of its own: the shared champion is left alone.
    return world.with_env(MODEL_NAME=f"m-{request.node.name[-40:]}".replace("[", "-").strip("]"))


@pytest.mark.parametrize("stage", list(COMMANDS))
def test_postgres_down_before(world, cli, stage) -> None:
    world.pg.kill()
    outcome = cli(world.env, *COMMANDS[stage])
    assert_fails(outcome, 6, "Database at", "did not answer after 2 attempts")
    assert any(
        "Database not answering" in line and "attempt 1 of 2" in line for line in outcome.lines
    )
    world.pg.restore()
    assert world.runs() == []  # nothing was recorded: the database was never reached
    if stage != "train":  # training converges in test_killed_during; it costs a fit
        assert_ok(cli(world.env, *COMMANDS[stage]))
        assert_no_run_left_running(world)


def _rerun_converges(world, cli, stage: str) -> None:
    """The server is back: the same command succeeds, and a second run writes nothing new."""
    assert_ok(cli(world.env, *COMMANDS[stage]))
    before = _written(world, stage)
    assert_ok(cli(world.env, *COMMANDS[stage]))
    assert _written(world, stage) == before
    assert_no_run_left_running(world)


@pytest.mark.parametrize("stage", list(COMMANDS))
def test_object_store_down_before(world, cli, stage, request) -> None:
    before = _written(world, stage)
    world.s3.kill()
    env = _train_env(world, request) if stage == "train" else world.env
    outcome = cli(env, *COMMANDS[stage])
    assert_fails(outcome, 7, "object store", "is not answering")
    assert any("Object store at" in line and "attempt 1 of 2" in line for line in outcome.lines)
    assert _written(world, stage) == before
    (run,) = world.runs(stage)
    assert run.status == "failed" and "is not answering" in run.error
    if stage == "train":  # the dataset is read before any MLflow run is made
        client = world.mlflow_client()
        experiment = client.get_experiment_by_name("faults")
        found = client.search_runs(
            [experiment.experiment_id], f"tags.mlops_stage_run = '{run.run_id}'"
        )
        assert found == []
    world.s3.restore()
    if stage != "train":  # training converges in test_killed_during; it costs a fit
        assert_ok(cli(world.env, *COMMANDS[stage]))
        assert_no_run_left_running(world)


@pytest.mark.parametrize("stage", ["train", "batch-infer", "monitor"])
def test_tracking_server_down_before(world, cli, stage, request) -> None:
    before = _written(world, stage)
    world.mlflow.kill()
    env = _train_env(world, request) if stage == "train" else world.env
    outcome = cli(env, *COMMANDS[stage])
    assert_fails(outcome, 8, "MLflow tracking server", "is not answering", "after 2 attempts")
    assert any("attempt 1 of 2" in line for line in outcome.lines)
    assert outcome.seconds < 60
    assert _written(world, stage) == before
    (run,) = world.runs(stage)
    assert run.status == "failed"
    world.mlflow.restore()
    if stage != "train":
        assert_ok(cli(world.env, *COMMANDS[stage]))
        assert_no_run_left_running(world)


@pytest.mark.parametrize("stage", ["data-prep", "trade"])
def test_stages_without_tracking_do_not_need_it(world, cli, stage) -> None:
    world.mlflow.kill()
    assert_ok(cli(world.env, *COMMANDS[stage]))
    assert_no_run_left_running(world)


def test_database_that_accepts_and_never_answers(world, cli) -> None:
    world.pg.blackhole()
    outcome = cli(world.env, *COMMANDS["batch-infer"])
    assert_fails(outcome, 6, "did not answer after 2 attempts", "timeout expired")
    assert outcome.seconds < 60  # 2 attempts of DATABASE_CONNECT_TIMEOUT_SECONDS=2, bounded
    world.pg.restore()
    _rerun_converges(world, cli, "batch-infer")


def test_object_store_that_accepts_and_never_answers(world, cli) -> None:
    world.s3.blackhole()
    env = world.with_env(S3_READ_TIMEOUT_SECONDS="1")
    outcome = cli(env, *COMMANDS["data-prep"])
    assert_fails(outcome, 7, "is not answering", "Read timeout")
    assert outcome.seconds < 60
    assert world.runs("data-prep")[0].status == "failed"
    world.s3.restore()
    _rerun_converges(world, cli, "data-prep")


def test_tracking_server_that_accepts_and_never_answers(world, cli) -> None:
    world.mlflow.blackhole()
    env = world.with_env(MLFLOW_TIMEOUT_SECONDS="1")
    outcome = cli(env, *COMMANDS["batch-infer"])
    assert_fails(outcome, 8, "is not answering (no answer within 1 s) after 2 attempts")
    assert outcome.seconds < 60
    world.mlflow.restore()
    _rerun_converges(world, cli, "batch-infer")
