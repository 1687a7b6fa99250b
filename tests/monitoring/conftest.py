"""The trained model shared with tests/inference and tests/serving."""

from __future__ import annotations

import pytest

from inference.trained_model import Trained, train_once


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_once(tmp_path_factory.getbasetemp())
