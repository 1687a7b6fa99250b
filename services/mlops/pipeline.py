"""The daily pipeline, defined once: the day's stages in order, and when to retrain.

Whoever runs the day uses this: ``mlops daily`` in the cluster (each stage a Kubernetes
Job, ``mlops.orchestration``) and ``mlops demo`` on one machine (each stage a function
call, ``mlops.demo``). The monitor stage only *records* retrain requests (table
``retrain_requests``); after the day's stages, the runner asks :func:`plan_retraining`
whether to train, and training answers the requests it covered.

The retrain rule: train when a retrain request is open for the day or earlier and at
least ``RETRAIN_COOLDOWN_DAYS`` weekdays have passed since the day of the last successful
training (so a noisy alarm cannot retrain every day).

The trade stage runs once per strategy (:func:`stage_parts`; the strategies file,
``mlops.contracts.strategies``): in the cluster one trade Job per strategy, each with its
own account's Secret only, side by side; in the demo one call per strategy. Without a
strategies file it is one run, exactly as before strategies existed.

What a scheduled training trains (the retrain rule's, the weekly CronJob's): every model
of the catalog that is not paused (``mlops models pause``), :func:`scheduled_models`. In
the cluster that is ``mlops train --all`` (:data:`SCHEDULED_TRAIN_ARGS`), whose training
stage skips paused models the same way; the demo trains :func:`scheduled_models` one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Engine, select

from mlops import market_calendar
from mlops.contracts.catalog import model_names
from mlops.contracts.models import is_paused
from mlops.contracts.strategies import DEFAULT_STRATEGY, StrategySpec
from mlops.db.schema import retrain_requests, stage_runs
from mlops.errors import ConfigError
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops.store import ObjectStore

DAILY_STAGES: tuple[str, ...] = ("data-prep", "batch-infer", "trade", "monitor")
TRAIN_STAGE = "train"
TRADE_STAGE = "trade"
STRATEGY_OPTION = "--strategy"
# The command of a scheduled training: every catalog model that is not paused.
SCHEDULED_TRAIN_ARGS: tuple[str, ...] = (TRAIN_STAGE, "--all")


@dataclass(frozen=True)
class StagePart:
    """One run of the day: a stage, or the trade stage of one strategy."""

    stage: str
    strategy: str | None = None  # None: the stage runs once, for everything

    @property
    def args(self) -> list[str]:
        """What the stage's command gets besides its day."""
        return [] if self.strategy is None else [STRATEGY_OPTION, self.strategy]

    @property
    def infix(self) -> str:
        """Its part of a per-day name (the default strategy's names are the stage's own)."""
        return "" if self.strategy in (None, DEFAULT_STRATEGY) else str(self.strategy)


def stage_parts(
    strategies: Sequence[StrategySpec] | None, stages: Sequence[str] = DAILY_STAGES
) -> list[StagePart]:
    """The day's runs in order: each stage once, the trade stage once per strategy (once,
    as before strategies, when ``strategies`` is None: no strategies file). The parts of
    one stage are independent of each other and may run side by side."""
    parts: list[StagePart] = []
    for stage in stages:
        if stage == TRADE_STAGE and strategies is not None:
            parts.extend(StagePart(stage, spec.name) for spec in strategies)
        else:
            parts.append(StagePart(stage))
    return parts


@dataclass(frozen=True)
class RetrainPlan:
    """Whether the day ends with a training, and why (or why not)."""

    retrain: bool
    reason: str
    open_requests: int
    last_training: date | None


def weekdays_between(start: date, end: date) -> int:
    """Weekdays from ``start`` (included) to ``end`` (excluded)."""
    return int(np.busday_count(start, end))


def retrain_rule(
    open_reasons: list[str], last_training: date | None, day: date, cooldown_days: int
) -> RetrainPlan:
    """The rule itself, on plain values (see the module's docstring)."""
    if not open_reasons:
        return RetrainPlan(False, "no open retrain request", 0, last_training)
    count = len(open_reasons)
    if last_training is not None:
        waited = weekdays_between(last_training, day)
        if waited < cooldown_days:
            return RetrainPlan(
                False,
                f"{count} open retrain request(s), but the last training was {waited} "
                f"weekday(s) ago, under the cool-down of {cooldown_days}",
                count,
                last_training,
            )
    return RetrainPlan(True, open_reasons[-1], count, last_training)


def plan_retraining(engine: Engine, day: date, cooldown_days: int) -> RetrainPlan:
    """The rule applied to what the database says: open requests and the last training."""
    with engine.connect() as conn:
        reasons = list(
            conn.execute(
                select(retrain_requests.c.reason)
                .where(
                    retrain_requests.c.status == "open",
                    retrain_requests.c.requested_date <= day,
                )
                .order_by(retrain_requests.c.requested_date)
            ).scalars()
        )
        runs = conn.execute(
            select(stage_runs.c.run_date, stage_runs.c.started_at).where(
                stage_runs.c.stage == TRAIN_STAGE, stage_runs.c.status == "succeeded"
            )
        ).all()
    trained = [run_date or started_at.date() for run_date, started_at in runs]
    last = max((d for d in trained if d <= day), default=None)
    return retrain_rule(reasons, last, day, cooldown_days)


def missed_sessions(engine: Engine, day: date, max_sessions: int) -> list[date]:
    """The sessions a catch-up runs, oldest first: every session after the last one whose
    daily pipeline completed (its last stage succeeded) up to ``day``; only ``day`` when
    none ever completed. More than ``max_sessions`` is refused with a sentence: a long
    outage is a decision (trading days the system did not see), not a loop to start blind.
    """
    with engine.connect() as conn:
        last = conn.execute(
            select(stage_runs.c.run_date)
            .where(
                stage_runs.c.stage == DAILY_STAGES[-1],
                stage_runs.c.status == "succeeded",
                stage_runs.c.run_date <= day,
            )
            .order_by(stage_runs.c.run_date.desc())
            .limit(1)
        ).scalar()
    if last is None:
        return [day] if market_calendar.is_session(day) else []
    missed = [d for d in market_calendar.sessions(last, day) if d > last]
    if len(missed) > max_sessions:
        raise ConfigError(
            f"{len(missed)} sessions were missed since the last complete day {last} (from "
            f"{missed[0]} to {missed[-1]}), more than DAILY_CATCH_UP_MAX_SESSIONS="
            f"{max_sessions}; raise it to run them all in order, or run chosen days with "
            "`mlops daily --as-of`."
        )
    return missed


def scheduled_models(
    client: MlflowClient, settings: Settings, store: ObjectStore | None
) -> list[str]:
    """The models a scheduled training trains: the catalog's (with the stored catalog of
    ``store``), less the paused ones."""
    return [name for name in model_names(settings, store) if not is_paused(client, name)]
