"""The walk-forward's plan: its retrain points, its windows, its key, and the point-in-time
dataset each retrain point trains on.

From ``--from`` F to ``--to`` T (decision sessions), every ``--retrain-every`` N sessions
a retrain point: point k is trained on what was known after the close of session
``R_k`` (``trained_to``), the session before its first decision session, and its models
decide sessions ``R_k + 1`` to ``R_(k+1)`` (the last point to T). That is the live order:
a training at the end of day R feeds the next day's batch inference.

The point-in-time dataset as of R is the published dataset cut at R: rows up to R, and
a target only where it was known on R (its ``target_date`` is R or before). Features are
causal (data prep computes each row from that row and the ones before it), so the cut
equals what ``mlops data-prep --as-of R`` publishes from the same stored bars, without a
fetch; tests/walkforward checks it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from mlops.contracts.columns import LOOKAHEAD_COLUMNS, TARGET_DATE_COLUMN
from mlops.errors import ConfigError, DataError

EXPANDING = "expanding"
ROLLING = "rolling"


@dataclass(frozen=True)
class Window:
    """How much history a retrain point trains on: all of it, or the last ``sessions``."""

    sessions: int | None = None  # None: expanding

    @classmethod
    def parse(cls, text: str) -> Window:
        if text == EXPANDING:
            return cls(None)
        kind, _, count = text.partition(":")
        if kind == ROLLING and count.isdigit() and int(count) > 0:
            return cls(int(count))
        raise ConfigError(
            f"--window must be {EXPANDING} or {ROLLING}:SESSIONS (e.g. {ROLLING}:500), "
            f"got {text!r}."
        )

    def __str__(self) -> str:
        return EXPANDING if self.sessions is None else f"{ROLLING}:{self.sessions}"


@dataclass(frozen=True)
class Point:
    """One retrain point: trained on data up to ``trained_to``, deciding ``first``..``last``."""

    index: int
    trained_to: date
    first: date
    last: date
    sessions: int


@dataclass(frozen=True)
class Plan:
    key: str  # everything that shapes the results, the strategy's rules included
    points_key: str  # what shapes the trainings only: points are shared across rules
    dataset_version: str
    start: date
    end: date
    retrain_every: int
    window: str
    models: list[str]
    points: list[Point] = field(default_factory=list)

    @property
    def sessions(self) -> int:
        return sum(p.sessions for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        points = [
            Point(
                index=p["index"],
                trained_to=date.fromisoformat(p["trained_to"]),
                first=date.fromisoformat(p["first"]),
                last=date.fromisoformat(p["last"]),
                sessions=p["sessions"],
            )
            for p in data["points"]
        ]
        return cls(
            key=data["key"],
            points_key=data["points_key"],
            dataset_version=data["dataset_version"],
            start=date.fromisoformat(data["start"]),
            end=date.fromisoformat(data["end"]),
            retrain_every=data["retrain_every"],
            window=data["window"],
            models=list(data["models"]),
            points=points,
        )


def sessions_of(frame: pd.DataFrame) -> list[date]:
    return sorted(pd.DatetimeIndex(frame["date"].unique()).date)


def retrain_points(
    days: list[date], start: date, end: date, retrain_every: int, min_history: int
) -> list[Point]:
    """The retrain points of the window ``start``..``end`` over the sessions ``days``."""
    if start > end:
        raise ConfigError(f"--from {start} is after --to {end}: the window would be empty.")
    if retrain_every < 1:
        raise ConfigError(f"--retrain-every must be at least 1 session, got {retrain_every}.")
    inside = [d for d in days if start <= d <= end]
    if not inside:
        raise DataError(
            f"No session of the dataset lies between {start} and {end} (it holds "
            f"{days[0]} to {days[-1]})."
        )
    first = days.index(inside[0])
    if first < min_history:
        earliest = days[min_history] if min_history < len(days) else days[-1]
        raise DataError(
            f"--from {start} leaves {first} sessions of history before it; the first "
            f"retrain point needs at least {min_history} (VALIDATION_DAYS + HOLDOUT_DAYS "
            f"+ 30 with targets, plus the indicators' warm-up): start on {earliest} or later."
        )
    points = []
    for n, at in enumerate(range(0, len(inside), retrain_every)):
        period = inside[at : at + retrain_every]
        trained_to = days[first + at - 1]
        points.append(Point(n, trained_to, period[0], period[-1], len(period)))
    return points


def plan_key(payload: dict[str, Any], end: date, retrain_every: int) -> str:
    """``<to>-every<N>-<digest>``: the digest of ``payload``."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    return f"{end:%Y%m%d}-every{retrain_every}-{digest.hexdigest()[:10]}"


def point_in_time(frame: pd.DataFrame, day: date, window: Window) -> pd.DataFrame:
    """The dataset as it was published after the close of ``day`` (see the module)."""
    dates = frame["date"]
    rows = frame[dates <= pd.Timestamp(day)]
    if window.sessions is not None:
        days = np.sort(rows["date"].unique())
        if len(days) > window.sessions:
            rows = rows[rows["date"] >= days[-window.sessions]]
    rows = rows.copy()
    unknown = ~(rows[TARGET_DATE_COLUMN] <= pd.Timestamp(day))  # NaT: unknown too
    for column in LOOKAHEAD_COLUMNS:
        if column in rows:
            rows.loc[unknown, column] = np.nan
    rows.loc[unknown, TARGET_DATE_COLUMN] = pd.NaT
    return rows.reset_index(drop=True)
