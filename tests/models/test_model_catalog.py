"""`mlops models create` and `delete`: a Ludwig YAML checked before anything is trained or
stored, kept in the store's catalog where training finds it; a version or a whole model
deleted from the registry and the stored catalog, under the model's lock, the audit kept.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import run_in_process
from mlops import model_catalog
from mlops.contracts import catalog
from mlops.contracts.catalog import packaged_dir
from mlops.contracts.keys import stored_config_key
from mlops.contracts.models import CHALLENGER_ALIAS, champion_stack, registered_tags, version_ref
from mlops.errors import ConfigError
from mlops.store import open_store

from .conftest import Registry

CONFIG = (packaged_dir() / "stock-close-mlp.yaml").read_text()


def _env(r: Registry, folder: Path) -> dict[str, str]:
    return {
        "MLOPS_HOME": str(r.settings.mlops_home),
        "MLFLOW_TRACKING_URI": r.settings.tracking_uri,
        "MLFLOW_EXPERIMENT": r.settings.mlflow_experiment,
        "MODEL_NAME": r.name,
        "MODEL_CONFIGS_DIR": str(folder),
        "LOG_LEVEL": "WARNING",
    }


def _refused(done, words: str) -> str:
    assert done.returncode == ConfigError.exit_code, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert words in done.stderr, done.stderr
    return done.stderr


def test_create_checks_the_config_first_then_training_finds_it(
    registry: Registry, catalog_dir, tmp_path: Path
) -> None:
    folder = catalog_dir(registry.name)
    env = _env(registry, folder)
    store = open_store(registry.settings)
    new = f"{registry.name}-new"

    def create(text: str, *extra: str, name: str = new):
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return run_in_process(env, "models", "create", name, "--config", str(path), *extra)

    # Refused before anything is stored: bad YAML, Ludwig's schema, what the export lacks.
    _refused(create("input_features: [\n"), "is not valid YAML")
    _refused(create(CONFIG.replace("epochs: 20", "epochs: many")), "does not validate")
    unexportable = CONFIG.replace("normalization: zscore", "normalization: log1p", 1)
    _refused(create(unexportable), "uses normalization 'log1p' of 'rsi_14', which the portable")
    _refused(create(CONFIG, name=registry.name), "is in the bundled catalog")
    _refused(create(CONFIG, name="Bad_Name"), "is not a model name")
    assert store.list("catalog/") == [] and catalog.stored(store) == {}

    done = create(CONFIG, "--reason", "an MLP to try")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert (row["action"], row["model_name"], row["reason"]) == ("create", new, "an MLP to try")
    assert row["details"]["output"] == "next_return" and row["details"]["replaced"] is False
    assert store.get_bytes(stored_config_key(new)).decode() == CONFIG
    # The catalog every stage reads has it: `mlops train --model NEW` and `--all` take it
    # (they stop at the missing dataset here, after finding the model's config).
    settings = registry.settings.model_copy(update={"model_configs_dir": folder})
    found = catalog.spec(settings, store, new)
    assert found.stored and found.config_path.read_text() == CONFIG
    assert catalog.model_names(settings, store) == [registry.name, new]
    trained = run_in_process(env, "train", "--model", new)
    assert trained.returncode != 0 and "No model named" not in trained.stderr
    assert "dataset" in trained.stderr.lower(), trained.stderr
    everything = run_in_process(env, "train", "--all")
    assert new in everything.stderr and "dataset" in everything.stderr.lower()

    # Idempotent; another config only with --replace.
    again = create(CONFIG)
    assert again.returncode == 0 and json.loads(again.stdout)["details"]["unchanged"] is True
    other = CONFIG.replace("epochs: 20", "epochs: 5")
    _refused(create(other), "already in the stored catalog with another config")
    replaced = create(other, "--replace")
    assert replaced.returncode == 0 and json.loads(replaced.stdout)["details"]["replaced"]
    assert store.get_bytes(stored_config_key(new)).decode() == other
    refusals = registry.actions("refused")
    assert [r["action"] for r in refusals] == ["create"] * 6
    assert "which the portable export" in refusals[2]["reason"]
    assert [r["action"] for r in registry.actions()] == ["create"] * 3


def test_delete_a_version_or_a_model_never_the_champion(
    registry: Registry, catalog_dir, monkeypatch
) -> None:
    folder = catalog_dir(registry.name)
    env = _env(registry, folder)
    store = open_store(registry.settings)
    v1, v2, v3 = (registry.register(0.010 - i / 1000, 0.012) for i in range(3))
    client = registry.client
    for version in (v1, v2):
        client.set_registered_model_alias(registry.name, "champion", version)
    client.set_registered_model_tag(registry.name, "mlops_champion_stack", f"{v1},{v2}")
    client.set_registered_model_alias(registry.name, CHALLENGER_ALIAS, v3)

    def delete(*args: str):
        return run_in_process(env, "models", "delete", *args)

    _refused(delete(registry.name, "--version", v3), "add --yes to confirm")
    _refused(delete(registry.name, "--version", v2, "--yes"), "is the champion")
    _refused(delete(registry.name, "--yes"), "is the trading model (MODEL_NAME)")
    _refused(delete("stock-close-mlp", "--yes"), "No model named")
    done = delete(registry.name, "--version", v1, "--yes", "--reason", "superseded")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sentence"] == f"delete {registry.name} version {v1}: superseded"
    assert version_ref(client, registry.name, v1) is None
    assert champion_stack(client, registry.name) == [v2]  # no rollback to a deleted version
    # Under the same per-model lock as every registry action, held while it decides.
    events: list[str] = []
    real_lock, real_delete = model_catalog.model_lock, client.delete_model_version

    @contextmanager
    def lock(engine, name, **kwargs):
        with real_lock(engine, name, **kwargs):
            events.append(f"lock {name}")
            yield
            events.append(f"unlock {name}")

    def delete_version(name: str, version: str) -> None:
        events.append(f"delete {name} {version}")
        real_delete(name, version)

    with monkeypatch.context() as patched:
        patched.setattr(model_catalog, "model_lock", lock)
        patched.setattr(client, "delete_model_version", delete_version)
        model_catalog.delete(
            client, registry.engine, store, registry.settings, registry.name, v3,
            reason="", actor="cli:t",
        )  # fmt: skip
    name = registry.name
    assert events == [f"lock {name}", f"delete {name} {v3}", f"unlock {name}"]
    assert registry.alias(CHALLENGER_ALIAS) is None and registry.alias() == v2

    # A whole model: a stored one without a champion, from the registry and the catalog.
    other = f"{registry.name}-gone"
    model_catalog.create(
        registry.engine, store, registry.settings, other, CONFIG, reason="", actor="cli:t"
    )
    registry.name, mine = other, registry.name
    registry.register(0.010, 0.012)
    client.set_registered_model_alias(other, "champion", "1")
    _refused(delete(other, "--yes"), "has a champion (version 1)")
    client.delete_registered_model_alias(other, "champion")
    gone = delete(other, "--yes")
    assert gone.returncode == 0, gone.stderr
    details = json.loads(gone.stdout)["details"]
    assert details == {"versions": ["1"], "registered": True, "stored_config": True}
    assert registered_tags(client, other) is None
    assert not store.exists(stored_config_key(other))
    _refused(delete(other, "--yes"), "No model named")
    # A bundled model is not deleted whole: its config is the folder's.
    settings = registry.settings.model_copy(update={"model_configs_dir": catalog_dir(other)})
    with pytest.raises(ConfigError, match=r"in the bundled catalog .* nothing was deleted"):
        model_catalog.delete(
            client, registry.engine, store, settings, other, reason="", actor="cli:t"
        )
    # Every action and refusal stays in the audit, the deleted model's too.
    registry.name = mine
    assert [(r["action"], r["model_version"]) for r in registry.actions()] == [
        ("delete", v1),
        ("delete", v3),
        ("create", None),
        ("delete", None),
    ]
    refused = [(r["model_name"], r["model_version"]) for r in registry.actions("refused")]
    assert refused == [
        (mine, v2),
        (mine, None),
        ("stock-close-mlp", None),
        (other, None),
        (other, None),
        (other, None),
    ]
