"""The exchange calendar: which days the US stock market (NYSE, ``XNYS``) is open.

Sessions, holidays and early closes come from ``exchange_calendars`` (a maintained
library: its NYSE calendar carries every regular and ad-hoc closing, such as national
days of mourning, and the 13:00 early closes). Every stage (data prep, train,
batch-infer, trade, monitor) and ``mlops daily`` treat a day that is not a session as
closed (:func:`closed_day`): nothing done, exit 0; trading with a broker asks
which session is the latest completed one at the broker's clock.

Days outside the calendar's range (before 1990 or more than a year ahead) fall back to
Monday to Friday, with a warning.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar

log = logging.getLogger(__name__)

EXCHANGE = "XNYS"
EXCHANGE_NAME = "NYSE"
FIRST_DAY = "1990-01-01"


@lru_cache(maxsize=1)
def calendar() -> ExchangeCalendar:
    """The NYSE calendar (built once per process, about a second)."""
    import exchange_calendars as xcals

    return xcals.get_calendar(EXCHANGE, start=FIRST_DAY)


def _in_range(day: date) -> bool:
    cal = calendar()
    inside = cal.first_session.date() <= day <= cal.last_session.date()
    if not inside:
        log.warning(
            "%s is outside the %s calendar (%s to %s): treating weekdays as sessions.",
            day,
            EXCHANGE_NAME,
            cal.first_session.date(),
            cal.last_session.date(),
        )
    return inside


def is_session(day: date) -> bool:
    """True when the exchange trades on ``day``."""
    if not _in_range(day):
        return day.weekday() < 5
    return bool(calendar().is_session(pd.Timestamp(day)))


def closed_reason(day: date) -> str | None:
    """None on a session; otherwise why the market was closed (weekend, holiday's name)."""
    if is_session(day):
        return None
    if day.weekday() >= 5:
        return f"{day} was a {day:%A}: the {EXCHANGE_NAME} was closed"
    name = holiday_name(day)
    what = f"a holiday ({name})" if name else "a holiday"
    return f"{day} was {what}: the {EXCHANGE_NAME} was closed"


def closed_day(as_of: date, nothing: str) -> str | None:
    """Every stage's check of its ``--as-of`` day: None on a session; on a closed day,
    the reason, logged with what the stage does not do (``nothing``).

    A stage given a closed day does nothing and ends successfully, its result carrying
    the reason as ``market_closed``: no data exists for that day by design, so there is
    nothing to fix and nothing to rerun.
    """
    closed = closed_reason(as_of)
    if closed:
        log.info("%s: %s.", closed, nothing)
    return closed


def holiday_name(day: date) -> str | None:
    """The name of the regular holiday on ``day``, when the calendar names it."""
    cal = calendar()
    stamp = pd.Timestamp(day)
    rules = cal.regular_holidays
    if rules is not None:
        named = rules.holidays(stamp, stamp, return_name=True)
        if len(named):
            return str(named.iloc[0])
    return None


def session_close(day: date) -> datetime:
    """When the session of ``day`` closes, in UTC (13:00 New York on an early close)."""
    if not _in_range(day):
        return datetime(day.year, day.month, day.day, 21, 0, tzinfo=UTC)
    return calendar().session_close(pd.Timestamp(day)).to_pydatetime()


def session_open(day: date) -> datetime:
    """When the session of ``day`` opens, in UTC."""
    if not _in_range(day):
        return datetime(day.year, day.month, day.day, 14, 30, tzinfo=UTC)
    return calendar().session_open(pd.Timestamp(day)).to_pydatetime()


def is_early_close(day: date) -> bool:
    """True for a shortened session (the day before Independence Day, after Thanksgiving...)."""
    if not is_session(day) or not _in_range(day):
        return False
    cal = calendar()
    return bool(pd.Timestamp(day) in cal.early_closes)


def previous_session(day: date) -> date:
    """The last session strictly before ``day``."""
    cal = calendar()
    stamp = pd.Timestamp(day)
    if _in_range(day):
        before = pd.Timestamp(day - timedelta(days=1))
        return cal.date_to_session(before, direction="previous").date()
    return (stamp - pd.offsets.BDay(1)).date()


def latest_completed_session(now: datetime) -> date:
    """The newest session whose close is at or before ``now`` (an aware datetime)."""
    if now.tzinfo is None:
        raise ValueError("latest_completed_session needs an aware datetime")
    today = pd.Timestamp(now.astimezone(UTC)).tz_convert("America/New_York").date()
    day = today if is_session(today) else previous_session(today)
    while session_close(day) > now:
        day = previous_session(day)
    return day


def sessions(start: date, end: date) -> list[date]:
    """Every session from ``start`` to ``end``, both included."""
    if end < start:
        return []
    cal = calendar()
    if _in_range(start) and _in_range(end):
        found = cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
        return [d.date() for d in found]
    return [d.date() for d in pd.bdate_range(start, end)]
