"""The walk-forward's plan, without training: retrain points and point-in-time datasets."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from mlops.contracts import datasets
from mlops.data_prep import stage as data_prep
from mlops.errors import ConfigError, DataError
from mlops.walkforward.plan import Window, point_in_time, retrain_points, sessions_of


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """An embedded home with the sample published as of its end and as of 2016-06-30."""
    from mlops.context import open_context
    from mlops.db import migrate
    from mlops.db.engine import make_engine
    from mlops.settings import load_settings

    home = tmp_path_factory.mktemp("wf-plan")
    settings = load_settings(MLOPS_HOME=str(home), DATA_SOURCE="sample", STORE_BACKEND="local")
    migrate.upgrade(make_engine(settings.db_url))
    ctx = open_context(settings)
    full = data_prep.run(ctx, as_of=date(2017, 12, 29))
    cut = data_prep.run(ctx, as_of=date(2016, 6, 30))
    frames = {
        "full": datasets.load(ctx.store, full.version)[1],
        "cut": datasets.load(ctx.store, cut.version)[1],
    }
    yield ctx, frames
    ctx.engine.dispose()


def test_the_point_in_time_cut_equals_what_data_prep_published_that_day(published):
    """No fetch: the newest dataset cut at R is, row for row and bit for bit, the dataset
    data prep publishes as of R from the same bars (features causal, targets known by R).
    """
    _, frames = published
    cut = point_in_time(frames["full"], date(2016, 6, 30), Window())
    expected = frames["cut"]
    assert len(cut) == len(expected) > 0
    pd.testing.assert_frame_equal(cut[expected.columns], expected, check_exact=True)
    last = cut[cut["date"] == pd.Timestamp("2016-06-30")]
    assert last["next_close"].isna().all() and last["target_date"].isna().all()


def test_a_rolling_window_keeps_the_last_sessions_only(published):
    _, frames = published
    cut = point_in_time(frames["full"], date(2016, 6, 30), Window.parse("rolling:200"))
    assert cut["date"].nunique() == 200
    assert cut["date"].max() == pd.Timestamp("2016-06-30")
    with pytest.raises(ConfigError, match="rolling:SESSIONS"):
        Window.parse("rolling")


def test_retrain_points_cover_the_window_and_train_before_they_decide(published):
    _, frames = published
    days = sessions_of(frames["full"])
    found = retrain_points(days, date(2017, 1, 1), date(2017, 12, 29), 63, 180)
    decided = [d for d in days if date(2017, 1, 3) <= d <= date(2017, 12, 29)]
    assert [p.first for p in found][:2] == [date(2017, 1, 3), decided[63]]
    assert sum(p.sessions for p in found) == len(decided)
    for point in found:
        assert point.trained_to == days[days.index(point.first) - 1] < point.first
        assert point.first <= point.last
    assert found[-1].last == date(2017, 12, 29)


def test_a_window_that_cannot_be_planned_says_why(published):
    _, frames = published
    days = sessions_of(frames["full"])
    with pytest.raises(ConfigError, match="--from 2017-06-01 is after --to 2017-05-01"):
        retrain_points(days, date(2017, 6, 1), date(2017, 5, 1), 20, 180)
    with pytest.raises(DataError, match="start on 2015-09-"):
        retrain_points(days, date(2015, 3, 2), date(2017, 5, 1), 20, 180)


def test_the_direction_classifier_is_not_replayed():
    import yaml

    from mlops.contracts.catalog import packaged_dir
    from mlops.walkforward.run import _regressors

    names = ["stock-close", "stock-close-mlp", "stock-direction"]
    configs = {n: yaml.safe_load((packaged_dir() / f"{n}.yaml").read_text()) for n in names}
    kept, kept_configs = _regressors(names, configs, asked=False)  # the catalog's default
    assert kept == ["stock-close", "stock-close-mlp"] and list(kept_configs) == kept
    with pytest.raises(ConfigError, match="stock-direction is a direction classifier"):
        _regressors(names, configs, asked=True)  # named in --models
