"""`mlops train` over the model catalog with real Ludwig training, a real MLflow registry
(the embedded SQLite store) and the real command: every bundled model trains, exports its
portable form and is registered under its own name; a paused model is skipped by `--all`;
the promotion gate moves the champion with an audit row, keeps a challenger, and reports
Diebold-Mariano p-values in the result, the run, the version's tags and promotion.json.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import select

from mlops.contracts.models import CHALLENGER_ALIAS, PAUSED_TAG, champion, champion_stack
from mlops.db.schema import model_actions, stage_runs
from training.conftest import AS_OF, BUNDLED, CLASSIFIERS

pytestmark = pytest.mark.slow


def _audit(world, name: str) -> list:
    with world.engine().connect() as conn:
        return list(
            conn.execute(
                select(model_actions)
                .where(model_actions.c.model_name == name)
                .order_by(model_actions.c.id)
            )
        )


def test_train_all_registers_every_catalog_model_under_its_own_name(world):
    client = world.client()
    results = world.trained["models"]
    assert [r["model_name"] for r in results] == list(BUNDLED)  # the trading model first
    for result in results:
        name, version = result["model_name"], result["model_version"]
        assert version == "1" and not result["already_trained"]
        tags = client.get_model_version(name, version).tags
        assert tags["model_name"] == name
        # The gate's metric: MAPE, a direction classifier's log loss (against the base rate).
        metric = "log_loss" if name in CLASSIFIERS else "mape"
        assert tags["promotion_metric"] == metric
        shown = ("log_loss", "accuracy", "auc", "brier") if name in CLASSIFIERS else ("wmape",)
        for figure in {metric, *shown}:
            assert float(tags[f"holdout_{figure}"]) == pytest.approx(
                result["holdout"][figure], abs=1e-6
            )
        assert float(tags[f"baseline_holdout_{metric}"]) == pytest.approx(
            result["baseline"][metric], abs=1e-6
        )
        p_naive = result["dm_p_value_naive"]
        assert 0.0 <= p_naive <= 1.0
        assert float(tags["dm_p_value_naive"]) == pytest.approx(p_naive, rel=1e-5)
        assert "dm_p_value_champion" not in tags and result["dm_p_value_champion"] is None
        assert tags["promotion_reason"] == result["reason"]
        assert f"Diebold-Mariano p {p_naive:.4f}" in result["reason"]

        run = client.get_run(result["run_id"])
        assert run.data.tags["mlops_model_name"] == name
        assert run.data.params["model_name"] == name
        assert run.data.metrics["dm_p_value_naive"] == pytest.approx(p_naive)
        assert (run.data.metrics["dm_statistic_naive"] < 0) == (p_naive < 0.5)
        promotion = json.loads(_artifact_text(client, result["run_id"], "promotion.json"))
        assert promotion["diebold_mariano"]["dm_p_value_naive"] == pytest.approx(p_naive)
        assert promotion["p_value_naive"] == pytest.approx(p_naive)
        # The portable export was checked against LudwigModel.predict and logged.
        portable = client.list_artifacts(result["run_id"], "model/portable")
        assert {a.path.rsplit("/", 1)[-1] for a in portable} >= {"portable.json", "portable.npz"}

        # The gate's decision, as the registry and the audit table hold it.
        alias = champion(client, name, "champion")
        challenger = champion(client, name, CHALLENGER_ALIAS)
        beats_naive = result["holdout"][metric] < result["baseline"][metric]
        assert result["promoted"] == beats_naive  # first version: no champion to beat
        assert (alias.version if alias else None) == (version if result["promoted"] else None)
        assert (challenger.version if challenger else None) == (
            version if result["challenger"] else None
        )
        audit = _audit(world, name)
        assert [(a.actor, a.action, a.model_version, a.reason) for a in audit] == (
            [("train", "promote", version, result["reason"])] if result["promoted"] else []
        )
    with world.engine().connect() as conn:
        (details,) = conn.execute(
            select(stage_runs.c.details).where(stage_runs.c.stage == "train")
        ).one()
    assert [m["model_name"] for m in json.loads(details)["models"]] == list(BUNDLED)


def _artifact_text(client, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


def test_a_paused_model_is_skipped_by_all_but_trained_by_model(world):
    client = world.client()
    client.set_registered_model_tag("stock-close-mlp", PAUSED_TAG, "true")
    try:
        outcome = world.cli("train", "--all", "--as-of", AS_OF)
        assert outcome.code == 0, str(outcome)
        results = outcome.json()["models"]
        assert [r["model_name"] for r in results] == [
            "stock-close",
            "stock-close-pooled",
            "stock-direction",
        ]
        assert all(r["already_trained"] and r["model_version"] == "1" for r in results)
        first = {r["model_name"]: r["holdout"] for r in world.trained["models"]}
        for r in results:  # read back from the run: the figures, the holdout IC among them
            assert r["holdout"] == first[r["model_name"]] and "rank_ic_mean" in r["holdout"]
        assert "Model stock-close-mlp is paused" in outcome.stderr
        # Asked for by name, a paused model is trained (here: already trained, answered).
        one = world.cli("train", "--model", "stock-close-mlp", "--as-of", AS_OF)
        assert one.code == 0, str(one)
        assert one.json()["model_name"] == "stock-close-mlp" and one.json()["already_trained"]
    finally:
        client.delete_registered_model_tag("stock-close-mlp", PAUSED_TAG)
    assert [str(v.version) for v in client.search_model_versions("name = 'stock-close-mlp'")] == [
        "1"
    ]


def test_the_gate_promotes_with_an_audit_row_then_keeps_a_challenger(world, own_catalog):
    env = {**own_catalog(gate_a="stock-close-pooled"), "TRAIN_EPOCHS": "20"}
    client = world.client()

    # 1. The first version of a model that beats the naive forecast becomes its champion.
    first = world.cli("train", "--model", "gate-a", "--as-of", AS_OF, **env)
    assert first.code == 0, str(first)
    v1 = first.json()
    assert v1["model_name"] == "gate-a"
    assert v1["holdout"]["mape"] < v1["baseline"]["mape"], "precondition: v1 beats naive"
    assert v1["promoted"] and not v1["challenger"] and v1["model_version"] == "1"
    assert champion(client, "gate-a", "champion").version == "1"
    assert champion_stack(client, "gate-a") == ["1"]
    promoted = client.get_model_version("gate-a", "1").tags
    assert (promoted["promotion"], promoted["mlops_promoted_by"]) == ("promoted", "train")
    (row,) = _audit(world, "gate-a")
    assert (row.actor, row.action, row.model_version, row.reason) == (
        "train",
        "promote",
        "1",
        v1["reason"],
    )
    details = json.loads(row.details)
    assert float(details["dm_p_value_naive"]) == pytest.approx(v1["dm_p_value_naive"], rel=1e-5)
    assert details["previous"] is None
    # Only gate-a was trained: the bundled models have still one version each.
    for name in BUNDLED:
        assert len(client.search_model_versions(f"name = '{name}'")) == 1

    # 2. Another seed, with significance required at a level nothing reaches: not promoted,
    # compared with the champion on the same days, kept as the challenger.
    second = world.cli(
        "train", "--model", "gate-a", "--as-of", AS_OF,
        **env, RANDOM_SEED="7", PROMOTION_MAX_P_VALUE="0.000001",
    )  # fmt: skip
    assert second.code == 0, str(second)
    v2 = second.json()
    assert v2["model_version"] == "2" and not v2["promoted"]
    assert v2["holdout"]["mape"] < v2["baseline"]["mape"], "precondition: v2 beats naive"
    assert v2["challenger"] and v2["champion_version"] == "1"
    p_champion = v2["dm_p_value_champion"]
    assert 0.0 <= p_champion <= 1.0
    assert "Diebold-Mariano p" in v2["reason"]
    assert "not significantly" in v2["reason"] or "does not beat the champion" in v2["reason"]
    tags = client.get_model_version("gate-a", "2").tags
    assert float(tags["dm_p_value_champion"]) == pytest.approx(p_champion, rel=1e-5)
    assert tags["promotion"] == "rejected"
    metrics = client.get_run(v2["run_id"]).data.metrics
    assert metrics["dm_p_value_champion"] == pytest.approx(p_champion)
    assert "dm_statistic_champion" in metrics and "champion_holdout_mape" in metrics
    assert champion(client, "gate-a", "champion").version == "1"
    assert champion(client, "gate-a", CHALLENGER_ALIAS).version == "2"
    assert len(_audit(world, "gate-a")) == 1  # no promotion, no row

    # 3. Rerunning the first training trains nothing and writes nothing.
    again = world.cli("train", "--model", "gate-a", "--as-of", AS_OF, **env)
    assert again.code == 0, str(again)
    assert again.json()["already_trained"] and again.json()["model_version"] == "1"
    assert len(client.search_model_versions("name = 'gate-a'")) == 2
    assert len(_audit(world, "gate-a")) == 1


def test_all_tries_every_model_and_names_the_ones_that_failed(world, own_catalog):
    env = own_catalog(stock_close="stock-close", stock_close_pooled="stock-close-pooled")
    models = Path(env["MODEL_CONFIGS_DIR"])
    text = (models / "stock-close.yaml").read_text()
    (models / "broken.yaml").write_text(
        text.replace(
            "  - name: symbol\n    type: category\n", "  - name: pe_ratio\n    type: number\n"
        )
    )
    outcome = world.cli("train", "--all", "--as-of", AS_OF, **env)
    assert outcome.code == 2, str(outcome)  # the failure's class: a configuration error
    (sentence,) = outcome.errors
    assert sentence.startswith(
        "error: 1 model(s) failed to train (stock-close, stock-close-pooled trained): broken: "
    )
    assert "pe_ratio" in sentence
    result = json.loads(outcome.stdout)  # the models that did train are still reported
    assert [r["model_name"] for r in result["models"]] == ["stock-close", "stock-close-pooled"]
    assert all(r["already_trained"] for r in result["models"])
    assert list(result["failed"]) == ["broken"]


def test_unknown_model_and_contradictory_options_are_one_sentence(world):
    unknown = world.cli("train", "--model", "no-such-model")
    assert unknown.code == 2, str(unknown)
    assert unknown.errors == [
        "error: No model named 'no-such-model' in the catalog; known: stock-close, "
        "stock-close-mlp, stock-close-pooled, stock-direction."
    ]
    both = world.cli("train", "--model", "stock-close", "--all")
    assert both.code == 2, str(both)
    assert both.errors == ["error: Give either --model NAME or --all to `mlops train`, not both."]
