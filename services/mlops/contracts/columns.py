"""Column names of a published feature dataset: what data prep writes and the others read."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

import numpy as np

from mlops.errors import ConfigError

if TYPE_CHECKING:  # serving reads the names here without importing pandas
    import pandas as pd

# One row per (symbol, trading day).
KEY_COLUMNS = ["symbol", "date"]
BAR_COLUMNS = ["date", "symbol", "open", "high", "low", "close", "volume"]

FEATURE_COLUMNS = [
    "close",
    "rsi_14",
    "sma_10",
    "ema_10",
    "dema_10",
    "change",
    "return_1d",
    "range_pct",
    "log_volume",
    "close_to_sma_10",
    "close_to_ema_10",
    "close_to_dema_10",
]
# What a bar holds (DATA_BARS, recorded in a dataset's manifest as ``bars``): ``ohlcv``, the
# open, high, low, close and volume, or ``close_only``, a close and nothing else (index
# levels, fund prices). A close-only dataset has the bar columns and features computable
# from closes alone; those that need the high and low or the volume are left out, never
# faked.
OHLCV, CLOSE_ONLY = "ohlcv", "close_only"
BAR_KINDS = (OHLCV, CLOSE_ONLY)
CLOSE_ONLY_BAR_COLUMNS = ["date", "symbol", "close"]
# The features that need more than the close: the high-low range and the volume.
NOT_FROM_CLOSES = frozenset({"range_pct", "log_volume"})
CLOSE_FEATURE_COLUMNS = [c for c in FEATURE_COLUMNS if c not in NOT_FROM_CLOSES]


def require_inputs(
    model: str, inputs: Iterable[str], columns: Collection[str], dataset: str
) -> None:
    """Refuse, in one sentence naming them, a model whose input features ``dataset`` (its
    ``columns``) lacks: a model of every feature on a close-only dataset, say. Training,
    the walk-forward and batch inference ask this before they use a model on a dataset."""
    missing = [name for name in inputs if name not in columns]
    if not missing:
        return
    remedy = "use a model whose input features it has"
    if set(missing) <= NOT_FROM_CLOSES:
        remedy = (
            "a close-only dataset (DATA_BARS=close_only) has only the features computable "
            "from closes: use a model of those, such as stock-close-only"
        )
    raise ConfigError(
        f"{model} needs input features that dataset {dataset} does not have: "
        f"{', '.join(missing)}; {remedy}."
    )


def bar_columns(bars: str) -> list[str]:
    """The canonical bar columns of ``bars`` (``ohlcv`` or ``close_only``)."""
    return list(CLOSE_ONLY_BAR_COLUMNS if bars == CLOSE_ONLY else BAR_COLUMNS)


def feature_columns(bars: str) -> list[str]:
    """The feature columns a dataset of ``bars`` has, in the dataset's order."""
    return list(CLOSE_FEATURE_COLUMNS if bars == CLOSE_ONLY else FEATURE_COLUMNS)


# Features that do not depend on a symbol's price level: comparable across symbols and
# over time, so they are the ones monitored for drift.
PRICE_LEVEL_FEATURES = frozenset({"close", "sma_10", "ema_10", "dema_10", "change"})
SCALE_FREE_FEATURES = [c for c in FEATURE_COLUMNS if c not in PRICE_LEVEL_FEATURES]
DRIFT_FEATURES = SCALE_FREE_FEATURES

# The next trading day's close and return: what a regressor predicts (one of the two).
TARGET_COLUMN = "next_close"
TARGET_RETURN_COLUMN = "next_return"
# Whether the next trading day's close is above this day's (1.0 or 0.0; NaN where the
# next close is not known): what the direction classifier predicts the probability of.
# Derived from ``next_close`` when a dataset is read (:func:`with_direction`), so datasets
# published before it existed have it too.
TARGET_UP_COLUMN = "next_up"
REGRESSION_TARGETS = frozenset({TARGET_COLUMN, TARGET_RETURN_COLUMN})
CLASSIFICATION_TARGETS = frozenset({TARGET_UP_COLUMN})
TARGETS = REGRESSION_TARGETS | CLASSIFICATION_TARGETS
# Every column that looks one day ahead (a point-in-time view blanks them all).
LOOKAHEAD_COLUMNS = (TARGET_COLUMN, TARGET_RETURN_COLUMN, TARGET_UP_COLUMN)
# The day ``next_close`` is the close of; NaT on a symbol's last day.
TARGET_DATE_COLUMN = "target_date"
# True while an indicator is still warming up: such rows are not trained on nor scored.
WARMUP_COLUMN = "warmup"

# The kind of a model's output (its score), by target: a predicted close, a predicted
# return, or the probability that the next close is above this one.
PRICE, RETURN, PROBABILITY = "price", "return", "probability"
SCORE_KINDS = {TARGET_COLUMN: PRICE, TARGET_RETURN_COLUMN: RETURN, TARGET_UP_COLUMN: PROBABILITY}


def score_kind(target: str) -> str:
    """``price``, ``return`` or ``probability``: what a model of ``target`` outputs."""
    try:
        return SCORE_KINDS[target]
    except KeyError:
        raise ValueError(f"no model predicts {target!r}") from None


def is_classifier(target: str) -> bool:
    return target in CLASSIFICATION_TARGETS


def with_direction(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``next_up`` from ``next_close`` and ``close`` (NaN where the next close
    is unknown: a symbol's last day, or a point-in-time view that blanked it). Like
    ``next_close`` it is a row's label, never an input: no feature reads it.
    """
    if TARGET_COLUMN not in frame.columns or "close" not in frame.columns:
        return frame
    following = frame[TARGET_COLUMN].to_numpy(dtype="float64")
    close = frame["close"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        up = np.where(np.isnan(following), np.nan, (following > close).astype("float64"))
    return frame.assign(**{TARGET_UP_COLUMN: up})


# Columns a model config may name as inputs.
MODEL_INPUT_COLUMNS = frozenset({*FEATURE_COLUMNS, "symbol", "open", "high", "low", "volume"})
