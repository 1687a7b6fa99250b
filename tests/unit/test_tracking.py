"""mlops.tracking.ensure_experiment when processes that start together race to create it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException, RestException

from mlops import tracking


class _RacingClient:
    """Finds no experiment, then loses the creation to another process (whose is ``7``)."""

    def __init__(self, error_code: str) -> None:
        self.error_code = error_code
        self.created_by_other: SimpleNamespace | None = None

    def get_experiment_by_name(self, name: str) -> SimpleNamespace | None:
        return self.created_by_other

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        self.created_by_other = SimpleNamespace(experiment_id="7", name=name)
        # What the REST client raises for the tracking server's answer.
        message = f"Experiment(name={name}) already exists."
        raise RestException({"error_code": self.error_code, "message": message})


def _settings() -> SimpleNamespace:
    return SimpleNamespace(mlflow_experiment="stock-close-walk-forward", mlflow_artifact_root=None)


def test_losing_the_creation_race_uses_the_winners_experiment() -> None:
    client = _RacingClient("RESOURCE_ALREADY_EXISTS")
    assert tracking.ensure_experiment(client, _settings()) == "7"  # type: ignore[arg-type]


def test_other_creation_failures_are_raised() -> None:
    client = _RacingClient("PERMISSION_DENIED")
    with pytest.raises(MlflowException, match="already exists"):
        tracking.ensure_experiment(client, _settings())  # type: ignore[arg-type]
