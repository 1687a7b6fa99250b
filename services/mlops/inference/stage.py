"""``mlops batch-infer``: predict the next close of every symbol from its latest prepared day,
with the trading model's champion and, in shadow, every other version worth watching.

Each row keeps the model's own output and its kind (``score``, ``score_kind``: a close, a
return, or a direction classifier's probability of a rise); a regressor's rows also hold
the predicted close and the expected change, a classifier's hold none (NULL).

For each model of the catalog (``MODEL_NAME`` first), the versions scored are its champion
and its challenger (:func:`~mlops.contracts.models.shadow_refs`: never an archived one).
The trading model must have a champion, and one that is not archived (the command is
refused with the sentence that says how to move the alias); another model without a
version is skipped, one whose champion is archived is not scored and named at the end. Each
version's predictions carry its role (``champion`` or ``challenger``): only the trading
model's champion feeds trading, the rest are scored to be monitored beside it.

Predictions are upserted by (symbol, prediction date, model, version), so a rerun writes
nothing new (it only brings the roles up to date after a promotion), and each version's
batch is also written to the store as Parquet. The dataset is read once; each model is the
fast predictor of ``mlops.contracts.predictor`` (Ludwig's own ``predict`` for a config it
does not reproduce), and the rows are written in bulk.

A shadow version that cannot be loaded or scored does not stop the others: every batch
that could be scored is written, then the command fails (exit 4) naming the version and
what to do about it. The trading champion failing fails the command at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from sqlalchemy import case, update

from mlops import market_calendar
from mlops.context import Context
from mlops.contracts import catalog, datasets, keys
from mlops.contracts.columns import WARMUP_COLUMN, require_inputs
from mlops.contracts.models import (
    ModelRef,
    Scores,
    archived_champion,
    champion,
    input_features,
    is_archived,
    load_registered,
    predict_scores,
    require_champion,
    shadow_refs,
)
from mlops.contracts.predictions import CHALLENGER_ROLE, CHAMPION_ROLE, PREDICTION_KEY
from mlops.db.schema import predictions
from mlops.db.upsert import insert_new_bulk
from mlops.errors import DataError, ModelError
from mlops.runs import utcnow
from mlops.store import put_parquet

log = logging.getLogger(__name__)


@dataclass
class ScoredVersion:
    """One model version scored for the day."""

    model_name: str
    model_version: str
    role: str  # champion | challenger
    new_rows: int
    store_key: str


@dataclass
class BatchInferResult:
    """The day's scoring; ``model_name``, ``model_version``, ``store_key`` are the trading
    champion's, ``new_rows`` counts every version's.
    """

    prediction_date: date
    model_name: str
    model_version: str
    dataset_version: str
    symbols: list[str]
    skipped_symbols: list[str]
    new_rows: int
    store_key: str
    scored: list[ScoredVersion] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # shadow versions that could not score
    market_closed: str | None = None  # why nothing was scored: not a trading session


class ShadowScoringError(ModelError):
    """Shadow versions that could not be scored (the others were written)."""

    def __init__(self, message: str, result: BatchInferResult) -> None:
        super().__init__(message)
        self.result = result  # printed as JSON before the error ends the command


def latest_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Each symbol's row on the dataset's last day; symbols without a bar that day are skipped."""
    last_day = frame["date"].max()
    latest = frame[(frame["date"] == last_day) & ~frame[WARMUP_COLUMN]]
    skipped = sorted(set(frame["symbol"]) - set(latest["symbol"]))
    return latest.sort_values("symbol").reset_index(drop=True), skipped


def scoring_plan(ctx: Context, refused: list[str] | None = None) -> list[tuple[ModelRef, str]]:
    """The versions to score and their roles: the trading champion first (required, never
    archived), then its challenger, then each other catalog model's champion and
    challenger. Another model whose champion is archived is left out, its sentence
    appended to ``refused``.
    """
    settings, client = ctx.settings, ctx.mlflow
    plan: list[tuple[ModelRef, str]] = []
    for name in catalog.model_names(settings, ctx.store):
        top: ModelRef | None = (
            require_champion(client, name, settings.champion_alias)
            if name == settings.model_name
            else champion(client, name, settings.champion_alias)
        )
        if top is not None and is_archived(top):
            sentence = archived_champion(top, settings.champion_alias)
            log.error("%s", sentence)
            if refused is not None:
                refused.append(sentence)
            top = None  # its challenger, if any, is still scored in shadow
        refs = shadow_refs(client, name, settings.champion_alias)
        if not refs:
            log.info("Model %s has no champion or challenger to score: skipped.", name)
        for ref in refs:
            is_top = top is not None and ref.version == top.version
            plan.append((ref, CHAMPION_ROLE if is_top else CHALLENGER_ROLE))
    return plan


def run(
    ctx: Context, as_of: date | None = None, *, allow_older_dataset: bool = False
) -> BatchInferResult:
    """Score the dataset published for ``as_of`` (never an older one unless allowed); on a
    day the market is closed, nothing (data prep publishes no dataset for it either).
    """
    if as_of is not None and (closed := market_calendar.closed_day(as_of, "nothing to score")):
        name = ctx.settings.model_name
        return BatchInferResult(as_of, name, "", "", [], [], 0, "", market_closed=closed)
    version = datasets.version_for_day(ctx.engine, as_of, allow_older=allow_older_dataset)
    failed: list[str] = []  # shadow versions not scored, each one's sentence
    plan = scoring_plan(ctx, failed)
    manifest, frame = datasets.load(ctx.store, version)
    rows, skipped = latest_rows(frame)
    if rows.empty:
        raise DataError(f"Dataset {version} has no scorable rows on its last day.")
    if skipped:
        log.info("No bar on %s for %s: not scored.", manifest.last_date, ", ".join(skipped))
    prediction_date = rows["date"].iloc[0].date()
    scored: list[ScoredVersion] = []
    for ref, role in plan:
        try:
            model = load_registered(ctx.mlflow, ref)
            name = f"{ref.name} version {ref.version}"
            require_inputs(name, input_features(model), rows.columns, manifest.version)
            predicted = predict_scores(model, rows)
        except Exception as exc:
            if not scored:  # the trading champion: nothing to trade without it
                raise
            failed.append(_failure_sentence(ref, role, exc))
            log.error("%s", failed[-1])
            continue
        batch = _batch(rows, ref, role, predicted, manifest.version)
        scored.append(_write(ctx, batch, ref, role, prediction_date))
    result = _result(prediction_date, manifest.version, rows, skipped, scored, failed)
    if failed:
        raise ShadowScoringError(
            f"{len(failed)} shadow version(s) could not be scored (every other version's "
            f"predictions were written): {' '.join(failed)}",
            result,
        )
    return result


def _batch(
    rows: pd.DataFrame, ref: ModelRef, role: str, predicted: Scores, dataset_version: str
) -> pd.DataFrame:
    last = rows["close"].to_numpy(dtype="float64")
    close: object = None  # a classifier predicts no close: NULL
    change: object = None
    if predicted.predicted_close is not None:
        close = predicted.predicted_close
        change = (predicted.predicted_close - last) / last
    return pd.DataFrame(
        {
            "symbol": rows["symbol"].astype(str),
            "prediction_date": rows["date"].iloc[0].date(),
            "model_name": ref.name,
            "model_version": ref.version,
            "predicted_close": close,
            "last_close": last,
            "dataset_version": dataset_version,
            "created_at": utcnow(),
            "role": role,
            "expected_change": change,
            "score_kind": predicted.kind,
            "score": predicted.score,
        }
    )


def _write(ctx: Context, batch: pd.DataFrame, ref: ModelRef, role: str, day: date) -> ScoredVersion:
    """Insert the version's new rows and set the day's roles of its model name, at once."""
    with ctx.engine.begin() as conn:
        new_rows = insert_new_bulk(conn, predictions, batch, keys=PREDICTION_KEY)
        if role == CHAMPION_ROLE:
            # After a promotion, the day's rows of the former champion stop being its.
            conn.execute(
                update(predictions)
                .where(predictions.c.prediction_date == day, predictions.c.model_name == ref.name)
                .values(
                    role=case(
                        (predictions.c.model_version == ref.version, CHAMPION_ROLE),
                        else_=CHALLENGER_ROLE,
                    )
                )
            )
    key = keys.predictions_key(day, ref.name, ref.version)
    put_parquet(ctx.store, key, batch.drop(columns=["created_at"]))
    log.info(
        "Scored %d symbols for %s with %s v%s%s (%d new rows)",
        len(batch),
        day,
        ref.name,
        ref.version,
        "" if role == CHAMPION_ROLE else " in shadow",
        new_rows,
    )
    return ScoredVersion(ref.name, ref.version, role, new_rows, key)


def _failure_sentence(ref: ModelRef, role: str, exc: Exception) -> str:
    reason = str(exc).rstrip(".") or type(exc).__name__
    if role == CHALLENGER_ROLE:
        remedy = f"archive it with `mlops models archive {ref.name} {ref.version}`"
    else:
        remedy = (
            f"retrain it with `mlops models retrain {ref.name}` or remove {ref.name} "
            "from the model catalog (MODEL_CONFIGS_DIR)"
        )
    return f"{ref.name} version {ref.version} ({role}) failed: {reason}; {remedy}."


def _result(
    day: date,
    dataset_version: str,
    rows: pd.DataFrame,
    skipped: list[str],
    scored: list[ScoredVersion],
    failed: list[str],
) -> BatchInferResult:
    trading = scored[0]
    return BatchInferResult(
        prediction_date=day,
        model_name=trading.model_name,
        model_version=trading.model_version,
        dataset_version=dataset_version,
        symbols=rows["symbol"].astype(str).tolist(),
        skipped_symbols=skipped,
        new_rows=sum(s.new_rows for s in scored),
        store_key=trading.store_key,
        scored=scored,
        failed=failed,
    )
