"""One retrain point of a walk-forward: every named catalog model trained on the
point-in-time dataset exactly as ``mlops train`` trains it (its Ludwig config, the same
date splits, seed and fit), then asked for its predictions.

A point's models predict every scorable row from their holdout's first session to the
walk-forward's last: the rows up to ``trained_to`` are what the promotion gate compares
(this point's holdout, and the holdouts of later points where its version may be the
champion), the rows after it what the version decides while it serves. Nothing after
``trained_to`` is trained on. Points are independent of each other: a process pool or
the pods of an Indexed Job run them in any order, and the gate runs afterwards
(:mod:`mlops.walkforward.timeline`).

A point's results live under ``walkforward/points/<points key>/``, a key of what shapes
the trainings only (dataset, window, models and their configs, seed, splits): a
walk-forward with other strategy rules or another ``PROMOTION_MAX_P_VALUE`` reuses them.
Its predictions, then its JSON (written last: a point is done when its JSON exists, so a
rerun trains only the points that are missing).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import pandas as pd

from mlops.contracts import catalog, datasets
from mlops.contracts.columns import WARMUP_COLUMN
from mlops.contracts.keys import walkforward_point_keys
from mlops.contracts.models import predict_close
from mlops.settings import Settings
from mlops.store import ObjectStore, get_json, get_parquet, put_json, put_parquet
from mlops.training.model_config import load_model_config
from mlops.training.splits import Splits, split_by_date
from mlops.training.stage import fit, split_figures
from mlops.walkforward.plan import Plan, Window, point_in_time

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["day", "symbol", "model", "point", "trained_to", "prediction"]


@dataclass
class ModelOutcome:
    """One model trained at one point: its figures on every split and its ranges."""

    model: str
    per_split: dict[str, dict[str, float]]
    ranges: dict[str, str]
    seconds: float
    config: dict[str, Any]


@dataclass
class PointResult:
    index: int
    trained_to: date
    models: dict[str, ModelOutcome]
    seconds: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PointResult:
        return cls(
            index=data["index"],
            trained_to=date.fromisoformat(data["trained_to"]),
            models={k: ModelOutcome(**v) for k, v in data["models"].items()},
            seconds=data["seconds"],
        )


def is_done(store: ObjectStore, plan: Plan, index: int) -> bool:
    return store.exists(walkforward_point_keys(plan.points_key, index)[1])


def load_result(store: ObjectStore, plan: Plan, index: int) -> PointResult:
    return PointResult.from_dict(get_json(store, walkforward_point_keys(plan.points_key, index)[1]))


def train_point(
    settings: Settings,
    store: ObjectStore,
    plan: Plan,
    index: int,
    frame: pd.DataFrame | None = None,
) -> PointResult:
    """Train the point's models and publish their predictions (see the module); a point
    already published is read back, not trained again.
    """
    if is_done(store, plan, index):
        log.info("Walk-forward %s point %d is already trained: reused", plan.key, index)
        return load_result(store, plan, index)
    began = time.perf_counter()
    if frame is None:
        frame = datasets.load(store, plan.dataset_version)[1]
    point = plan.points[index]
    known = point_in_time(frame, point.trained_to, Window.parse(plan.window))
    splits = split_by_date(
        known, validation_days=settings.validation_days, holdout_days=settings.holdout_days
    )
    rows = _rows_to_predict(frame, splits, plan.end)
    outcomes, predictions = {}, []
    for name in plan.models:
        outcome, predicted = _train_model(settings, store, name, splits, rows)
        outcomes[name] = outcome
        predictions.append(
            pd.DataFrame(
                {
                    "day": rows["date"].to_numpy(),
                    "symbol": rows["symbol"].to_numpy(),
                    "model": name,
                    "point": index,
                    "trained_to": pd.Timestamp(point.trained_to),
                    "prediction": predicted,
                }
            )
        )
        log.info(
            "Walk-forward point %d (trained to %s), %s: holdout MAPE %.4f%% in %.1f s",
            index,
            point.trained_to,
            name,
            100 * outcome.per_split["holdout"]["mape"],
            outcome.seconds,
        )
    result = PointResult(index, point.trained_to, outcomes, round(time.perf_counter() - began, 2))
    predictions_key, result_key = walkforward_point_keys(plan.points_key, index)
    put_parquet(store, predictions_key, pd.concat(predictions, ignore_index=True))
    put_json(store, result_key, _jsonable(asdict(result)))  # last: the point is done
    return result


def _rows_to_predict(frame: pd.DataFrame, splits: Splits, end: date) -> pd.DataFrame:
    """Scorable rows from the holdout's first session to the walk-forward's last."""
    first = splits.holdout["date"].min()
    rows = frame[(frame["date"] >= first) & (frame["date"] <= pd.Timestamp(end))]
    if WARMUP_COLUMN in rows:
        rows = rows[~rows[WARMUP_COLUMN].astype(bool)]
    return rows.reset_index(drop=True)


def _train_model(
    settings: Settings, store: ObjectStore, name: str, splits: Splits, rows: pd.DataFrame
) -> tuple[ModelOutcome, Any]:
    began = time.perf_counter()
    config = load_model_config(settings, catalog.spec(settings, store, name).config_path)
    model, _ = fit(config, splits, settings.random_seed)
    _, per_split = split_figures(model, splits)
    predicted = predict_close(model, rows)
    seconds = round(time.perf_counter() - began, 2)
    return ModelOutcome(name, per_split, splits.ranges(), seconds, config), predicted


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


class PointPredictions:
    """The points' predictions read from the store as the finalize step asks for them,
    at most ``keep`` points in memory at once (the candidate's and each model's champion
    and challenger): finalize's memory does not grow with the number of points.
    """

    def __init__(self, store: ObjectStore, plan: Plan, keep: int) -> None:
        self._store, self._plan, self._keep = store, plan, max(keep, 1)
        self._frames: OrderedDict[int, pd.DataFrame] = OrderedDict()

    def _frame(self, point: int) -> pd.DataFrame:
        if point in self._frames:
            self._frames.move_to_end(point)
            return self._frames[point]
        frame = get_parquet(self._store, walkforward_point_keys(self._plan.points_key, point)[0])
        self._frames[point] = frame
        while len(self._frames) > self._keep:
            self._frames.popitem(last=False)
        return frame

    def keyed(self, point: int, model: str) -> pd.Series:
        """One model's predictions at one point, indexed by (day, symbol)."""
        frame = self._frame(point)
        mine = frame[frame["model"] == model]
        return mine.set_index(["day", "symbol"])["prediction"]

    def rows(self, point: int, model: str, first: date, last: date) -> pd.DataFrame:
        """One model's prediction rows at one point for the sessions ``first``..``last``."""
        frame = self._frame(point)
        inside = (
            (frame["model"] == model)
            & (frame["day"] >= pd.Timestamp(first))
            & (frame["day"] <= pd.Timestamp(last))
        )
        return frame[inside]
