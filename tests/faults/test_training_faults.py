"""Training meets a dying server after the fit: the registry is read as what it is (not as
"no such model yet"), every MLflow run ends with a status, and the rerun finishes the
registration of the model already trained instead of training again, with no orphan run
and no duplicate version.
"""

from __future__ import annotations

from faults.conftest import DAYS, assert_fails, assert_no_run_left_running, assert_ok

AS_OF = DAYS[0].isoformat()


def test_registry_dies_during_registration_and_the_rerun_finishes_it(world, cli) -> None:
    model = "m-registry"
    env = world.with_env(MODEL_NAME=model)
    client = world.mlflow_client()

    # 1. The registry goes away when training asks whether the model exists.
    died = world.mlflow.kill_when(f"registered-models/get?name={model}".encode())
    first = cli(env, "train", "--as-of", AS_OF)
    assert died.is_set()
    assert_fails(first, 8, "The MLflow tracking server is not answering")
    world.mlflow.restore()
    assert client.search_registered_models(f"name = '{model}'") == []  # no wrong "create"
    (stage_run,) = world.runs("train")
    assert stage_run.status == "failed" and "not answering" in stage_run.error
    run_id = _mlflow_run_id(world, stage_run.run_id)
    trained = client.get_run(run_id)
    assert trained.info.status == "RUNNING"  # the server was gone: nobody could end it
    assert trained.data.tags["mlops_registration"] == "pending"

    # 2. The rerun registers that model (no new fit); the server dies again just after
    # the version was created, before the run could say so.
    died = world.mlflow.kill_when(b"mlops_model_version")
    second = cli(env, "train", "--as-of", AS_OF)
    assert died.is_set()
    assert_fails(second, 8, "not answering")
    world.mlflow.restore()
    versions = client.search_model_versions(f"name = '{model}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run_id)]
    assert client.get_run(run_id).data.tags["mlops_registration"] == "pending"

    # 3. The next rerun adopts that version: still one version, the run FINISHED.
    result = assert_ok(cli(env, "train", "--as-of", AS_OF))
    assert (result["run_id"], result["model_version"]) == (run_id, "1")
    assert not result["already_trained"]
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["mlops_registration"] == "done"
    assert finished.data.tags["mlops_model_version"] == "1"
    assert len(client.search_model_versions(f"name = '{model}'")) == 1

    # 4. And once more: nothing to do.
    again = assert_ok(cli(env, "train", "--as-of", AS_OF))
    assert again["already_trained"] and again["model_version"] == "1"
    assert [r.status for r in world.runs("train")] == ["failed", "failed", "succeeded", "succeeded"]
    mine = [
        client.get_run(_mlflow_run_id(world, r.run_id))
        for r in world.runs("train")
        if _mlflow_run_id(world, r.run_id)
    ]
    assert {r.info.run_id for r in mine} == {run_id}  # one MLflow run for all four attempts
    assert_no_run_left_running(world)


def test_postgres_dies_after_registration_and_the_rerun_trains_nothing(world, cli) -> None:
    model = "m-pg-end"
    env = world.with_env(MODEL_NAME=model)
    died = world.pg.kill_when(b"UPDATE retrain_requests")
    first = cli(env, "train", "--as-of", AS_OF)
    assert died.is_set()
    assert_fails(first, 6, "The database stopped answering")
    world.pg.restore()
    client = world.mlflow_client()
    (version,) = client.search_model_versions(f"name = '{model}'")
    assert client.get_run(version.run_id).info.status == "FINISHED"
    result = assert_ok(cli(env, "train", "--as-of", AS_OF))
    assert result["already_trained"]
    assert (result["model_version"], result["run_id"]) == (version.version, version.run_id)
    assert len(client.search_model_versions(f"name = '{model}'")) == 1
    assert [r.status for r in world.runs("train")] == ["failed", "succeeded"]


def _mlflow_run_id(world, stage_run_id: str) -> str:
    """The MLflow run a stage run recorded in its details (annotated when it was created)."""
    import json

    (row,) = [r for r in world.runs("train") if r.run_id == stage_run_id]
    return json.loads(row.details or "{}").get("mlflow_run_id", "")
