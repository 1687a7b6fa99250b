"""Training meets dying servers after the fit, one fault after another on the same model:
the registry is read as what it is (not as "no such model yet"), every MLflow run ends
with a status, and each rerun finishes the registration of the model already trained
instead of training again, with no orphan run and no duplicate version.
"""

from __future__ import annotations

import json

from faults.conftest import DAYS, assert_fails, assert_no_run_left_running, assert_ok

AS_OF = DAYS[0].isoformat()


def _mlflow_run_ids(world) -> list[str]:
    """The MLflow run each train stage run recorded (annotated when it made or resumed it)."""
    return [json.loads(r.details or "{}").get("mlflow_run_id", "") for r in world.runs("train")]


def test_servers_die_around_registration_and_reruns_finish_it(world, cli) -> None:
    model = "m-registry"
    env = world.with_env(MODEL_NAME=model)
    client = world.mlflow_client()

    # 1. The tracking server goes away when training asks the registry for the model.
    died = world.mlflow.kill_when(f"registered-models/get?name={model}".encode())
    first = cli(env, "train", "--as-of", AS_OF)
    assert died.is_set(), str(first)
    assert_fails(first, 8, "The MLflow tracking server is not answering")
    world.mlflow.restore()
    assert client.search_registered_models(f"name = '{model}'") == []  # no wrong "create"
    (stage_run,) = world.runs("train")
    assert stage_run.status == "failed" and "not answering" in stage_run.error
    (run_id,) = _mlflow_run_ids(world)
    trained = client.get_run(run_id)
    assert trained.info.status == "RUNNING"  # the server was gone: nobody could end it
    assert trained.data.tags["mlops_registration"] == "pending"

    # 2. The rerun registers that model (no new fit: same MLflow run); the server dies
    # again just after the version was created, before the run could say so.
    died = world.mlflow.kill_when(b"mlops_model_version")
    second = cli(env, "train", "--as-of", AS_OF)
    assert died.is_set(), str(second)
    assert_fails(second, 8, "not answering")
    world.mlflow.restore()
    versions = client.search_model_versions(f"name = '{model}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run_id)]
    assert client.get_run(run_id).data.tags["mlops_registration"] == "pending"

    # 3. The next rerun adopts that version; then Postgres dies as it answers the
    # retrain requests: the registration is complete, the stage run could not say so.
    died = world.pg.kill_when(b"UPDATE retrain_requests")
    third = cli(env, "train", "--as-of", AS_OF)
    assert died.is_set(), str(third)
    assert_fails(third, 6, "The database stopped answering")
    world.pg.restore()
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["mlops_registration"] == "done"
    assert finished.data.tags["mlops_model_version"] == "1"
    assert len(client.search_model_versions(f"name = '{model}'")) == 1

    # 4. The last rerun trains nothing and answers with that version.
    result = assert_ok(cli(env, "train", "--as-of", AS_OF))
    assert result["already_trained"]
    assert (result["run_id"], result["model_version"]) == (run_id, "1")
    assert len(client.search_model_versions(f"name = '{model}'")) == 1
    assert [r.status for r in world.runs("train")] == ["failed", "failed", "failed", "succeeded"]
    assert {i for i in _mlflow_run_ids(world) if i} == {run_id}  # one MLflow run in all
    assert_no_run_left_running(world)
