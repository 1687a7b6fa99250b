"""``mlops monitor``: score predictions against the closes that came true, check feature
drift against the champion's training window, record metrics, flag a retrain.

Every version that batch inference scored (each catalog model's champion and challenger)
gets its figures per symbol and overall (``ALL``) in ``monitoring_metrics``: MAE, RMSE,
MAPE, WMAPE, directional accuracy, the naive forecast's MAE, RMSE, MAPE and WMAPE on the
same rows, n, and the live window's paired tests ``dm_p_naive`` and ``dm_p_champion``
(:mod:`mlops.monitoring.scores`), dated the monitored day (``window_days``: the window);
a challenger also its figures beside the champion's on the rows both scored (``paired_*``).
Each session of the window also gets its own figures, ``ic`` and ``rank_ic`` (``ALL``,
dated that session, ``window_days`` 1; no IC for a session with fewer than two symbols).
:mod:`mlops.contracts.live_figures` reads them back. A direction classifier's versions get
a classifier's figures instead: accuracy, AUC, Brier score, log loss, the expected
calibration error and the up-rate, the base-rate classifier's (the version's training
window's up-rate, its tag ``train_up_rate``) as ``naive_*``, n, and the paired tests on
daily log loss. Each model's champion that is a classifier also gets an evidently report,
``classification-<model>.html``: the classification preset and the reliability curve.

The retrain request is about the trading model's champion alone: its MAPE above
``MONITOR_MAPE_THRESHOLD``, above ``MONITOR_BASELINE_RATIO`` times the naive forecast's (a
direction classifier's: its log loss above that many times the base rate's; MAPE does not
apply), or its feature drift share above the calibrated threshold
(:mod:`mlops.monitoring.drift`);
each trigger's firing is recorded every day (0 or 1), with the drift share, its threshold
and each feature's p-value.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import select

from mlops import alerts, market_calendar
from mlops.context import Context
from mlops.contracts import datasets, keys
from mlops.contracts.columns import WARMUP_COLUMN
from mlops.contracts.live_figures import FEATURE_DRIFT_PREFIX
from mlops.contracts.models import TRAIN_UP_RATE_TAG, ModelRef, champion, version_ref
from mlops.contracts.predictions import CHALLENGER_ROLE, CHAMPION_ROLE, realized
from mlops.db.schema import monitoring_metrics, predictions, retrain_requests
from mlops.db.upsert import insert_new, upsert
from mlops.metrics import summarise_ic
from mlops.monitoring import drift, scores
from mlops.monitoring.reports import (
    DRIFT_COLUMNS,
    classification_report,
    drift_report,
    quality_report,
)
from mlops.runs import utcnow
from mlops.settings import Settings
from mlops.store import put_json

log = logging.getLogger(__name__)

ALL = "ALL"
MIN_SCORED = 4  # fewer scored predictions than this say nothing about quality


@dataclass
class VersionFigures:
    """One model version's live window: realized predictions, MAPE and paired tests, and
    the information coefficient (the latest session's, and its mean over the window's).
    """

    model_name: str
    model_version: str
    role: str  # the registry's now: champion or challenger
    n: int
    mape: float | None  # a regressor's; a classifier's figures are the ones below
    dm_p_naive: float | None = None
    dm_p_champion: float | None = None
    ic_date: date | None = None  # the latest session with an IC
    ic: float | None = None  # that session's IC and Rank IC
    rank_ic: float | None = None
    ic_mean: float | None = None  # the mean daily IC and Rank IC over ic_sessions sessions
    rank_ic_mean: float | None = None
    ic_sessions: int = 0
    # A direction classifier's window: log loss and the base rate's, accuracy and AUC.
    log_loss: float | None = None
    naive_log_loss: float | None = None
    accuracy: float | None = None
    auc: float | None = None
    ece: float | None = None  # the expected calibration error


@dataclass
class MonitorResult:
    """The day's monitoring of the trading model's champion (``model_version``,
    ``metrics``, drift, triggers), and every scored version's live figures (``versions``).
    """

    day: date
    model_version: str | None
    evaluated: int
    metrics: dict[str, float]
    drift_share: float | None
    retrain: bool
    reasons: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    market_closed: str | None = None  # why nothing was monitored: not a trading session
    drift_threshold: float | None = None
    drift_threshold_source: str | None = None  # calibrated | fixed (see monitoring.drift)
    drift_p_values: dict[str, float] = field(default_factory=dict)
    triggers: dict[str, bool] = field(default_factory=dict)
    versions: list[VersionFigures] = field(default_factory=list)


class _MetricRows:
    """Rows for ``monitoring_metrics``: one per (model, version, symbol, metric) of a day."""

    def __init__(self, settings: Settings, day: date) -> None:
        self.settings, self.day, self.now = settings, day, utcnow()
        self.rows: list[dict[str, Any]] = []

    def add(self, model_name: str, model_version: str, symbol: str, values: dict) -> None:
        """Figures of the monitor's window, dated the monitored day (missing: NULL)."""
        for metric, value in values.items():
            missing = value is None or math.isnan(value)
            self._append(model_name, model_version, symbol, metric, None if missing else value)

    def add_sessions(self, model_name: str, model_version: str, sessions: pd.DataFrame) -> None:
        """Figures of single sessions (one row per session, indexed by it), all symbols:
        dated each session, ``window_days`` 1; a missing figure is no row.
        """
        for session, values in sessions.iterrows():
            day = pd.Timestamp(session).date()
            for metric, value in values.items():
                if not math.isnan(value):
                    self._append(model_name, model_version, ALL, str(metric), value, day, 1)

    def _append(
        self,
        model_name: str,
        model_version: str,
        symbol: str,
        metric: str,
        value: float | None,
        day: date | None = None,
        window_days: int | None = None,
    ) -> None:
        self.rows.append(
            {
                "metric_date": day or self.day,
                "model_name": model_name,
                "model_version": model_version,
                "symbol": symbol,
                "metric": metric,
                "value": None if value is None else float(value),
                "window_days": window_days or self.settings.monitor_window_days,
                "created_at": self.now,
            }
        )


def run(
    ctx: Context, as_of: date | None = None, *, allow_older_dataset: bool = False
) -> MonitorResult:
    """Monitor as of the dataset published for ``as_of`` (never an older one unless allowed)."""
    if as_of is not None and (closed := market_calendar.closed_day(as_of, "nothing to monitor")):
        return MonitorResult(as_of, None, 0, {}, None, False, market_closed=closed)
    settings = ctx.settings
    version = datasets.version_for_day(ctx.engine, as_of, allow_older=allow_older_dataset)
    _, bars = datasets.load(ctx.store, version)
    day = bars["date"].max().date()
    days = sorted(bars["date"].unique())
    window_start = pd.Timestamp(days[-settings.monitor_window_days :][0]).date()
    ref = champion(ctx.mlflow, settings.model_name, settings.champion_alias)
    joined = _realized(ctx, window_start, day, bars)
    result = MonitorResult(day, ref.version if ref else None, 0, {}, None, False)
    rows = _MetricRows(settings, day)
    prefix = keys.monitoring_reports_prefix(day)
    if not joined.empty:
        _score_versions(ctx, joined, ref, result, rows, prefix)
        _score_trading_champion(ctx, joined, ref, result, prefix)
    if ref is not None:
        recent = bars[bars["date"] >= pd.Timestamp(window_start)]
        _check_drift(ctx, ref, recent, result, rows, prefix)
    triggered = _triggers(result, settings)
    result.reasons = [reason for reason in triggered.values() if reason]
    result.triggers = {name: bool(reason) for name, reason in triggered.items()}
    result.retrain = bool(result.reasons)
    if ref is not None:
        flags = {name: float(flag) for name, flag in result.triggers.items()}
        rows.add(ref.name, ref.version, ALL, flags)
    if _record(ctx, result, rows):
        alerts.send(
            ctx.settings,
            "retrain requested",
            f"monitoring {day} asks to retrain {ctx.settings.model_name} (champion version "
            f"{result.model_version}): {'; '.join(result.reasons)}",
        )
    put_json(ctx.store, f"{prefix}/summary.json", _summary(result))
    log.info(
        "Monitored %s: %d predictions scored, MAPE %s, drift share %s (threshold %s)%s",
        day,
        result.evaluated,
        _fmt(result.metrics.get("mape")),
        _fmt(result.drift_share),
        _fmt(result.drift_threshold),
        f"; retrain requested ({'; '.join(result.reasons)})" if result.retrain else "",
    )
    return result


def _realized(ctx: Context, start: date, day: date, bars: pd.DataFrame) -> pd.DataFrame:
    """Every model's predictions made in the window before ``day``, with what came true."""
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(
            select(predictions).where(
                predictions.c.prediction_date >= start, predictions.c.prediction_date < day
            ),
            conn,
        )
    return realized(preds, bars) if not preds.empty else pd.DataFrame()


def _score_versions(
    ctx: Context,
    joined: pd.DataFrame,
    trading: ModelRef | None,
    result: MonitorResult,
    rows: _MetricRows,
    prefix: str,
) -> None:
    """Figures per model, version and symbol; paired tests and daily IC per version; a
    classifier champion's report."""
    settings = ctx.settings
    for name, by_model in joined.groupby("model_name"):
        name = str(name)
        top = (
            trading
            if name == settings.model_name
            else champion(ctx.mlflow, name, settings.champion_alias)
        )
        top_rows = by_model[by_model["model_version"] == top.version] if top else None
        for model_version, group in by_model.groupby("model_version"):
            model_version = str(model_version)
            is_top = top is not None and top.version == model_version
            figure, tests = _version_scores(ctx, name, model_version, group, top_rows, is_top)
            overall = figure(group)
            rows.add(name, model_version, ALL, {**overall, **tests})
            for symbol, part in group.groupby("symbol"):
                rows.add(name, model_version, str(symbol), figure(part))
            sessions = scores.session_figures(group, figure)
            rows.add_sessions(name, model_version, sessions)
            figures = VersionFigures(
                name,
                model_version,
                CHAMPION_ROLE if is_top else CHALLENGER_ROLE,
                len(group),
                overall.get("mape"),
                tests.get("dm_p_naive"),
                tests.get("dm_p_champion"),
                log_loss=overall.get("log_loss"),
                naive_log_loss=overall.get("naive_log_loss"),
                accuracy=overall.get("accuracy"),
                auc=overall.get("auc"),
                ece=overall.get("ece"),
            )
            result.versions.append(_with_ic(figures, sessions[["ic", "rank_ic"]]))
            if is_top and scores.is_probability(group):
                _classifier_report(ctx, name, group, result, prefix)


def _version_scores(
    ctx: Context,
    name: str,
    version: str,
    group: pd.DataFrame,
    top_rows: pd.DataFrame | None,
    is_top: bool,
) -> tuple[Callable[[pd.DataFrame], dict[str, float]], dict[str, float]]:
    """How a version's rows are scored (a regressor's figures, or a classifier's against
    its base rate) and its paired tests against the naive forecast and its champion.
    """
    champion_rows = None if is_top else top_rows
    if not scores.is_probability(group):
        return scores.figures, scores.paired_tests(group, champion_rows)
    rate = base_rate(ctx, name, version)
    return (
        lambda rows: scores.classifier_figures(rows, rate),
        scores.classifier_tests(group, champion_rows, rate),
    )


def _classifier_report(
    ctx: Context, name: str, rows: pd.DataFrame, result: MonitorResult, prefix: str
) -> None:
    """A classifier champion's evidently report (its realized window: the classification
    preset, the reliability curve and the expected calibration error) in the store."""
    key = f"{prefix}/classification-{name}.html"
    body, _ = classification_report(scores.rose(rows), rows["score"])
    ctx.store.put_bytes(key, body, "text/html; charset=utf-8")
    result.reports[f"classification-{name}"] = ctx.store.uri(key)


def base_rate(ctx: Context, name: str, version: str) -> float | None:
    """The base-rate classifier's probability for a classifier version: the up-rate of
    its training window (its version tag ``train_up_rate``); None when it has none.
    """
    ref = version_ref(ctx.mlflow, name, version)
    value = (ref.tags if ref is not None else {}).get(TRAIN_UP_RATE_TAG)
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _with_ic(figures: VersionFigures, sessions: pd.DataFrame) -> VersionFigures:
    """``figures`` with the latest session's IC and the mean over the sessions."""
    ic, rank = summarise_ic(sessions["ic"]), summarise_ic(sessions["rank_ic"])
    figures.ic_mean, figures.rank_ic_mean, figures.ic_sessions = ic.mean, rank.mean, ic.sessions
    known = sessions.dropna(how="all")
    if not known.empty:
        latest = known.iloc[-1]
        figures.ic_date = pd.Timestamp(known.index[-1]).date()
        figures.ic = None if math.isnan(latest["ic"]) else float(latest["ic"])
        figures.rank_ic = None if math.isnan(latest["rank_ic"]) else float(latest["rank_ic"])
    return figures


def _score_trading_champion(
    ctx: Context, joined: pd.DataFrame, ref: ModelRef | None, result: MonitorResult, prefix: str
) -> None:
    """The trading champion's figures (which the retrain rule reads) and quality report.

    A champion without realized predictions yet (just promoted) is judged on the rows of
    the versions that were champion on those days.
    """
    trading = joined[joined["model_name"] == ctx.settings.model_name]
    current = trading[trading["model_version"] == (ref.version if ref else None)]
    if current.empty:
        current = trading[trading["role"] == CHAMPION_ROLE]
    if current.empty:
        return
    result.evaluated = len(current)
    if scores.is_probability(current):  # a classifier: its report is written per model
        version = str(current["model_version"].iloc[-1])
        result.metrics = scores.classifier_figures(
            current, base_rate(ctx, ctx.settings.model_name, version)
        )
        return
    result.metrics = scores.figures(current)
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
    """Drift of the recent window against the champion's training window, and the alarm's
    threshold (calibrated on that window's past windows, see :mod:`mlops.monitoring.drift`).
    """
    settings = ctx.settings
    reference = _training_window(ctx, ref)
    if reference is None:
        return
    method = settings.monitor_drift_method
    columns = [c for c in DRIFT_COLUMNS if c in recent.columns]  # close-only: no range, volume
    html, share = drift_report(reference[columns], recent[columns], method)
    ctx.store.put_bytes(f"{prefix}/drift.html", html, "text/html; charset=utf-8")
    result.reports["drift"] = ctx.store.uri(f"{prefix}/drift.html")
    threshold = None
    if method == drift.KS_METHOD:
        result.drift_p_values = drift.ks_p_values(reference[columns], recent[columns])
        share = drift.drift_share(result.drift_p_values)
        shares = drift.calibration(
            ctx.store,
            ref.name,
            ref.version,
            settings.monitor_window_days,
            columns,
            reference,
        ).shares
        threshold = drift.quantile_threshold(shares, settings.monitor_drift_false_alarm_rate)
    result.drift_share = share
    result.drift_threshold_source = "fixed" if threshold is None else "calibrated"
    result.drift_threshold = (
        settings.monitor_drift_share_threshold if threshold is None else threshold
    )
    p_rows = {f"{FEATURE_DRIFT_PREFIX}{c}": p for c, p in result.drift_p_values.items()}
    rows.add(
        ref.name,
        ref.version,
        ALL,
        {"drift_share": share, "drift_threshold": result.drift_threshold, **p_rows},
    )


def _record(ctx: Context, result: MonitorResult, rows: _MetricRows) -> bool:
    """The day's metrics and, when flagged, its retrain request, in one transaction;
    whether the request is new (a rerun of the day finds it)."""
    with ctx.engine.begin() as conn:
        upsert(
            conn,
            monitoring_metrics,
            rows.rows,
            keys=["metric_date", "model_name", "model_version", "symbol", "metric", "window_days"],
        )
        if result.retrain:
            return (
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
                > 0
            )
    return False


def _triggers(result: MonitorResult, settings: Settings) -> dict[str, str | None]:
    """Each retrain trigger on the trading champion, with its reason when it fired."""
    enough = "mape" in result.metrics and result.metrics.get("n", 0) >= MIN_SCORED
    mape = result.metrics.get("mape", 0.0)
    naive = result.metrics.get("naive_mape")
    triggers: dict[str, str | None] = {
        "trigger_mape": None,
        "trigger_naive_ratio": None,
        "trigger_drift": None,
    }
    if enough and mape > settings.monitor_mape_threshold:
        triggers["trigger_mape"] = f"MAPE {mape:.4f} above {settings.monitor_mape_threshold}"
    ratio = settings.monitor_baseline_ratio
    if enough and naive and mape > naive * ratio:
        triggers["trigger_naive_ratio"] = f"MAPE {mape:.4f} above {ratio} x naive {naive:.4f}"
    loss, naive_loss = result.metrics.get("log_loss"), result.metrics.get("naive_log_loss")
    scored = result.metrics.get("n", 0) >= MIN_SCORED
    if scored and loss is not None and naive_loss and loss > naive_loss * ratio:
        triggers["trigger_naive_ratio"] = (
            f"log loss {loss:.4f} above {ratio} x the base rate's {naive_loss:.4f}"
        )
    limit = result.drift_threshold
    if result.drift_share is not None and limit is not None and result.drift_share > limit:
        triggers["trigger_drift"] = (
            f"drift share {result.drift_share:.2f} above {limit:.2f} "
            f"({result.drift_threshold_source} threshold)"
        )
    return triggers


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
    """The result as the command prints it (each version's figures an object of its own)."""
    return json.loads(json.dumps(asdict(result), default=str))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
