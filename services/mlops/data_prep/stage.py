"""``mlops data-prep``: bars in, checked features out, as one immutable dataset version."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import pandas as pd

from mlops.context import Context
from mlops.data_prep import dataset
from mlops.data_prep.features import compute_features
from mlops.data_prep.quality import check_bars
from mlops.data_prep.sources import load_bars
from mlops.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class DataPrepResult:
    version: str
    as_of: date
    rows: int
    symbols: list[str]
    quarantined: int
    new: bool


def run(ctx: Context, as_of: date | None = None) -> DataPrepResult:
    """Load, check, featurize and publish the bars known on ``as_of`` (default: all)."""
    settings = ctx.settings
    bars = load_bars(settings)
    if as_of is not None:
        # Replaying history: the stage sees only what was known after that day's close.
        bars = bars[bars["date"].isna() | (bars["date"] <= pd.Timestamp(as_of))]
    checked = check_bars(bars, max_bad_share=settings.quality_max_bad_share)
    good = checked.good
    if good.empty:
        raise DataError(f"No valid bars on or before {as_of}.")
    effective = as_of or good["date"].max().date()
    features = compute_features(good)
    manifest, new = dataset.publish(
        ctx.store,
        ctx.engine,
        features,
        as_of=effective,
        source=settings.data_source,
        quarantine=checked.quarantined,
    )
    log.info(
        "Dataset %s: %d rows, %d symbols, %s to %s, %d rows quarantined%s",
        manifest.version,
        manifest.rows,
        len(manifest.symbols),
        manifest.first_date,
        manifest.last_date,
        manifest.quarantined_rows,
        "" if new else " (already published)",
    )
    return DataPrepResult(
        version=manifest.version,
        as_of=effective,
        rows=manifest.rows,
        symbols=manifest.symbols,
        quarantined=manifest.quarantined_rows,
        new=new,
    )
