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


def test_each_session_gets_its_own_mape_beside_the_window():
    frame = _realized()
    sessions = scores.session_figures(frame)
    assert list(sessions.index) == list(pd.to_datetime(["2017-06-02", "2017-06-05", "2017-06-06"]))
    for session, part in frame.groupby("target_date"):
        ape = (part.predicted_close - part.actual_close).abs() / part.actual_close
        naive = (part.last_close - part.actual_close).abs() / part.actual_close
        assert sessions.loc[session, "mape"] == pytest.approx(ape.mean())
        assert sessions.loc[session, "naive_mape"] == pytest.approx(naive.mean())
        assert sessions.loc[session, "n"] == len(part)
    window = scores.figures(frame)["mape"]
    assert sessions["mape"].iloc[-1] != pytest.approx(window)  # a day is not its window
    rows = _MetricRows(SimpleNamespace(monitor_window_days=20), MONITORED)
    rows.add_sessions("stock-close", "3", sessions)
    mapes = {r["metric_date"]: r["value"] for r in rows.rows if r["metric"] == "mape"}
    assert mapes[date(2017, 6, 6)] == pytest.approx(sessions["mape"].iloc[-1])
    assert {r["window_days"] for r in rows.rows} == {1}


def test_a_challenger_is_compared_with_its_champion_on_the_rows_both_scored():
    days = pd.to_datetime([f"2017-06-{d:02d}" for d in (1, 2, 5, 6, 7, 8)])
    rows = []
    for n, day in enumerate(days):
        for symbol, close in (("AAPL", 100.0), ("COKE", 50.0)):
            actual = close * (1 + 0.01 * ((n % 3) - 1))
            rows.append((symbol, day, close * (1 + 0.002 * n), close, actual))
    challenger = pd.DataFrame(
        rows, columns=["symbol", "prediction_date", "predicted_close", "last_close", "actual_close"]
    )
    champion = challenger.assign(predicted_close=challenger["last_close"] * 1.004)
    champion = champion[champion["symbol"] == "AAPL"]  # COKE: the champion did not score it
    figures = scores.paired_tests(challenger, champion)
    same = challenger[challenger["symbol"] == "AAPL"]
    ape = lambda p: (p - same.actual_close).abs() / same.actual_close  # noqa: E731
    assert figures["paired_n"] == len(same) and figures["paired_days"] == len(days)
    assert figures["paired_mape"] == pytest.approx(ape(same.predicted_close).mean())
    assert figures["paired_champion_mape"] == pytest.approx(ape(champion.predicted_close).mean())
    assert figures["paired_naive_mape"] == pytest.approx(ape(same.last_close).mean())
    difference = (ape(same.predicted_close) - ape(champion.predicted_close)).to_numpy()
    low, high = stats.t.interval(
        0.95, len(difference) - 1, loc=difference.mean(), scale=stats.sem(difference)
    )
    assert (figures["paired_diff_low"], figures["paired_diff_high"]) == pytest.approx((low, high))
