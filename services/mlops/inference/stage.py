"""``mlops batch-infer``: predict the next close of every symbol from its latest prepared day.

Predictions are upserted by (symbol, prediction date, model, version), so a rerun writes
nothing new, and the batch is also written to the store as Parquet. The model is the fast
predictor of ``mlops.inference.fast`` (Ludwig's own ``predict`` for a config it does not
reproduce), and the rows are written in bulk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import pandas as pd

from mlops.context import Context
from mlops.contracts import datasets, keys
from mlops.contracts.columns import WARMUP_COLUMN
from mlops.contracts.models import load_registered, predict_close, require_champion
from mlops.contracts.predictions import PREDICTION_KEY
from mlops.db.schema import predictions
from mlops.db.upsert import insert_new_bulk
from mlops.errors import DataError
from mlops.runs import utcnow
from mlops.store import put_parquet

log = logging.getLogger(__name__)


@dataclass
class BatchInferResult:
    prediction_date: date
    model_name: str
    model_version: str
    dataset_version: str
    symbols: list[str]
    skipped_symbols: list[str]
    new_rows: int
    store_key: str


def latest_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Each symbol's row on the dataset's last day; symbols without a bar that day are skipped."""
    last_day = frame["date"].max()
    latest = frame[(frame["date"] == last_day) & ~frame[WARMUP_COLUMN]]
    skipped = sorted(set(frame["symbol"]) - set(latest["symbol"]))
    return latest.sort_values("symbol").reset_index(drop=True), skipped


def run(
    ctx: Context, as_of: date | None = None, *, allow_older_dataset: bool = False
) -> BatchInferResult:
    """Score the dataset published for ``as_of`` (never an older one unless allowed)."""
    settings = ctx.settings
    version = datasets.version_for_day(ctx.engine, as_of, allow_older=allow_older_dataset)
    ref = require_champion(ctx.mlflow, settings.model_name, settings.champion_alias)
    manifest, frame = datasets.load(ctx.store, version)
    rows, skipped = latest_rows(frame)
    if rows.empty:
        raise DataError(f"Dataset {version} has no scorable rows on its last day.")
    if skipped:
        log.info("No bar on %s for %s: not scored.", manifest.last_date, ", ".join(skipped))
    model = load_registered(ctx.mlflow, ref)
    predicted = predict_close(model, rows)
    prediction_date = rows["date"].iloc[0].date()
    now = utcnow()
    batch = pd.DataFrame(
        {
            "symbol": rows["symbol"].astype(str),
            "prediction_date": prediction_date,
            "model_name": ref.name,
            "model_version": ref.version,
            "predicted_close": predicted,
            "last_close": rows["close"].to_numpy(dtype="float64"),
            "dataset_version": manifest.version,
            "created_at": now,
        }
    )
    batch["expected_change"] = (batch["predicted_close"] - batch["last_close"]) / batch[
        "last_close"
    ]
    with ctx.engine.begin() as conn:
        new_rows = insert_new_bulk(conn, predictions, batch, keys=PREDICTION_KEY)
    key = keys.predictions_key(prediction_date, ref.name, ref.version)
    put_parquet(ctx.store, key, batch.drop(columns=["created_at"]))
    log.info(
        "Scored %d symbols for %s with %s v%s (%d new rows)",
        len(batch),
        prediction_date,
        ref.name,
        ref.version,
        new_rows,
    )
    return BatchInferResult(
        prediction_date=prediction_date,
        model_name=ref.name,
        model_version=ref.version,
        dataset_version=manifest.version,
        symbols=batch["symbol"].tolist(),
        skipped_symbols=skipped,
        new_rows=new_rows,
        store_key=key,
    )
