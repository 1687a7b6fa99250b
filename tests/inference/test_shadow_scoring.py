"""Batch inference scores every catalog model's champion and challenger, in shadow."""

from __future__ import annotations

import shutil
from datetime import date

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from inference.shadow import OTHER_MODEL, shadow_home
from inference.trained_model import Trained
from mlops.contracts import keys
from mlops.contracts.models import ARCHIVED, STATUS_TAG, move_champion
from mlops.db.schema import predictions
from mlops.errors import ModelError

DAY = date(2017, 6, 1)
pytestmark = pytest.mark.slow


def _stored(ctx) -> pd.DataFrame:
    with ctx.engine.connect() as conn:
        frame = pd.read_sql(select(predictions).where(predictions.c.prediction_date == DAY), conn)
    return frame.sort_values(["model_name", "model_version", "symbol"]).reset_index(drop=True)


def _roles(frame: pd.DataFrame) -> dict[tuple[str, str], set[str]]:
    return {
        (str(name), str(version)): set(group["role"])
        for (name, version), group in frame.groupby(["model_name", "model_version"])
    }


def test_champion_and_challengers_of_every_model_are_scored_once(trained: Trained, tmp_path):
    from mlops.inference import stage

    home = shadow_home(trained, tmp_path)
    ctx, v1, v2 = home.ctx, home.champion, home.challenger
    try:
        home.prepare(DAY)
        first = stage.run(ctx, as_of=DAY)
        again = stage.run(ctx, as_of=DAY)
        stored = _stored(ctx)
        # A promotion during the day: the rerun writes nothing new but moves the roles.
        move_champion(ctx.mlflow, "stock-close", ctx.settings.champion_alias, v2)
        promoted = stage.run(ctx, as_of=DAY)
        after = _stored(ctx)
        keys_found = set(ctx.store.list(f"predictions/{DAY.isoformat()}/"))
    finally:
        home.close()
    assert [(s.model_name, s.model_version, s.role, s.new_rows) for s in first.scored] == [
        ("stock-close", v1, "champion", 5),
        ("stock-close", v2, "challenger", 5),
        (OTHER_MODEL, "1", "champion", 5),
    ]
    assert (first.model_name, first.model_version, first.new_rows) == ("stock-close", v1, 15)
    assert first.store_key == keys.predictions_key(DAY, "stock-close", v1)
    assert first.failed == [] and again.new_rows == 0
    assert _roles(stored) == {
        ("stock-close", v1): {"champion"},
        ("stock-close", v2): {"challenger"},
        (OTHER_MODEL, "1"): {"champion"},
    }
    # Two seeds, two models: the challenger's predictions are its own.
    v1_close = stored[(stored.model_name == "stock-close") & (stored.model_version == v1)]
    v2_close = stored[(stored.model_name == "stock-close") & (stored.model_version == v2)]
    assert not np.allclose(v1_close["predicted_close"], v2_close["predicted_close"])
    mlp = stored[stored.model_name == OTHER_MODEL]
    np.testing.assert_allclose(mlp["predicted_close"], v1_close["predicted_close"])
    assert keys_found == {
        keys.predictions_key(DAY, "stock-close", v1),
        keys.predictions_key(DAY, "stock-close", v2),
        keys.predictions_key(DAY, OTHER_MODEL, "1"),
    }
    assert promoted.model_version == v2 and promoted.new_rows == 0
    assert [s.role for s in promoted.scored] == ["champion", "champion"]
    assert _roles(after) == {
        ("stock-close", v1): {"challenger"},
        ("stock-close", v2): {"champion"},
        (OTHER_MODEL, "1"): {"champion"},
    }


def test_an_archived_challenger_is_not_scored(trained: Trained, tmp_path):
    from mlops.inference import stage

    home = shadow_home(trained, tmp_path)
    try:
        home.ctx.mlflow.set_model_version_tag("stock-close", home.challenger, STATUS_TAG, ARCHIVED)
        home.prepare(DAY)
        result = stage.run(home.ctx, as_of=DAY)
    finally:
        home.close()
    assert [(s.model_name, s.role) for s in result.scored] == [
        ("stock-close", "champion"),
        (OTHER_MODEL, "champion"),
    ]


def test_a_broken_shadow_version_fails_the_command_after_the_others_are_written(
    trained: Trained, tmp_path
):
    from mlops.inference import stage

    home = shadow_home(trained, tmp_path)
    ctx = home.ctx
    broken = tmp_path / "broken-model"
    shutil.copytree(trained.model_dirs[home.champion], broken)
    for weights in broken.rglob("*"):
        if weights.is_file() and weights.name != "MLmodel":
            weights.write_bytes(b"not a model")
    try:
        bad = home.register(OTHER_MODEL, broken.as_uri(), None, "challenger")
        home.prepare(DAY)
        with pytest.raises(ModelError) as info:
            stage.run(ctx, as_of=DAY)
        stored = _stored(ctx)
    finally:
        home.close()
    message = str(info.value)
    assert info.value.exit_code == 4
    assert f"{OTHER_MODEL} version {bad} (challenger) failed" in message
    assert f"`mlops models archive {OTHER_MODEL} {bad}`" in message
    assert "\n" not in message
    # Every other version was written, the trading champion first.
    result = info.value.result  # type: ignore[attr-defined]
    assert [(s.model_name, s.model_version) for s in result.scored] == [
        ("stock-close", home.champion),
        ("stock-close", home.challenger),
        (OTHER_MODEL, "1"),
    ]
    assert len(result.failed) == 1
    assert set(_roles(stored)) == {
        ("stock-close", home.champion),
        ("stock-close", home.challenger),
        (OTHER_MODEL, "1"),
    }


def test_an_archived_trading_champion_is_refused_with_a_sentence(trained: Trained, tmp_path):
    """An alias set by hand on an archived version (issue 19's race left one): nothing is
    scored, `mlops batch-infer` exits 4 naming the version and how to move the alias."""
    from conftest import run_in_process
    from inference.trained_model import PINNED

    home = shadow_home(trained, tmp_path)
    ctx = home.ctx
    try:
        ctx.mlflow.set_model_version_tag("stock-close", home.champion, STATUS_TAG, ARCHIVED)
        home.prepare(DAY)
        env = {k: str(v) for k, v in PINNED.items() if v is not None}
        env["MLOPS_HOME"] = str(ctx.settings.mlops_home)
        done = run_in_process(env, "batch-infer", "--as-of", DAY.isoformat())
        stored = _stored(ctx)
    finally:
        home.close()
    assert done.returncode == ModelError.exit_code == 4, done.stderr
    sentence = done.stderr.strip()
    assert "\n" not in sentence and done.stdout == ""
    assert f"Model stock-close's champion points at version {home.champion}" in sentence
    assert "archived" in sentence
    assert "`mlops models promote stock-close VERSION" in sentence
    assert "`mlops models rollback stock-close`" in sentence
    assert stored.empty


def test_another_models_archived_champion_is_not_scored_and_named(trained: Trained, tmp_path):
    from mlops.inference import stage

    home = shadow_home(trained, tmp_path)
    try:
        home.ctx.mlflow.set_model_version_tag(OTHER_MODEL, "1", STATUS_TAG, ARCHIVED)
        home.prepare(DAY)
        with pytest.raises(ModelError) as info:
            stage.run(home.ctx, as_of=DAY)
    finally:
        home.close()
    result = info.value.result  # type: ignore[attr-defined]
    assert [(s.model_name, s.role) for s in result.scored] == [
        ("stock-close", "champion"),
        ("stock-close", "challenger"),
    ]
    (refused,) = result.failed
    assert f"Model {OTHER_MODEL}'s champion points at version 1, which is archived" in refused
    assert info.value.exit_code == 4
