"""Date splits without look-ahead, and the regression metrics."""

import numpy as np
import pandas as pd
import pytest

from mlops.data_prep.features import compute_features
from mlops.data_prep.sources import load_sample
from mlops.errors import DataError
from mlops.metrics import regression_metrics
from mlops.training.splits import split_by_date


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    bars = load_sample()
    return compute_features(bars[bars["date"] <= "2017-05-31"])


def test_splits_are_ordered_by_date_with_an_embargo(features):
    s = split_by_date(features, validation_days=60, holdout_days=60)
    assert s.train["date"].max() < s.validation["date"].min()
    assert s.validation["date"].max() < s.holdout["date"].min()
    # No row's target lies in a later split.
    assert s.train["target_date"].max() < s.validation["date"].min()
    assert s.validation["target_date"].max() < s.holdout["date"].min()
    assert s.holdout["date"].nunique() == 60
    assert s.validation["date"].nunique() <= 60
    for part in (s.train, s.validation, s.holdout):
        assert not part["warmup"].any()
        assert part["next_close"].notna().all()


def test_too_little_history_is_refused(features):
    short = features[features["date"] >= "2017-01-01"]
    with pytest.raises(DataError, match="training needs at least"):
        split_by_date(short, validation_days=60, holdout_days=60)


def test_regression_metrics_values():
    got = regression_metrics([100.0, 200.0], [110.0, 190.0])
    assert got["mae"] == pytest.approx(10.0)
    assert got["rmse"] == pytest.approx(10.0)
    assert got["mape"] == pytest.approx((0.1 + 0.05) / 2)
    with pytest.raises(ValueError):
        regression_metrics(np.array([]), np.array([]))
