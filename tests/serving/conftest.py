"""The trained model, a holder serving its champion, and a client of the API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inference.trained_model import INPUTS, Trained, train_once


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_once(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def champion_holder(trained: Trained):
    """A holder that has loaded the champion (version 1) from the real registry; not polling."""
    from mlops.serving.model_holder import ModelHolder

    trained.set_champion(trained.versions[0])
    holder = ModelHolder(trained.settings())
    assert holder.poll_once()
    return holder


@pytest.fixture
def client(trained: Trained, champion_holder) -> Iterator:
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    with TestClient(create_app(trained.settings(), champion_holder)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def records(trained: Trained) -> list[dict]:
    """Real rows of the sample: the model's inputs and the last close."""
    rows = trained.scorable.sample(n=50, random_state=1)
    return [
        {k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}
        for row in rows[[*INPUTS, "close"]].to_dict("records")
    ]
