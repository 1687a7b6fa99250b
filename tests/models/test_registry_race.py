"""Registry actions racing (issue 19): rollback, archive and promote of one model sent at
the same instant from several processes running ``mlops models``, round after round, with
the audit table in the embedded SQLite home and in Postgres.

After every round the champion exists and is not archived, every command either did what
it said ("Done": one audit row) or was refused with one sentence, and the round's audit
rows, replayed in order on the registry the round started from, give exactly the registry
it left: no row for an alias change that did not happen, none deciding on a stale state.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from conftest import clean_environ
from mlops.contracts.models import CHAMPION_STACK_TAG, STATUS_TAG, is_archived, version_ref

from . import race
from .conftest import Registry

ROUNDS = 8
# What each worker sends every round; P: the previous champion (rollback lands on it),
# X: a candidate, C: the champion when the round starts.
COMMANDS = (
    ("rollback", "{name}", "--reason", "race"),
    ("archive", "{name}", "{p}"),
    ("promote", "{name}", "{x}", "--reason", "race"),
    ("archive", "{name}", "{x}"),
    ("archive", "{name}", "{c}"),
)
REFUSED = (2, 4)  # ConfigError, ModelError: a sentence, nothing changed


@dataclass
class Workers:
    processes: list[Any]
    barrier: Any  # kept referenced: a collected semaphore is unlinked under the workers
    commands: list[Any]
    results: Any

    def send(
        self, env: dict[str, str], commands: list[list[str]]
    ) -> list[tuple[list[str], int, str, str]]:
        for queue, args in zip(self.commands, commands, strict=True):
            queue.put((env, args))
        return [self.results.get(timeout=120) for _ in commands]


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    """One process per command, for every test of the module (MLflow imported once)."""
    ctx = multiprocessing.get_context("forkserver")  # no fork of a process with threads
    ctx.set_forkserver_preload(race.PRELOAD)
    barrier = ctx.Barrier(len(COMMANDS))
    queues = [ctx.Queue() for _ in COMMANDS]
    results = ctx.Queue()
    processes = [
        ctx.Process(target=race.work, args=(barrier, q, results), daemon=True) for q in queues
    ]
    for process in processes:
        process.start()
    yield Workers(processes, barrier, queues, results)
    for queue in queues:
        queue.put(None)
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()


def _archived(r: Registry, versions: list[str]) -> set[str]:
    return {v for v in versions if is_archived(version_ref(r.client, r.name, v))}


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_concurrent_actions_never_leave_an_archived_or_missing_champion(
    registry: Registry, workers: Workers, database: str, request: pytest.FixtureRequest
) -> None:
    r = registry
    env = clean_environ(
        {
            "MLOPS_HOME": str(r.settings.mlops_home),
            "MLFLOW_TRACKING_URI": r.settings.tracking_uri,
            "MLFLOW_EXPERIMENT": r.settings.mlflow_experiment,
            "MODEL_NAME": r.name,
            "LOG_LEVEL": "WARNING",
        }
    )
    if database == "postgres":
        from mlops.db import migrate
        from mlops.db.engine import make_engine

        url = request.getfixturevalue("fresh_pg_database")
        env["DATABASE_URL"] = url
        r = replace(r, engine=make_engine(url))
        migrate.upgrade(r.engine)
    versions = [r.register(0.010, 0.012) for _ in range(3)]
    r.client.set_registered_model_alias(r.name, "champion", versions[0])
    checked = 0
    for round_ in range(ROUNDS):
        c = r.alias()
        p, x = [v for v in versions if v != c][:: 1 if round_ % 2 else -1]
        for version in _archived(r, versions):  # the others come back for this round
            r.client.delete_model_version_tag(r.name, version, STATUS_TAG)
        r.client.set_registered_model_tag(r.name, CHAMPION_STACK_TAG, f"{p},{c}")
        commands = [[a.format(name=r.name, p=p, x=x, c=c) for a in cmd] for cmd in COMMANDS]
        outcomes = workers.send(env, commands)

        where = f"round {round_} (C={c}, P={p}, X={x}): {[o[:2] for o in outcomes]}"
        champion, archived = r.alias(), _archived(r, versions)
        assert champion is not None, f"{where}: no champion"
        assert champion not in archived, f"{where}: the champion, version {champion}, is archived"
        for args, code, out, err in outcomes:
            assert code == 0 or code in REFUSED, f"{where}: {args} exited {code}: {err}"
            assert code != 0 or out.strip(), f"{where}: {args} said nothing"
            assert code == 0 or err.count("\n") == 1, f"{where}: {args}: {err}"
        rows = r.actions()[checked:]
        checked += len(rows)
        done = sum(1 for o in outcomes if o[1] == 0)
        assert len(rows) == done, f"{where}: {done} commands done, {len(rows)} audit rows"
        replayed, gone = c, set()
        for row in rows:
            action, version = row["action"], row["model_version"]
            if action in ("promote", "rollback"):
                assert version not in gone, f"{where}: {action} to archived version {version}"
                replayed = version
            else:
                assert version != replayed, f"{where}: archived the champion, version {version}"
                gone.add(version)
        assert (replayed, gone) == (champion, archived), f"{where}: the audit replays otherwise"
    assert {row["action"] for row in r.actions()} == {"promote", "rollback", "archive"}
