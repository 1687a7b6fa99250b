"""The champion timeline: the promotion gate replayed point by point, per model.

At each retrain point, each model's new version meets the gate ``mlops train`` applies
(:func:`mlops.training.stage.judge`: the naive forecast, the champion of the time,
Diebold-Mariano p-values, ``PROMOTION_MAX_P_VALUE``) on that point's holdout. A version
that wins serves from the next session on; one that loses but beats the naive forecast
becomes the challenger (scored in shadow), as the registry's aliases move live: the
challenger stays until another replaces it. Before any version wins, the model has no
champion and decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from mlops.contracts.predictions import on_rows
from mlops.settings import Settings
from mlops.training.splits import split_by_date
from mlops.training.stage import judge
from mlops.walkforward.plan import Plan, Window, point_in_time
from mlops.walkforward.points import PREDICTION_COLUMNS, PointPredictions, PointResult

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Period:
    """What served one model between two retrain points, and the gate that decided it."""

    model: str
    point: int
    trained_to: date
    first: date
    last: date
    sessions: int
    champion: int | None  # the point whose version serves (None: no champion yet)
    champion_trained_to: date | None
    challenger: int | None
    promoted: bool  # this point's version won the gate
    reason: str
    candidate_mape: float
    naive_mape: float
    champion_mape: float | None
    p_value_naive: float | None
    p_value_champion: float | None

    def to_row(self) -> dict[str, Any]:
        return self.__dict__.copy()


def champion_timeline(
    settings: Settings,
    plan: Plan,
    frame: pd.DataFrame,
    results: dict[int, PointResult],
    predictions: PointPredictions,
) -> list[Period]:
    """Every model's periods, point by point (see the module)."""
    window = Window.parse(plan.window)
    served: dict[str, tuple[int | None, int | None]] = {m: (None, None) for m in plan.models}
    periods = []
    for point in plan.points:
        known = point_in_time(frame, point.trained_to, window)
        holdout = split_by_date(
            known, validation_days=settings.validation_days, holdout_days=settings.holdout_days
        ).holdout
        for model in plan.models:
            champion, challenger = served[model]
            candidate = _on(predictions, model, point.index, holdout)
            current = None if champion is None else _on(predictions, model, champion, holdout)
            per_split = results[point.index].models[model].per_split
            evaluation = judge(settings, per_split, holdout, candidate, current)
            decision = evaluation.decision
            if decision.promote:
                champion = point.index
                challenger = None if challenger == champion else challenger
            elif evaluation.challenger:
                challenger = point.index
            served[model] = (champion, challenger)
            periods.append(
                Period(
                    model=model,
                    point=point.index,
                    trained_to=point.trained_to,
                    first=point.first,
                    last=point.last,
                    sessions=point.sessions,
                    champion=champion,
                    champion_trained_to=None if champion is None else _trained_to(plan, champion),
                    challenger=challenger,
                    promoted=decision.promote,
                    reason=decision.reason,
                    candidate_mape=decision.candidate,
                    naive_mape=decision.baseline,
                    champion_mape=decision.champion,
                    p_value_naive=evaluation.tests.get("dm_p_value_naive"),
                    p_value_champion=evaluation.tests.get("dm_p_value_champion"),
                )
            )
    return periods


def _trained_to(plan: Plan, index: int) -> date:
    return plan.points[index].trained_to


def _on(predictions: PointPredictions, model: str, point: int, rows: pd.DataFrame) -> np.ndarray:
    """The point's predictions for ``rows`` (date, symbol), in their order."""
    values = on_rows(predictions.keyed(point, model), rows)
    if np.isnan(values).any():
        missing = int(np.isnan(values).sum())
        raise ValueError(f"point {point} of {model} has no prediction for {missing} holdout rows")
    return values


def served_predictions(
    plan: Plan, periods: list[Period], predictions: PointPredictions
) -> pd.DataFrame:
    """The predictions that served: each period's sessions scored by its champion (role
    ``champion``) and its challenger (``challenger``), with the serving version's
    ``trained_to`` on every row.
    """
    parts = []
    for period in periods:
        for role, point in ((CHAMPION, period.champion), (CHALLENGER, period.challenger)):
            if point is None:
                continue
            rows = predictions.rows(point, period.model, period.first, period.last)
            parts.append(rows.assign(role=role))
    if not parts:
        columns = [*PREDICTION_COLUMNS, "role"]
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    served = pd.concat(parts, ignore_index=True)
    return served.sort_values(["model", "role", "day", "symbol"]).reset_index(drop=True)
