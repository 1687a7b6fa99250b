"""One embedded home where ``mlops train --all`` trained the four bundled models once per
session (one epoch each, on the bundled sample up to 2017-05-31), for the training tests.

Tests that train more use model names of their own (a catalog folder of copies), so they
do not depend on each other's registry changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

AS_OF = "2017-05-31"
BUNDLED = ("stock-close", "stock-close-mlp", "stock-close-pooled", "stock-direction")
CLASSIFIERS = frozenset({"stock-direction"})  # the direction classifier's gate: log loss


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"


@dataclass(frozen=True)
class World:
    home: Path
    env: dict[str, str]
    trained: dict[str, Any]  # `mlops train --all`'s JSON result

    def cli(self, *args: str, **env: str) -> Outcome:
        """The real command, in this process (Ludwig is imported once per session)."""
        return run_cli({**self.env, **env}, *args)

    def settings(self, **env: object) -> Any:
        from mlops.settings import load_settings

        return load_settings(MLOPS_HOME=str(self.home), **env)

    def client(self) -> Any:
        from mlops import tracking

        return tracking.connect(self.settings())

    def engine(self) -> Any:
        from mlops.db.engine import make_engine

        return make_engine(self.settings().db_url)


def run_cli(env: dict[str, str], *args: str) -> Outcome:
    """``mlops ARGS`` in this process with exactly ``env``'s settings."""
    from conftest import run_in_process

    done = run_in_process(env, *args)
    return Outcome(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from conftest import clean_environ

    home = tmp_path_factory.mktemp("train-catalog")
    env = clean_environ({"MLOPS_HOME": str(home), "TRAIN_EPOCHS": "1", "LOG_LEVEL": "INFO"})
    bare = World(home, env, {})
    for args in (("migrate",), ("data-prep", "--as-of", AS_OF)):
        outcome = bare.cli(*args)
        assert outcome.code == 0, str(outcome)
    outcome = bare.cli("train", "--all", "--as-of", AS_OF)
    assert outcome.code == 0, str(outcome)
    return World(home, env, outcome.json())


@pytest.fixture
def own_catalog(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """``own_catalog(new_name=bundled_name, ...)``: a catalog folder of copies of bundled
    configs under new names; the settings naming it (the first is the trading model).
    """
    from mlops.contracts.catalog import packaged_dir

    def build(**copies: str) -> dict[str, str]:
        folder = tmp_path / "models"
        folder.mkdir(exist_ok=True)
        for name, bundled in copies.items():
            text = (packaged_dir() / f"{bundled}.yaml").read_text()
            (folder / f"{name.replace('_', '-')}.yaml").write_text(text)
        first = next(iter(copies)).replace("_", "-")
        return {"MODEL_CONFIGS_DIR": str(folder), "MODEL_NAME": first}

    return build
