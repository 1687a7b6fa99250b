"""Monitoring's daily IC rows: one per session that has an IC (all symbols, dated that
session, window_days 1), none for a session with fewer than two symbols or no spread."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pandas as pd
import pytest
from scipy import stats

from mlops.monitoring import scores
from mlops.monitoring.stage import ALL, VersionFigures, _MetricRows, _with_ic

MONITORED = date(2017, 6, 7)


def _realized() -> pd.DataFrame:
    rows = [
        # 2017-06-02: three symbols, a cross-section with an IC.
        ("AAPL", "2017-06-01", "2017-06-02", 101.0, 100.0, 102.0),
        ("COKE", "2017-06-01", "2017-06-02", 49.0, 50.0, 49.5),
        ("TSLA", "2017-06-01", "2017-06-02", 305.0, 300.0, 299.0),
        # 2017-06-05: one symbol alone, no IC.
        ("AAPL", "2017-06-02", "2017-06-05", 103.0, 102.0, 101.0),
        # 2017-06-06: two symbols with the same predicted return, no IC.
        ("AAPL", "2017-06-05", "2017-06-06", 102.01, 101.0, 100.0),
        ("COKE", "2017-06-05", "2017-06-06", 50.5, 50.0, 51.0),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "symbol",
            "prediction_date",
            "target_date",
            "predicted_close",
            "last_close",
            "actual_close",
        ],
    )
    for column in ("prediction_date", "target_date"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


def test_only_sessions_with_an_ic_get_rows_equal_to_scipy():
    frame = _realized()
    sessions = scores.session_ic(frame)
    rows = _MetricRows(SimpleNamespace(monitor_window_days=20), MONITORED)
    rows.add_sessions("stock-close", "3", sessions)

    first = frame[frame.target_date == "2017-06-02"]
    p = first.predicted_close / first.last_close - 1.0
    r = first.actual_close / first.last_close - 1.0
    expected = {"ic": stats.pearsonr(p, r)[0], "rank_ic": stats.spearmanr(p, r)[0]}
    assert expected["ic"] == pytest.approx(0.5356782, abs=1e-6)  # a cross-section with signal
    assert {row["metric"]: row["value"] for row in rows.rows} == pytest.approx(expected)
    assert {
        (row["metric_date"], row["symbol"], row["window_days"], row["model_version"])
        for row in rows.rows
    } == {(date(2017, 6, 2), ALL, 1, "3")}

    figures = _with_ic(VersionFigures("stock-close", "3", "champion", len(frame), 0.01), sessions)
    assert (figures.ic_date, figures.ic_sessions) == (date(2017, 6, 2), 1)
    assert figures.ic == figures.ic_mean == pytest.approx(expected["ic"])
    assert figures.rank_ic == figures.rank_ic_mean == pytest.approx(expected["rank_ic"])


def test_the_window_figures_keep_the_monitored_day_and_window():
    rows = _MetricRows(SimpleNamespace(monitor_window_days=20), MONITORED)
    rows.add("stock-close", "3", ALL, {"mape": 0.01, "dm_p_naive": None})
    assert [(r["metric_date"], r["window_days"], r["value"]) for r in rows.rows] == [
        (MONITORED, 20, 0.01),
        (MONITORED, 20, None),
    ]
