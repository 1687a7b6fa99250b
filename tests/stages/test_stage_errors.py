"""Bad input to train and batch-infer: one sentence, a non-zero exit, nothing left behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select

from conftest import run_in_process
from mlops.db.schema import predictions, stage_runs
from mlops.training.model_config import default_config_path


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The real command, in this process (Ludwig's import is paid once per session)."""
    return run_in_process(env, *args)


@pytest.fixture
def home(tmp_path: Path, subprocess_env) -> tuple[dict[str, str], Path]:
    env = subprocess_env(MLOPS_HOME=str(tmp_path))
    assert run(env, "migrate").returncode == 0
    assert run(env, "data-prep", "--as-of", "2017-05-31").returncode == 0
    return env, tmp_path


def _config(tmp_path: Path, change) -> Path:
    config = yaml.safe_load(default_config_path().read_text())
    change(config)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["combiner"].update(type="no-such-combiner"), "does not validate"),
        (lambda c: c["trainer"].update(epochs="many"), "does not validate"),
        (lambda c: c["output_features"][0].update(name="close"), "exactly one output feature"),
        (lambda c: c["input_features"].append({"name": "pe_ratio", "type": "number"}), "pe_ratio"),
    ],
)
def test_invalid_ludwig_config_stops_train_before_anything_is_logged(home, change, message):
    env, tmp_path = home
    env = {**env, "MODEL_CONFIG_PATH": str(_config(tmp_path, change))}
    result = run(env, "train", "--as-of", "2017-05-31")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Model config") and message in lines[0]
    # No MLflow run and no model: the config is checked before tracking starts.
    mlflow_db = tmp_path / "mlflow.db"
    if mlflow_db.exists():
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{mlflow_db}")
        assert client.search_registered_models() == []
        experiments = client.search_experiments()
        assert all(not client.search_runs([e.experiment_id]) for e in experiments)
    engine = create_engine(f"sqlite:///{tmp_path / 'mlops.db'}")
    with engine.connect() as conn:
        status = conn.execute(
            select(stage_runs.c.status, stage_runs.c.error).where(stage_runs.c.stage == "train")
        ).one()
    assert status[0] == "failed" and message in status[1]


def test_yaml_that_does_not_parse_is_one_sentence(home):
    env, tmp_path = home
    bad = tmp_path / "bad.yaml"
    bad.write_text("input_features: [\n  - name: x\n")
    result = run({**env, "MODEL_CONFIG_PATH": str(bad)}, "train")
    assert result.returncode == 2
    assert "is not valid YAML" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_batch_infer_without_a_champion_says_what_to_do(home):
    env, tmp_path = home
    result = run(env, "batch-infer")
    assert result.returncode == 4
    assert "has no 'champion' version yet: run `mlops train`" in result.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'mlops.db'}")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(predictions)).scalar_one() == 0
