"""`retrain_model` outside a cluster: the training runs here, for that model, audited."""

from __future__ import annotations

import json
from datetime import date

import pytest

pytestmark = pytest.mark.slow

AS_OF = date(2017, 5, 31)


def test_retrain_here_trains_that_model_and_writes_the_audit_row(tmp_path) -> None:
    from sqlalchemy import select

    from mlops.context import open_context
    from mlops.data_prep import stage as data_prep
    from mlops.db import migrate
    from mlops.db.engine import make_engine
    from mlops.db.schema import model_actions, stage_runs
    from mlops.orchestration import retrain_model
    from mlops.settings import load_settings

    settings = load_settings(
        MLOPS_HOME=str(tmp_path),
        DATABASE_URL=None,
        MLFLOW_TRACKING_URI=None,
        STORE_BACKEND="local",
        STORE_LOCAL_ROOT=None,
        DATA_SOURCE="sample",
        MODEL_CONFIG_PATH=None,
        SYMBOLS="",
        TRAIN_EPOCHS=1,
    )
    migrate.upgrade(make_engine(settings.db_url))
    ctx = open_context(settings)
    data_prep.run(ctx, as_of=AS_OF)
    outcome = retrain_model(
        ctx, "stock-close-mlp", actor="cli:tester", as_of=AS_OF, reason="try", runner="local"
    )
    assert outcome.runner == "local" and outcome.version == "1"
    mv = ctx.mlflow.get_model_version("stock-close-mlp", "1")
    assert mv.tags["dataset_version"].startswith("2017-05-31")
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(model_actions).order_by(model_actions.c.id)).mappings().all()
        trained = (
            conn.execute(select(stage_runs.c.status).where(stage_runs.c.stage == "train"))
            .scalars()
            .all()
        )
    # The retrain's own row, and the promotion gate's when the version became champion.
    (row,) = [r for r in rows if r["action"] == "retrain"]
    assert (row["actor"], row["model_name"], row["model_version"]) == (
        "cli:tester",
        "stock-close-mlp",
        "1",
    )
    gate = [(r["action"], r["actor"], r["model_version"]) for r in rows if r is not row]
    assert gate == ([("promote", "train", "1")] if outcome.promoted else [])
    assert json.loads(row["details"])["runner"] == "local"
    assert trained == ["succeeded"]
    ctx.engine.dispose()
