"""Serving and batch scoring run where neither torch nor Ludwig can be imported.

The serve and batch-infer images install neither (pyproject extras ``serve`` and
``infer``): each run here happens in a subprocess where importing them (and TA-Lib, and
for serving pyarrow) fails, as it would in those images, and must still give Ludwig's
numbers from the registered version's portable export.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference.torch_free import INFER_ABSENT, SERVE_ABSENT, SERVE_WHEN_READY, blocked, run
from inference.trained_model import INPUTS, Trained, copy_database

pytestmark = pytest.mark.slow


def _ludwig_closes(trained: Trained, rows) -> np.ndarray:
    import logging

    from ludwig.api import LudwigModel

    model = LudwigModel.load(
        str(trained.model_dirs[trained.versions[0]] / "model"),
        backend="local",
        logging_level=logging.ERROR,
    )
    predicted, _ = model.predict(rows[INPUTS].reset_index(drop=True))
    return rows["close"].to_numpy() * (1 + predicted["next_return_predictions"].to_numpy())


def test_serve_answers_without_torch_ludwig_or_pyarrow(trained, subprocess_env) -> None:
    trained.set_champion(trained.versions[0])
    rows = trained.scorable.tail(3).reset_index(drop=True)
    code = (
        blocked(SERVE_ABSENT)
        + SERVE_WHEN_READY
        + "    answer = client.post('/predict', json=records)\n"
        "print(json.dumps({'status': answer.status_code, 'body': answer.json()}))\n"
    )
    env = subprocess_env(MLOPS_HOME=str(trained.home), SERVE_POLL_SECONDS="0.2")
    result = run(code, env, rows[[*INPUTS, "close"]].to_json(orient="records"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == 200, out
    got = [p["predicted_close"] for p in out["body"]["predictions"]]
    np.testing.assert_allclose(got, _ludwig_closes(trained, rows), rtol=1e-8)


def test_batch_infer_scores_without_torch_or_ludwig(trained, subprocess_env, tmp_path) -> None:
    trained.set_champion(trained.versions[0])
    # A copy of the shared database: the predictions written here stay out of the others'.
    database = copy_database(trained, tmp_path / "mlops.db")
    code = blocked(INFER_ABSENT) + (
        "from mlops.cli import main\n"
        "sys.argv = ['mlops', 'batch-infer', '--as-of', '2017-05-31']\n"
        "main()\n"
    )
    env = subprocess_env(
        MLOPS_HOME=str(trained.home), DATABASE_URL=f"sqlite:///{database}", LOG_LEVEL="WARNING"
    )
    result = run(code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads(result.stdout[result.stdout.index("{") :])
    assert scored["model_version"] == trained.versions[0]
    assert len(scored["symbols"]) == 5
