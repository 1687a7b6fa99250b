"""Feature drift that means something: a per-feature test, and an alarm threshold
calibrated on the champion's own training history.

The test is evidently's ``ks`` (``DataDriftPreset(num_method="ks")``, evidently 0.7.23:
``scipy.stats.ks_2samp`` two-sided on each numerical column, infinities and NaN dropped;
a column drifts when its p-value is at most 0.05; the drift share is the drifted columns
over all columns), computed here with scipy directly so it can be repeated cheaply.

A window of ``MONITOR_WINDOW_DAYS`` tested against years of data flags most features on
most days, drift or not. So the threshold is calibrated: past windows of the same length
inside the training window are each tested against the rest of the training data, exactly
as the live window is tested against all of it, and the alarm's threshold is the share
at most ``MONITOR_DRIFT_FALSE_ALARM_RATE`` of those windows exceed (their ``1 - rate``
quantile). The shares are cached in
the store per model version (``keys.drift_calibration_key``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mlops.contracts import keys
from mlops.store import ObjectStore, get_json, put_json

KS_METHOD = "ks"
P_VALUE_THRESHOLD = 0.05  # evidently's default for "ks": drift when p <= 0.05
MAX_CALIBRATION_WINDOWS = 60  # enough for a 5 % quantile; a few seconds once per version
MIN_CALIBRATION_WINDOWS = 5  # fewer past windows say nothing about the false-alarm rate


def ks_p_values(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    """Two-sample KS p-value of each column of ``current`` against ``reference`` (NaN for a
    column empty on either side).
    """
    from scipy.stats import ks_2samp

    values: dict[str, float] = {}
    for column in current.columns:
        ref = _finite(reference[column])
        cur = _finite(current[column])
        values[str(column)] = (
            float(ks_2samp(ref, cur).pvalue) if ref.size and cur.size else math.nan
        )
    return values


def _finite(series: pd.Series) -> np.ndarray:
    values = series.to_numpy(dtype="float64")
    return values[np.isfinite(values)]


def drift_share(p_values: dict[str, float]) -> float:
    """The share of columns whose p-value is at most the drift threshold."""
    if not p_values:
        return 0.0
    return sum(p <= P_VALUE_THRESHOLD for p in p_values.values()) / len(p_values)


def past_windows(days: list[pd.Timestamp], window_days: int, limit: int) -> list[list]:
    """Consecutive blocks of ``window_days`` days, the latest first, at most ``limit`` of
    them (evenly spread over the history when there are more).
    """
    blocks = [
        days[end - window_days : end] for end in range(len(days), window_days - 1, -window_days)
    ]
    if len(blocks) > limit:
        picks = np.linspace(0, len(blocks) - 1, limit).round().astype(int)
        blocks = [blocks[i] for i in sorted(set(picks))]
    return blocks


def window_shares(history: pd.DataFrame, columns: list[str], window_days: int) -> list[float]:
    """The drift share of each past window of ``history`` against the rest of it."""
    days = sorted(history["date"].unique())
    shares = []
    for window in past_windows(days, window_days, MAX_CALIBRATION_WINDOWS):
        inside = history["date"].isin(window)
        p_values = ks_p_values(history.loc[~inside, columns], history.loc[inside, columns])
        shares.append(drift_share(p_values))
    return shares


def quantile_threshold(shares: list[float], false_alarm_rate: float) -> float | None:
    """The lowest past share that at most ``false_alarm_rate`` of the past windows exceed
    (the ``1 - rate`` quantile, inverted CDF); None when there are too few windows to say.
    """
    if len(shares) < MIN_CALIBRATION_WINDOWS:
        return None
    ordered = sorted(shares)
    rank = math.ceil(len(ordered) * (1.0 - false_alarm_rate) - 1e-9)
    return float(ordered[max(rank, 1) - 1])


@dataclass(frozen=True)
class Calibration:
    """The past windows' drift shares of one model version (cached in the store)."""

    model_name: str
    model_version: str
    window_days: int
    columns: list[str]
    shares: list[float]


def calibration(
    store: ObjectStore,
    model_name: str,
    model_version: str,
    window_days: int,
    columns: list[str],
    history: pd.DataFrame,
) -> Calibration:
    """The version's calibration from the store, computed and stored on first use."""
    key = keys.drift_calibration_key(model_name, model_version)
    cached = None
    if store.exists(key):
        try:
            cached = Calibration(**get_json(store, key))
        except (TypeError, ValueError):  # written by another layout: computed again
            cached = None
    if cached is not None and cached.window_days == window_days and cached.columns == columns:
        return cached
    shares = window_shares(history, columns, window_days)
    fresh = Calibration(model_name, model_version, window_days, list(columns), shares)
    put_json(store, key, asdict(fresh))
    return fresh
