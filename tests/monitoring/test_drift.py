"""The drift test (evidently's "ks", computed with scipy) and its calibration."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from mlops.contracts import keys
from mlops.monitoring import drift
from mlops.monitoring.reports import drift_report
from mlops.store import LocalStore, get_json, put_json

COLUMNS = ["a", "b", "c", "d"]


def _days(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2015-01-02", periods=n)


def _history(make, symbols: int = 3) -> pd.DataFrame:
    """``make()`` (days x columns) for each symbol."""
    parts = []
    for i in range(symbols):
        values = make()
        frame = pd.DataFrame(values, columns=COLUMNS)
        parts.append(frame.assign(date=_days(len(values)), symbol=f"S{i}"))
    return pd.concat(parts, ignore_index=True)


def test_p_values_and_share_are_evidently_ks_ones():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rng.normal(size=(600, 4)), columns=COLUMNS)
    current = pd.DataFrame(rng.normal(size=(60, 4)), columns=COLUMNS)
    current["a"] += 0.8
    current["b"] += 0.5
    current.loc[3, "c"] = np.inf  # dropped, as evidently drops it
    reference.loc[5, "d"] = np.nan
    p_values = drift.ks_p_values(reference, current)
    _, evidently_share = drift_report(reference, current, "ks")
    assert p_values["a"] < 0.05 and p_values["c"] > 0.05
    assert drift.drift_share(p_values) == evidently_share == 0.5


def test_past_windows_are_the_latest_blocks_then_spread_when_capped():
    days = list(_days(105))
    windows = drift.past_windows(days, 20, limit=10)
    assert [len(w) for w in windows] == [20] * 5
    assert windows[0][-1] == days[-1] and windows[-1][0] == days[5]
    assert len({d for w in windows for d in w}) == 100  # no overlap
    capped = drift.past_windows(list(_days(400)), 20, limit=4)
    assert len(capped) == 4
    assert capped[0][-1] == _days(400)[-1] and capped[-1][0] == _days(400)[0]


def test_threshold_is_the_share_past_windows_rarely_exceed():
    shares = [0.0] * 10 + [0.25] * 8 + [0.5, 1.0]
    threshold = drift.quantile_threshold(shares, 0.05)
    assert threshold == 0.5
    assert sum(s > threshold for s in shares) / len(shares) <= 0.05
    assert drift.quantile_threshold(shares, 0.2) == 0.25
    assert drift.quantile_threshold(shares[:4], 0.05) is None  # too few windows to say


def test_calibration_follows_how_the_features_behave():
    """Independent days: a window rarely looks drifted, so the threshold stays low.
    Random walks: every window differs from the rest, and the threshold rises to match.
    """
    rng = np.random.default_rng(2)
    steady = drift.window_shares(_history(lambda: rng.normal(size=(500, 4))), COLUMNS, 20)
    walking = drift.window_shares(
        _history(lambda: rng.normal(size=(500, 4)).cumsum(axis=0)), COLUMNS, 20
    )
    assert len(steady) == len(walking) == 25
    assert drift.quantile_threshold(steady, 0.05) <= 0.25
    assert drift.quantile_threshold(walking, 0.05) == 1.0
    assert np.mean(walking) > np.mean(steady) + 0.5


def test_calibration_is_cached_per_version(tmp_path):
    store = LocalStore(tmp_path)
    rng = np.random.default_rng(3)
    history = _history(lambda: rng.normal(size=(200, 4)))
    first = drift.calibration(store, "m", "3", 20, COLUMNS, history)
    key = keys.drift_calibration_key("m", "3")
    assert get_json(store, key)["shares"] == first.shares and len(first.shares) == 10
    # Read back, not recomputed: planted shares come back.
    put_json(store, key, asdict(drift.Calibration("m", "3", 20, COLUMNS, [0.7] * 10)))
    assert drift.calibration(store, "m", "3", 20, COLUMNS, history).shares == [0.7] * 10
    # Another window length is another calibration: computed again, and stored.
    other = drift.calibration(store, "m", "3", 10, COLUMNS, history)
    assert len(other.shares) == 20 and get_json(store, key)["window_days"] == 10
