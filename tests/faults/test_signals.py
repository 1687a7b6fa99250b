"""SIGTERM and kill -9 of every stage, in real processes, at the moment the stage writes.

The proxy holds the stage's write in flight (its SQL statement, or for training the
MLflow call right after the run is created), the test signals the process, then lets the
write through. SIGTERM (what Kubernetes sends at ``activeDeadlineSeconds`` or on
eviction): exit 143, one sentence, the run recorded ``failed: terminated by SIGTERM``,
an MLflow run ended ``KILLED``. kill -9: nothing can be recorded; the next command marks
the run ``abandoned`` with the reason, and training closes the MLflow run left open. In
both cases nothing half-written remains and the rerun converges.
"""

from __future__ import annotations

import signal
from datetime import date

import pytest

from faults.conftest import DAYS, Spawned, assert_no_run_left_running, assert_ok, wait_until
from mlops.db.schema import datasets, monitoring_metrics, trade_decisions

NEW_DAY = date(2017, 6, 5)

# stage -> (arguments, the statement held in flight, what must not be half-written)
STAGES = {
    "data-prep": (["data-prep", "--as-of", NEW_DAY.isoformat()], b"INTO datasets"),
    "batch-infer": (["batch-infer", "--as-of", DAYS[-1].isoformat()], b"INTO predictions"),
    "trade": (["trade", "--as-of", DAYS[1].isoformat()], b"INTO trade_decisions"),
    "monitor": (["monitor", "--as-of", DAYS[-1].isoformat()], b"INTO monitoring_metrics"),
}


def _written(world) -> dict[str, int]:
    return {
        "datasets": world.count(datasets, datasets.c.as_of == NEW_DAY),
        "predictions": world.predictions_on(DAYS[-1]),
        "decisions": world.count(trade_decisions),
        "metrics": world.count(monitoring_metrics),
    }


def _signal_while_held(proxy, spawned: Spawned, fired, signum: int) -> None:
    wait_until(lambda: fired.is_set() or spawned.process.poll() is not None, "the held write")
    assert spawned.process.poll() is None, spawned.err.read_text()
    spawned.signal(signum)
    if signum == signal.SIGKILL:
        spawned.process.wait(timeout=60)
    proxy.release()


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigterm_and_kill9_during_the_write(make_world, cli, spawn, stage) -> None:
    args, statement = STAGES[stage]
    term, kill = make_world(), make_world()
    before = _written(term)
    held = {w.database: w.pg.hold_when(statement) for w in (term, kill)}
    processes = {w.database: spawn(w.env, *args) for w in (term, kill)}
    _signal_while_held(term.pg, processes[term.database], held[term.database], signal.SIGTERM)
    _signal_while_held(kill.pg, processes[kill.database], held[kill.database], signal.SIGKILL)

    # SIGTERM: recorded, one sentence, exit 143, nothing written.
    outcome = processes[term.database].wait()
    assert outcome.code == 143, str(outcome)
    assert outcome.stdout == "" and "Traceback" not in outcome.stderr
    assert outcome.sentence == (
        f"error: mlops {stage} was terminated by SIGTERM; the run is recorded as failed, rerun it."
    )
    (run,) = term.runs(stage)
    assert (run.status, run.error) == ("failed", "terminated by SIGTERM")
    assert _written(term) == before

    # kill -9: the row stays "running" until the next command looks.
    killed = processes[kill.database].wait()
    assert killed.code == -signal.SIGKILL
    (run,) = kill.runs(stage)
    assert run.status == "running" and run.pid == processes[kill.database].pid
    assert _written(kill) == before

    for world in (term, kill):
        first = assert_ok(cli(world.env, *args))
        again = assert_ok(cli(world.env, *args))
        assert_no_run_left_running(world)
        if stage == "batch-infer":
            assert (first["new_rows"], again["new_rows"]) == (5, 0)
        if stage == "data-prep":
            assert (first["new"], again["new"]) == (True, False)
    abandoned = kill.runs(stage)[0]
    assert abandoned.status == "abandoned"
    assert f"its process (pid {processes[kill.database].pid} on" in abandoned.error
    assert "was killed (or crashed) before it could record its end" in abandoned.error
    assert _written(term) == _written(kill)  # both converged to the same state


def test_sigterm_and_kill9_of_training_as_it_registers(world, cli, spawn) -> None:
    """Two trainings side by side (two models), each stopped after its fit, as it asks the
    registry for its model: one by SIGTERM, one by kill -9. The reruns register the models
    already trained (no second fit) and leave no run open and no version twice."""
    models = {"term": "m-term", "kill": "m-kill"}
    holds = {
        k: world.mlflow.hold_when(f"registered-models/get?name={m}".encode())
        for k, m in models.items()
    }
    envs = {k: world.with_env(MODEL_NAME=m) for k, m in models.items()}
    days = {"term": DAYS[1].isoformat(), "kill": DAYS[0].isoformat()}  # two leases
    spawned = {k: spawn(envs[k], "train", "--as-of", days[k]) for k in models}
    wait_until(
        lambda: (
            all(h.is_set() for h in holds.values())
            or any(p.process.poll() is not None for p in spawned.values())
        ),
        "both trainings to reach the registry",
    )
    assert all(p.process.poll() is None for p in spawned.values())
    spawned["term"].signal(signal.SIGTERM)
    spawned["kill"].signal(signal.SIGKILL)
    spawned["kill"].process.wait(timeout=60)
    world.mlflow.release()
    outcome = spawned["term"].wait()
    assert outcome.code == 143, str(outcome)
    assert outcome.sentence.startswith("error: mlops train was terminated by SIGTERM")
    assert spawned["kill"].wait().code == -signal.SIGKILL

    client = world.mlflow_client()
    experiment = client.get_experiment_by_name("faults").experiment_id

    def mlflow_run(stage_run_id: str):
        (found,) = client.search_runs([experiment], f"tags.mlops_stage_run = '{stage_run_id}'")
        return found

    by_pid = {r.pid: r for r in world.runs("train")}
    term_run = by_pid[spawned["term"].pid]
    kill_run = by_pid[spawned["kill"].pid]
    assert (term_run.status, term_run.error) == ("failed", "terminated by SIGTERM")
    assert mlflow_run(term_run.run_id).info.status == "KILLED"
    assert kill_run.status == "running"  # nobody could record its end...
    assert mlflow_run(kill_run.run_id).info.status == "RUNNING"  # ...nor end its MLflow run
    for run in (term_run, kill_run):
        assert mlflow_run(run.run_id).data.tags["mlops_registration"] == "pending"

    for key in ("kill", "term"):
        result = assert_ok(cli(envs[key], "train", "--as-of", days[key]))
        earlier = term_run if key == "term" else kill_run
        assert result["run_id"] == mlflow_run(earlier.run_id).info.run_id  # no second fit
        assert not result["already_trained"]
        finished = client.get_run(result["run_id"])
        assert finished.info.status == "FINISHED"
        versions = client.search_model_versions(f"name = '{models[key]}'")
        assert [v.version for v in versions] == [result["model_version"]]
        again = assert_ok(cli(envs[key], "train", "--as-of", days[key]))
        assert again["already_trained"] and again["model_version"] == result["model_version"]
    statuses = {r.run_id: r.status for r in world.runs("train")}
    assert statuses[kill_run.run_id] == "abandoned"
    assert_no_run_left_running(world)
