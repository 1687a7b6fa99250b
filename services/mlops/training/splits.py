"""Date-based splits with no look-ahead: train, then validation, then holdout.

A row's target is the next trading day's close, so a row is dropped from a split when its
target date falls in the next split (a one-day embargo).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mlops.contracts.columns import TARGET_COLUMN
from mlops.errors import DataError


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame

    def ranges(self) -> dict[str, str]:
        out = {}
        for name in ("train", "validation", "holdout"):
            frame: pd.DataFrame = getattr(self, name)
            out[f"{name}_start"] = frame["date"].min().date().isoformat()
            out[f"{name}_end"] = frame["date"].max().date().isoformat()
            out[f"{name}_rows"] = str(len(frame))
        return out


def split_by_date(frame: pd.DataFrame, *, validation_days: int, holdout_days: int) -> Splits:
    """Split trainable rows (no warm-up, known target) by trading day."""
    rows = frame[~frame["warmup"] & frame[TARGET_COLUMN].notna()]
    days = sorted(rows["date"].unique())
    if len(days) < validation_days + holdout_days + 30:
        raise DataError(
            f"Only {len(days)} trading days with targets; training needs at least "
            f"{validation_days + holdout_days + 30} (30 + VALIDATION_DAYS + HOLDOUT_DAYS)."
        )
    holdout_start = days[-holdout_days]
    validation_start = days[-(holdout_days + validation_days)]
    train = rows[(rows["date"] < validation_start) & (rows["target_date"] < validation_start)]
    validation = rows[
        (rows["date"] >= validation_start)
        & (rows["date"] < holdout_start)
        & (rows["target_date"] < holdout_start)
    ]
    holdout = rows[rows["date"] >= holdout_start]
    return Splits(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        holdout=holdout.reset_index(drop=True),
    )
