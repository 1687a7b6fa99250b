"""The per-model lock every registry action holds (mlops.db.locks), and training's
promotion gate holding it too: it waits for an action in progress, then decides on what
that action left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mlops.contracts.models import ARCHIVED, PROMOTED_BY_TAG, STATUS_TAG, Lineage, version_ref
from mlops.db.engine import make_engine
from mlops.db.locks import lock_file, model_lock
from mlops.errors import AlreadyRunning

from .conftest import Registry


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgres":
        url = request.getfixturevalue("fresh_pg_database")
    else:
        url = f"sqlite:///{tmp_path / 'mlops.db'}" if request.param == "sqlite" else "sqlite://"
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _held(engine: Engine, name: str, ready: threading.Event, release: threading.Event) -> None:
    with model_lock(engine, name):
        ready.set()
        release.wait(10)


def test_one_action_per_model_at_a_time_and_a_bounded_wait(engine: Engine) -> None:
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_held, args=(engine, "stock-close", ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        began = time.monotonic()
        with (
            pytest.raises(AlreadyRunning) as refused,
            model_lock(engine, "stock-close", wait_seconds=0.3),
        ):
            pytest.fail("two holders of one model's lock")
        assert time.monotonic() - began >= 0.25
        assert str(refused.value) == (
            "Another action on model stock-close held its registry lock for more than 0.3 s; "
            "nothing was changed: try again once it has finished."
        )
        assert refused.value.exit_code == 11
        with model_lock(engine, "stock-close-mlp", wait_seconds=0.3):
            pass  # another model does not wait
    finally:
        release.set()
        holder.join(10)
    with model_lock(engine, "stock-close", wait_seconds=0.3):
        pass  # released with the block


def test_the_sqlite_lock_is_a_file_beside_the_database(tmp_path: Path) -> None:
    assert lock_file(str(tmp_path / "mlops.db"), "stock-close") == Path(
        f"{tmp_path}/mlops.db.model-stock-close.lock"
    )
    odd = lock_file(str(tmp_path / "mlops.db"), "a/../b c")
    assert odd.parent == tmp_path and odd.name.startswith("mlops.db.model-")
    assert "/" not in odd.name.removeprefix("mlops.db.model-")


# Training's promotion gate, without training: a registered version and its evaluation.


def _gate(registry: Registry, version: str) -> threading.Thread:
    from mlops.training import stage
    from mlops.training.promotion import Decision

    target = stage._Target(
        registry.name, registry.settings, registry.engine, Lineage("2017-05-31-abc")
    )
    decision = Decision(True, "beats the naive forecast", "mape", 0.01, 0.012, None)
    evaluation = stage._Evaluation(
        per_split={"holdout": {"mape": 0.01}},
        baseline={"mape": 0.012},
        champion_holdout=None,
        decision=decision,
    )
    return threading.Thread(
        target=stage._promote, args=(registry.client, target, version, evaluation)
    )


def test_the_gate_waits_for_an_action_in_progress_then_promotes_with_its_row(
    registry: Registry,
) -> None:
    v1 = registry.register(0.010, 0.012)
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_held, args=(registry.engine, registry.name, ready, release))
    holder.start()
    assert ready.wait(10)
    gate = _gate(registry, v1)
    gate.start()
    time.sleep(0.5)
    assert registry.alias() is None and registry.actions() == [], "it waits for the lock"
    release.set()
    holder.join(10)
    gate.join(30)
    assert registry.alias() == v1
    assert version_ref(registry.client, registry.name, v1).tags[PROMOTED_BY_TAG] == "train"
    (row,) = registry.actions()
    assert (row["actor"], row["action"], row["model_version"]) == ("train", "promote", v1)


def test_the_gate_decides_on_the_registry_as_it_is_when_it_holds_the_lock(
    registry: Registry,
) -> None:
    from mlops import model_admin

    v1, v2 = registry.register(0.010, 0.012), registry.register(0.009, 0.012)
    # A version archived while training registered it is not promoted.
    registry.client.set_model_version_tag(registry.name, v2, STATUS_TAG, ARCHIVED)
    gate = _gate(registry, v2)
    gate.start()
    gate.join(30)
    assert registry.alias() is None and registry.actions() == []
    # A rerun of a gate whose row is written changes nothing, not even a rollback since.
    registry.client.delete_model_version_tag(registry.name, v2, STATUS_TAG)
    model_admin.promote(
        registry.client, registry.engine, registry.name, v1,
        alias="champion", reason="first", actor="cli:tester",
    )  # fmt: skip
    for _ in range(2):
        gate = _gate(registry, v2)
        gate.start()
        gate.join(30)
        assert registry.alias() == v2
    model_admin.rollback(
        registry.client, registry.engine, registry.name,
        alias="champion", reason="bad week", actor="cli:tester",
    )  # fmt: skip
    gate = _gate(registry, v2)
    gate.start()
    gate.join(30)
    assert registry.alias() == v1
    assert [(a["action"], a["actor"], a["model_version"]) for a in registry.actions()] == [
        ("promote", "cli:tester", v1),
        ("promote", "train", v2),
        ("rollback", "cli:tester", v1),
    ]
