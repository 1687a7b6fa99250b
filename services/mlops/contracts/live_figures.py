"""Live figures: what monitoring hands to everyone who shows a model's quality in
production (``mlops models list``, the dashboard's models table and charts, ``/api/models``).

Monitoring writes two kinds of rows into ``monitoring_metrics`` (all symbols: ``ALL``):

* **a session's own figures** (``window_days`` 1, dated the session whose closes came
  true): the window's error figures (``mape``, ``wmape``, ``naive_mape``, ``n``...) on that
  session's rows alone, and its ``ic`` and ``rank_ic``;
* **the trailing window's** (``window_days`` N, ``MONITOR_WINDOW_DAYS``, dated the
  monitored day): ``mape``, ``wmape``, ``directional_accuracy``, ``naive_mape``, ``n``,
  the paired tests ``dm_p_naive`` and ``dm_p_champion``, and a challenger's figures beside
  its champion on the rows both scored (``paired_*``).

This module is the one reader: :func:`read` gives each version its latest session's and
latest window's figures, each with its date and window length, and every view shows them
under :func:`label`. No view averages the rows again (a mean of window figures is neither
a day's nor a window's). :func:`read_symbols` gives a version's latest window per symbol
(the window's figures monitoring wrote for each symbol), :func:`read_feature_drift` the
drift test's p-value of each feature on each monitored day.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Engine, select

from mlops.db.schema import monitoring_metrics as mm

ALL = "ALL"
SESSION = 1  # window_days of a session's own figures
# A direction classifier's figures, and the base-rate classifier's on the same rows.
CLASSIFIER_METRICS = (
    "log_loss",
    "naive_log_loss",
    "accuracy",
    "naive_accuracy",
    "auc",
    "brier",
    "ece",
    "naive_ece",
)
SESSION_METRICS = (
    "mape",
    "wmape",
    "directional_accuracy",
    "naive_mape",
    "n",
    "ic",
    "rank_ic",
    *CLASSIFIER_METRICS,
)
WINDOW_METRICS = (
    "mape",
    "wmape",
    "directional_accuracy",
    "naive_mape",
    "n",
    "dm_p_naive",
    "dm_p_champion",
    "paired_n",
    "paired_days",
    "paired_mape",
    "paired_champion_mape",
    "paired_naive_mape",
    "paired_diff_low",
    "paired_diff_high",
    *CLASSIFIER_METRICS,
)


@dataclass
class LiveFigures:
    """One model version's latest live figures: its latest session's (``session``, dated
    ``session_date``) and its latest trailing window's (``window``, ``window_days``
    sessions ending ``window_date``).
    """

    model_name: str
    model_version: str
    session_date: date | None = None
    session: dict[str, float] = field(default_factory=dict)
    window_date: date | None = None
    window_days: int | None = None
    window: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (dates ISO)."""
        found = asdict(self)
        for key in ("session_date", "window_date"):
            found[key] = found[key].isoformat() if found[key] else None
        return found


def label(metric: str, window_days: int | None) -> str:
    """How a figure is named wherever it is shown: ``MAPE, day`` or ``MAPE, 20-session
    window``."""
    name = {"mape": "MAPE", "naive_mape": "naive MAPE", "ic": "IC", "rank_ic": "Rank IC"}.get(
        metric, metric
    )
    if window_days == SESSION:
        return f"{name}, day"
    return f"{name}, {window_days}-session window" if window_days else name


def read(engine: Engine, names: list[str] | None = None) -> dict[tuple[str, str], LiveFigures]:
    """(model, version) -> its latest live figures (only versions monitoring scored)."""
    metrics = sorted(set(SESSION_METRICS) | set(WINDOW_METRICS))
    query = select(
        mm.c.model_name,
        mm.c.model_version,
        mm.c.metric_date,
        mm.c.window_days,
        mm.c.metric,
        mm.c.value,
    ).where(mm.c.symbol == ALL, mm.c.metric.in_(metrics))
    if names is not None:
        query = query.where(mm.c.model_name.in_(names))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(mm.c.metric_date)).all()
    found: dict[tuple[str, str], LiveFigures] = {}
    for name, version, day, window, metric, value in rows:
        key = (str(name), str(version))
        figures = found.setdefault(key, LiveFigures(*key))
        if window == SESSION:
            if metric not in SESSION_METRICS:
                continue
            if figures.session_date != day:
                figures.session_date, figures.session = day, {}
            if value is not None:
                figures.session[metric] = float(value)
        elif metric in WINDOW_METRICS:
            if figures.window_date != day:
                figures.window_date, figures.window_days, figures.window = day, window, {}
            if value is not None:
                figures.window[metric] = float(value)
    return found


# Per symbol: monitoring writes each version's window figures per symbol too (the rows
# ``symbol`` is a ticker, ``window_days`` N, dated the monitored day); the per-symbol view
# shows the latest window's, as they were written.
SYMBOL_METRICS = (
    "mape",
    "wmape",
    "directional_accuracy",
    "naive_mape",
    "n",
    *CLASSIFIER_METRICS,
)


@dataclass
class SymbolFigures:
    """One model version's latest trailing window (``window_days`` sessions ending
    ``window_date``), figure by figure for each symbol."""

    model_name: str
    model_version: str
    window_date: date | None = None
    window_days: int | None = None
    symbols: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["window_date"] = self.window_date.isoformat() if self.window_date else None
        days = self.window_days
        found["label"] = f"{days}-session window to {found['window_date']}" if days else None
        return found


def read_symbols(
    engine: Engine, versions: list[tuple[str, str]]
) -> dict[tuple[str, str], SymbolFigures]:
    """(model, version) -> its latest window's figures per symbol, for ``versions`` (the
    ones monitoring scored; none for the others)."""
    if not versions:
        return {}
    names = sorted({name for name, _ in versions})
    query = select(
        mm.c.model_name,
        mm.c.model_version,
        mm.c.metric_date,
        mm.c.window_days,
        mm.c.symbol,
        mm.c.metric,
        mm.c.value,
    ).where(
        mm.c.model_name.in_(names),
        mm.c.symbol != ALL,
        mm.c.window_days != SESSION,
        mm.c.metric.in_(SYMBOL_METRICS),
    )
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(mm.c.metric_date)).all()
    wanted = set(versions)
    found: dict[tuple[str, str], SymbolFigures] = {}
    for name, version, day, window, symbol, metric, value in rows:
        key = (str(name), str(version))
        if key not in wanted:
            continue
        figures = found.setdefault(key, SymbolFigures(*key))
        if figures.window_date != day:  # a later window: the earlier one is not shown
            figures.window_date, figures.window_days, figures.symbols = day, window, {}
        if value is not None:
            figures.symbols.setdefault(str(symbol), {})[metric] = float(value)
    return found


# Per feature: monitoring's drift test of the trading champion's recent window against its
# training window (evidently's ``ks``: each feature's two-sample p-value, drifted at p <=
# 0.05, :mod:`mlops.monitoring.drift`), one row per feature and monitored day, named
# ``drift_p:<feature>`` (``symbol`` ALL, ``window_days`` the window).
FEATURE_DRIFT_PREFIX = "drift_p:"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift p-value on one monitored day."""

    metric_date: date
    model_name: str
    model_version: str
    window_days: int
    feature: str
    p_value: float | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metric_date": self.metric_date.isoformat()}


def read_feature_drift(engine: Engine, name: str | None = None) -> list[FeatureDrift]:
    """Every monitored day's per-feature drift p-values (of model ``name`` only, when
    given), oldest first."""
    query = select(
        mm.c.metric_date,
        mm.c.model_name,
        mm.c.model_version,
        mm.c.window_days,
        mm.c.metric,
        mm.c.value,
    ).where(mm.c.symbol == ALL, mm.c.metric.startswith(FEATURE_DRIFT_PREFIX, autoescape=True))
    if name is not None:
        query = query.where(mm.c.model_name == name)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(mm.c.metric_date, mm.c.metric)).all()
    return [
        FeatureDrift(
            day,
            str(model),
            str(version),
            int(window),
            str(metric)[len(FEATURE_DRIFT_PREFIX) :],
            None if value is None else float(value),
        )
        for day, model, version, window, metric, value in rows
    ]
