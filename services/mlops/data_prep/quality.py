"""The quality gate: rows that break a rule are quarantined with their reason.

A batch whose share of bad rows passes the configured limit is refused whole.
Missing prices are never filled in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops.errors import DataError


@dataclass
class QualityResult:
    good: pd.DataFrame
    quarantined: pd.DataFrame  # the bad rows with a ``reason`` column

    @property
    def bad_share(self) -> float:
        total = len(self.good) + len(self.quarantined)
        return len(self.quarantined) / total if total else 0.0


def row_reasons(bars: pd.DataFrame) -> pd.Series:
    """For each row, the rules it breaks joined by '; ' (empty when it passes)."""
    rules: list[tuple[str, pd.Series]] = [
        ("date does not parse", bars["date"].isna()),
        ("symbol is empty", bars["symbol"].isna() | (bars["symbol"].fillna("") == "")),
        ("a price is missing", bars[["open", "high", "low", "close"]].isna().any(axis=1)),
        ("a price is not positive", (bars[["open", "high", "low", "close"]] <= 0).any(axis=1)),
        ("volume is missing or negative", bars["volume"].isna() | (bars["volume"] < 0)),
        ("high is below open or close", bars["high"] < bars[["open", "close"]].max(axis=1)),
        ("low is above open or close", bars["low"] > bars[["open", "close"]].min(axis=1)),
        (
            "duplicate (symbol, date)",
            bars.duplicated(subset=["symbol", "date"], keep=False) & bars["date"].notna(),
        ),
    ]
    reasons = np.full(len(bars), "", dtype=object)
    for text, mask in rules:
        hit = mask.fillna(False).to_numpy(dtype=bool)
        reasons[hit] = np.where(reasons[hit] == "", text, reasons[hit] + "; " + text)
    return pd.Series(reasons, index=bars.index, name="reason")


def check_bars(bars: pd.DataFrame, *, max_bad_share: float) -> QualityResult:
    """Split bars into good and quarantined rows; refuse the batch past ``max_bad_share``."""
    if bars.empty:
        raise DataError("The data source returned no bars.")
    reasons = row_reasons(bars)
    bad = reasons != ""
    result = QualityResult(
        good=bars[~bad].sort_values(["symbol", "date"]).reset_index(drop=True),
        quarantined=bars[bad].assign(reason=reasons[bad]).reset_index(drop=True),
    )
    if result.bad_share > max_bad_share:
        top = result.quarantined["reason"].value_counts().index[0]
        raise DataError(
            f"{len(result.quarantined)} of {len(bars)} rows ({result.bad_share:.1%}) failed the "
            f"quality gate, above the limit of {max_bad_share:.1%} (most often: {top}); "
            "nothing was published."
        )
    return result
