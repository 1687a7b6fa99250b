"""``mlops monitor``: score predictions against the closes that came true, check feature
drift against the champion's training window, record metrics, flag a retrain.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import select

from mlops import market_calendar
from mlops.context import Context
from mlops.contracts import datasets, keys
from mlops.contracts.columns import WARMUP_COLUMN
from mlops.contracts.models import ModelRef, champion
from mlops.contracts.predictions import realized
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
    metrics: dict[str, float]
    drift_share: float | None
    retrain: bool
    reasons: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    market_closed: str | None = None  # why nothing was monitored: not a trading session


class _MetricRows:
    """Rows for ``monitoring_metrics``: one per (model version, symbol, metric) of a day."""

    def __init__(self, settings: Settings, day: date) -> None:
        self.settings, self.day, self.now = settings, day, utcnow()
        self.rows: list[dict[str, Any]] = []

    def add(self, model_version: str, symbol: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self.rows.append(
                {
                    "metric_date": self.day,
                    "model_name": self.settings.model_name,
                    "model_version": model_version,
                    "symbol": symbol,
                    "metric": metric,
                    "value": value,
                    "window_days": self.settings.monitor_window_days,
                    "created_at": self.now,
                }
            )


def run(
    ctx: Context, as_of: date | None = None, *, allow_older_dataset: bool = False
) -> MonitorResult:
    """Monitor as of the dataset published for ``as_of`` (never an older one unless allowed)."""
    if as_of is not None and (closed := market_calendar.closed_reason(as_of)):
        log.info("%s: nothing to monitor.", closed)
        return MonitorResult(as_of, None, 0, {}, None, False, market_closed=closed)
    settings = ctx.settings
    version = datasets.version_for_day(ctx.engine, as_of, allow_older=allow_older_dataset)
    _, bars = datasets.load(ctx.store, version)
    day = bars["date"].max().date()
    days = sorted(bars["date"].unique())
    window_start = pd.Timestamp(days[-settings.monitor_window_days :][0]).date()
    ref = champion(ctx.mlflow, settings.model_name, settings.champion_alias)
    joined = _realized(ctx, bars, window_start, day)
    result = MonitorResult(
        day=day,
        model_version=ref.version if ref else None,
        evaluated=len(joined),
        metrics={},
        drift_share=None,
        retrain=False,
    )
    rows = _MetricRows(settings, day)
    prefix = keys.monitoring_reports_prefix(day)
    if not joined.empty:
        _score(ctx, joined, ref, result, rows, prefix)
    if ref is not None:
        recent = bars[bars["date"] >= pd.Timestamp(window_start)]
        _check_drift(ctx, ref, recent, result, rows, prefix)
    result.reasons = _retrain_reasons(result, settings)
    result.retrain = bool(result.reasons)
    _record(ctx, result, rows)
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


def _realized(ctx: Context, bars: pd.DataFrame, start: date, day: date) -> pd.DataFrame:
    """The model's predictions made in the window before ``day``, with what came true."""
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(
            select(predictions).where(
                predictions.c.prediction_date >= start,
                predictions.c.prediction_date < day,
                predictions.c.model_name == ctx.settings.model_name,
            ),
            conn,
        )
    return realized(preds, bars) if not preds.empty else pd.DataFrame()


def _score(
    ctx: Context,
    joined: pd.DataFrame,
    ref: ModelRef | None,
    result: MonitorResult,
    rows: _MetricRows,
    prefix: str,
) -> None:
    """Metrics per version and symbol; the champion's (else all) in the quality report."""
    for model_version, group in joined.groupby("model_version"):
        rows.add(str(model_version), ALL, _scores(group))
        for symbol, part in group.groupby("symbol"):
            rows.add(str(model_version), str(symbol), _scores(part))
    current = joined[joined["model_version"] == (ref.version if ref else None)]
    if current.empty:
        current = joined
    result.metrics = _scores(current)
    ctx.store.put_bytes(
        f"{prefix}/quality.html", quality_report(current), "text/html; charset=utf-8"
    )
    result.reports["quality"] = ctx.store.uri(f"{prefix}/quality.html")


def _check_drift(
    ctx: Context,
    ref: ModelRef,
    recent: pd.DataFrame,
    result: MonitorResult,
    rows: _MetricRows,
    prefix: str,
) -> None:
    """Drift of the recent window against the champion's training window."""
    reference = _training_window(ctx, ref)
    if reference is None:
        return
    html, share = drift_report(
        reference[DRIFT_COLUMNS], recent[DRIFT_COLUMNS], ctx.settings.monitor_drift_method
    )
    ctx.store.put_bytes(f"{prefix}/drift.html", html, "text/html; charset=utf-8")
    result.reports["drift"] = ctx.store.uri(f"{prefix}/drift.html")
    result.drift_share = share
    rows.add(ref.version, ALL, {"drift_share": share})


def _record(ctx: Context, result: MonitorResult, rows: _MetricRows) -> None:
    """The day's metrics and, when flagged, its retrain request, in one transaction."""
    with ctx.engine.begin() as conn:
        upsert(
            conn,
            monitoring_metrics,
            rows.rows,
            keys=["metric_date", "model_name", "model_version", "symbol", "metric"],
        )
        if result.retrain:
            insert_new(
                conn,
                retrain_requests,
                [
                    {
                        "requested_date": result.day,
                        "model_version": result.model_version,
                        "reason": "; ".join(result.reasons),
                        "status": "open",
                        "created_at": rows.now,
                    }
                ],
                keys=["requested_date"],
            )


def _scores(frame: pd.DataFrame) -> dict[str, float]:
    model = regression_metrics(frame["actual_close"], frame["predicted_close"])
    naive = regression_metrics(frame["actual_close"], frame["last_close"])
    return {**model, "naive_mape": naive["mape"], "naive_mae": naive["mae"], "n": float(len(frame))}


def _retrain_reasons(result: MonitorResult, settings: Settings) -> list[str]:
    """Why the model should be retrained; empty when it should not."""
    reasons = []
    mape = result.metrics.get("mape")
    naive = result.metrics.get("naive_mape")
    enough = (result.metrics.get("n") or 0) >= MIN_SCORED
    if mape is not None and enough and mape > settings.monitor_mape_threshold:
        reasons.append(f"MAPE {mape:.4f} above {settings.monitor_mape_threshold}")
    ratio = settings.monitor_baseline_ratio
    if mape is not None and naive and enough and mape > naive * ratio:
        reasons.append(f"MAPE {mape:.4f} above {ratio} x naive {naive:.4f}")
    limit = settings.monitor_drift_share_threshold
    if result.drift_share is not None and result.drift_share > limit:
        reasons.append(f"drift share {result.drift_share:.2f} above {limit}")
    return reasons


def _training_window(ctx: Context, ref: ModelRef) -> pd.DataFrame | None:
    """Rows the champion was trained on, from its lineage tags in the registry."""
    lineage = ref.lineage
    if lineage is None:
        return None
    _, frame = datasets.load(ctx.store, lineage.dataset_version)
    start, end = lineage.train_start, lineage.train_end
    if start and end:
        frame = frame[(frame["date"] >= pd.Timestamp(start)) & (frame["date"] <= pd.Timestamp(end))]
    return frame[~frame[WARMUP_COLUMN]]


def _summary(result: MonitorResult) -> dict:
    return json.loads(json.dumps(result.__dict__, default=str))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
