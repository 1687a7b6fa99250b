"""The NYSE calendar (P10): holidays and early closes, and every daily stage on a closed day."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from conftest import run_in_process
from mlops import market_calendar as cal
from mlops.db.schema import datasets, monitoring_metrics, orders
from mlops.monitoring import stage as monitor
from mlops.orchestration import run_daily
from mlops.trading import stage as trade

from .helpers import count, make_ctx

JULY_4, THANKSGIVING, BLACK_FRIDAY = date(2017, 7, 4), date(2017, 11, 23), date(2017, 11, 24)


def ny(day: date, hour: int, minute: int = 0) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo("America/New_York"))


def test_holidays_weekends_and_sessions():
    assert not cal.is_session(JULY_4) and not cal.is_session(THANKSGIVING)
    assert cal.is_session(BLACK_FRIDAY) and cal.is_session(date(2017, 7, 3))
    assert not cal.is_session(date(2017, 7, 1))  # Saturday
    assert "July 4th" in cal.closed_reason(JULY_4)
    assert "Thanksgiving" in cal.closed_reason(THANKSGIVING)
    assert "Saturday" in cal.closed_reason(date(2017, 7, 1))
    assert cal.closed_reason(BLACK_FRIDAY) is None
    assert cal.previous_session(date(2017, 7, 5)) == date(2017, 7, 3)
    assert cal.sessions(date(2017, 7, 1), date(2017, 7, 7)) == [
        date(2017, 7, 3),
        date(2017, 7, 5),
        date(2017, 7, 6),
        date(2017, 7, 7),
    ]


def test_early_closes_end_the_session_at_13_00():
    assert cal.is_early_close(BLACK_FRIDAY) and cal.is_early_close(date(2017, 7, 3))
    assert not cal.is_early_close(date(2017, 6, 2))
    assert cal.session_close(BLACK_FRIDAY) == ny(BLACK_FRIDAY, 13)
    assert cal.session_close(date(2017, 6, 2)) == ny(date(2017, 6, 2), 16)
    # At 13:30 on Black Friday that session is complete; at noon the last one is the 22nd.
    assert cal.latest_completed_session(ny(BLACK_FRIDAY, 13, 30)) == BLACK_FRIDAY
    assert cal.latest_completed_session(ny(BLACK_FRIDAY, 12)) == date(2017, 11, 22)
    assert cal.latest_completed_session(ny(THANKSGIVING, 20)) == date(2017, 11, 22)
    assert cal.latest_completed_session(ny(date(2017, 7, 3), 14)) == date(2017, 7, 3)
    assert cal.latest_completed_session(datetime(2017, 6, 3, 12, tzinfo=UTC)) == date(2017, 6, 2)


def test_data_prep_publishes_nothing_for_a_holiday(make_settings, tmp_path, subprocess_env):
    """`mlops data-prep --as-of 2017-07-04`: exit 0, says closed, no dataset for that day."""
    env = subprocess_env(MLOPS_HOME=str(tmp_path))
    assert run_in_process(env, "migrate").returncode == 0
    done = run_in_process(env, "data-prep", "--as-of", "2017-07-04")
    assert done.returncode == 0, done.stderr
    start = done.stdout.rfind("\n{\n")  # the result follows the log lines
    result = json.loads(done.stdout[start + 1 :] if start >= 0 else done.stdout)
    assert result["version"] is None and "July 4th" in result["market_closed"]
    assert "no dataset is published" in done.stdout + done.stderr
    ctx = make_ctx(make_settings, tmp_path)
    assert count(ctx, datasets) == 0


def test_batch_infer_scores_nothing_on_a_weekend_and_says_so(tmp_path, subprocess_env):
    """No dataset exists for a Saturday by design: exit 0 with the reason, not exit 3
    asking for a data prep that would publish nothing.
    """
    env = subprocess_env(MLOPS_HOME=str(tmp_path))
    assert run_in_process(env, "migrate").returncode == 0
    done = run_in_process(env, "batch-infer", "--as-of", "2017-06-03")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "2017-06-03" in result["market_closed"] and result["new_rows"] == 0
    assert "nothing to score" in done.stderr


def test_trade_and_monitor_do_nothing_on_thanksgiving(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path)
    traded = trade.run(ctx, as_of=THANKSGIVING)
    assert "Thanksgiving" in traded.market_closed and traded.decisions == {}
    watched = monitor.run(ctx, as_of=THANKSGIVING)
    assert "Thanksgiving" in watched.market_closed and watched.evaluated == 0
    assert count(ctx, orders) == 0 and count(ctx, monitoring_metrics) == 0


def test_daily_creates_no_job_on_a_holiday():
    """No Kubernetes API is reached at all (none is configured here)."""
    assert run_daily(JULY_4, namespace="mlops", templates_dir="/nonexistent") == []


@pytest.mark.parametrize("day", [date(1985, 1, 7), date(2040, 1, 9)])
def test_days_outside_the_calendar_fall_back_to_weekdays(day):
    assert cal.is_session(day)
    assert not cal.is_session(date(2040, 1, 7))  # a Saturday
