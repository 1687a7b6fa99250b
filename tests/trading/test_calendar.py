"""The NYSE calendar (P10): holidays and early closes, and every daily stage on a closed day."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Any

import pytest

from conftest import clean_environ, run_in_process
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


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory) -> dict[str, str]:
    env = clean_environ({"MLOPS_HOME": str(tmp_path_factory.mktemp("closed-days"))})
    assert run_in_process(env, "migrate").returncode == 0
    return env


def _closed_reasons(command: str, result: Any, log: str) -> list[str]:
    if command == "train --all":
        return [model["market_closed"] for model in result["models"]]
    if command == "daily":  # its result lists the Jobs it ran: none; the log says why
        assert result == []
        return re.findall(r"\d{4}-\d\d-\d\d was .*: the NYSE was closed", log)
    return [result["market_closed"]]


@pytest.mark.parametrize("day", [date(2017, 6, 3), JULY_4])
@pytest.mark.parametrize(
    "command", ["data-prep", "train", "train --all", "batch-infer", "trade", "monitor", "daily"]
)
def test_every_stage_does_nothing_on_a_closed_day_and_says_so(migrated_home, command, day):
    """No dataset exists for a Saturday or a holiday by design: every stage exits 0 with
    the reason as ``market_closed`` (the daily run: no Job, the reason in its log), not
    exit 3 asking for a data prep that would publish nothing (batch-infer and train did)."""
    done = run_in_process(migrated_home, *command.split(), "--as-of", day.isoformat())
    assert done.returncode == 0, done.stderr
    reasons = _closed_reasons(command, json.loads(done.stdout), done.stderr)
    assert reasons and all(
        r.startswith(f"{day} was ") and r.endswith(": the NYSE was closed") for r in reasons
    ), reasons
    assert "error" not in done.stderr.lower()


def test_trade_and_monitor_do_nothing_on_thanksgiving(make_settings, tmp_path):
    ctx = make_ctx(make_settings, tmp_path)
    traded = trade.run(ctx, as_of=THANKSGIVING)
    assert "Thanksgiving" in traded.market_closed and traded.decisions == {}
    watched = monitor.run(ctx, as_of=THANKSGIVING)
    assert "Thanksgiving" in watched.market_closed and watched.evaluated == 0
    assert count(ctx, orders) == 0 and count(ctx, monitoring_metrics) == 0
    assert count(ctx, datasets) == 0


def test_daily_creates_no_job_on_a_holiday():
    """No Kubernetes API is reached at all (none is configured here)."""
    assert run_daily(JULY_4, namespace="mlops", templates_dir="/nonexistent") == []


@pytest.mark.parametrize("day", [date(1985, 1, 7), date(2040, 1, 9)])
def test_days_outside_the_calendar_fall_back_to_weekdays(day):
    assert cal.is_session(day)
    assert not cal.is_session(date(2040, 1, 7))  # a Saturday
