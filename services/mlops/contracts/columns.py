"""Column names of a published feature dataset: what data prep writes and the others read."""

from __future__ import annotations

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
# Features that do not depend on a symbol's price level: comparable across symbols and
# over time, so they are the ones monitored for drift.
PRICE_LEVEL_FEATURES = frozenset({"close", "sma_10", "ema_10", "dema_10", "change"})
SCALE_FREE_FEATURES = [c for c in FEATURE_COLUMNS if c not in PRICE_LEVEL_FEATURES]
DRIFT_FEATURES = SCALE_FREE_FEATURES

# The next trading day's close and return: what a model predicts (one of the two).
TARGET_COLUMN = "next_close"
TARGET_RETURN_COLUMN = "next_return"
TARGETS = frozenset({TARGET_COLUMN, TARGET_RETURN_COLUMN})
# The day ``next_close`` is the close of; NaT on a symbol's last day.
TARGET_DATE_COLUMN = "target_date"
# True while an indicator is still warming up: such rows are not trained on nor scored.
WARMUP_COLUMN = "warmup"

# Columns a model config may name as inputs.
MODEL_INPUT_COLUMNS = frozenset({*FEATURE_COLUMNS, "symbol", "open", "high", "low", "volume"})
