"""``mlops monitor``: score predictions against the closes that came true, check feature
drift against the champion's training window, record metrics, flag a retrain.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from sqlalchemy import select

from mlops import tracking
from mlops.context import Context
from mlops.data_prep import dataset
from mlops.db.schema import monitoring_metrics, predictions, retrain_requests
from mlops.db.upsert import insert_new, upsert
from mlops.metrics import regression_metrics
from mlops.monitoring.reports import DRIFT_COLUMNS, drift_report, quality_report
from mlops.runs import utcnow
from mlops.settings import Settings
from mlops.store import put_json

log = logging.getLogger(__name__)

ALL = "ALL"
MIN_SCORED = 4  # fewer scored predictions than this say nothing about quality


@dataclass
class MonitorResult:
    day: date
    model_version: str | None
    evaluated: int
    metrics: dict[str, float | None]
    drift_share: float | None
    retrain: bool
    reasons: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    retrain_job: str | None = None


def realized(preds: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
    """Predictions joined with the close of the next trading day, where it is known."""
    truth = bars[["symbol", "date", "next_close", "target_date"]].dropna(subset=["next_close"])
    truth = truth.rename(columns={"date": "prediction_date", "next_close": "actual_close"})
    preds = preds.assign(prediction_date=pd.to_datetime(preds["prediction_date"]))
    return preds.merge(truth, on=["symbol", "prediction_date"], how="inner")


def run(ctx: Context, as_of: date | None = None) -> MonitorResult:
    settings = ctx.settings
    version = dataset.latest_version(ctx.engine, as_of)
    _, bars = dataset.load(ctx.store, version)
    day = bars["date"].max().date()
    days = sorted(bars["date"].unique())
    window = days[-settings.monitor_window_days :]
    window_start = pd.Timestamp(window[0]).date()

    client = tracking.configure(settings)
    ref = tracking.champion(client, settings)
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(
            select(predictions).where(
                predictions.c.prediction_date >= window_start,
                predictions.c.prediction_date < day,
                predictions.c.model_name == settings.model_name,
            ),
            conn,
        )
    joined = realized(preds, bars) if not preds.empty else pd.DataFrame()
    result = MonitorResult(
        day=day,
        model_version=ref.version if ref else None,
        evaluated=len(joined),
        metrics={},
        drift_share=None,
        retrain=False,
    )
    rows: list[dict] = []
    now = utcnow()

    def add(model_version: str, symbol: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            rows.append(
                {
                    "metric_date": day,
                    "model_name": settings.model_name,
                    "model_version": model_version,
                    "symbol": symbol,
                    "metric": metric,
                    "value": value,
                    "window_days": settings.monitor_window_days,
                    "created_at": now,
                }
            )

    prefix = f"reports/monitoring/{day.isoformat()}"
    if not joined.empty:
        for model_version, group in joined.groupby("model_version"):
            add(str(model_version), ALL, _scores(group))
            for symbol, part in group.groupby("symbol"):
                add(str(model_version), str(symbol), _scores(part))
        current = joined[joined["model_version"] == (ref.version if ref else None)]
        if current.empty:
            current = joined
        result.metrics = _scores(current)
        ctx.store.put_bytes(
            f"{prefix}/quality.html", quality_report(current), "text/html; charset=utf-8"
        )
        result.reports["quality"] = ctx.store.uri(f"{prefix}/quality.html")

    if ref is not None:
        reference = _training_window(ctx, ref)
        if reference is not None:
            recent = bars[bars["date"] >= pd.Timestamp(window_start)]
            html, share = drift_report(
                reference[DRIFT_COLUMNS], recent[DRIFT_COLUMNS], settings.monitor_drift_method
            )
            ctx.store.put_bytes(f"{prefix}/drift.html", html, "text/html; charset=utf-8")
            result.reports["drift"] = ctx.store.uri(f"{prefix}/drift.html")
            result.drift_share = share
            add(ref.version, ALL, {"drift_share": share})

    result.reasons = _retrain_reasons(result, settings)
    result.retrain = bool(result.reasons)
    with ctx.engine.begin() as conn:
        upsert(
            conn,
            monitoring_metrics,
            rows,
            keys=["metric_date", "model_name", "model_version", "symbol", "metric"],
        )
        if result.retrain:
            insert_new(
                conn,
                retrain_requests,
                [
                    {
                        "requested_date": day,
                        "model_version": result.model_version,
                        "reason": "; ".join(result.reasons),
                        "status": "open",
                        "created_at": now,
                    }
                ],
                keys=["requested_date"],
            )
    if result.retrain and settings.retrain_trigger == "kubernetes":
        from mlops.orchestration import trigger_retraining

        result.retrain_job = trigger_retraining(day, "; ".join(result.reasons)).job
    put_json(ctx.store, f"{prefix}/summary.json", _summary(result))
    log.info(
        "Monitored %s: %d predictions scored, MAPE %s, drift share %s%s",
        day,
        result.evaluated,
        _fmt(result.metrics.get("mape")),
        _fmt(result.drift_share),
        f"; retrain requested ({'; '.join(result.reasons)})" if result.retrain else "",
    )
    return result


def _scores(frame: pd.DataFrame) -> dict[str, float]:
    model = regression_metrics(frame["actual_close"], frame["predicted_close"])
    naive = regression_metrics(frame["actual_close"], frame["last_close"])
    return {**model, "naive_mape": naive["mape"], "naive_mae": naive["mae"], "n": float(len(frame))}


def _retrain_reasons(result: MonitorResult, settings: Settings) -> list[str]:
    """Why the model should be retrained; empty when it should not."""
    reasons = []
    mape = result.metrics.get("mape")
    naive = result.metrics.get("naive_mape")
    enough = result.metrics.get("n", 0) >= MIN_SCORED
    if mape is not None and enough and mape > settings.monitor_mape_threshold:
        reasons.append(f"MAPE {mape:.4f} above {settings.monitor_mape_threshold}")
    ratio = settings.monitor_baseline_ratio
    if mape is not None and naive and enough and mape > naive * ratio:
        reasons.append(f"MAPE {mape:.4f} above {ratio} x naive {naive:.4f}")
    limit = settings.monitor_drift_share_threshold
    if result.drift_share is not None and result.drift_share > limit:
        reasons.append(f"drift share {result.drift_share:.2f} above {limit}")
    return reasons


def _training_window(ctx: Context, ref: tracking.ModelRef) -> pd.DataFrame | None:
    """Rows the champion was trained on, from its dataset's lineage in the registry."""
    import mlflow

    dataset_version = ref.tags.get("dataset_version")
    if not dataset_version:
        return None
    run = mlflow.get_run(ref.run_id)
    start, end = run.data.params.get("train_start"), run.data.params.get("train_end")
    _, frame = dataset.load(ctx.store, dataset_version)
    if start and end:
        frame = frame[(frame["date"] >= pd.Timestamp(start)) & (frame["date"] <= pd.Timestamp(end))]
    return frame[~frame["warmup"]]


def _summary(result: MonitorResult) -> dict:
    return json.loads(json.dumps(result.__dict__, default=str))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
