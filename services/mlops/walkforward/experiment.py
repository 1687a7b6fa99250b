"""The walk-forward in MLflow: runs of their own experiment, never registry versions.

The experiment is ``<MLFLOW_EXPERIMENT>-walk-forward``. A walk-forward is one parent run
(tag ``mlops_walkforward_key``); each retrain point and model is a nested run under it
(``mlflow.parentRunId``) with the model's config, split ranges and figures, and, once
the gate has run, its decision (``promotion``, the p-values). The parent carries the
summary's headline figures per model and the report. The registry holds only what the
live system promoted.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import tracking
from mlops.runs import utcnow
from mlops.settings import Settings
from mlops.walkforward.plan import Plan
from mlops.walkforward.points import PointResult
from mlops.walkforward.timeline import Period

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

EXPERIMENT_SUFFIX = "-walk-forward"
KEY_TAG = "mlops_walkforward_key"
POINT_TAG = "mlops_walkforward_point"
MODEL_TAG = "mlops_walkforward_model"
PARENT_TAG = "mlflow.parentRunId"


def experiment_id(client: MlflowClient, settings: Settings) -> str:
    name = f"{settings.mlflow_experiment}{EXPERIMENT_SUFFIX}"
    return tracking.ensure_experiment(
        client, settings.model_copy(update={"mlflow_experiment": name})
    )


def open_parent(client: MlflowClient, experiment: str, plan: Plan) -> str:
    """A new parent run for ``plan``: its id."""
    from mlflow.entities import Param

    run = client.create_run(
        experiment,
        tags={KEY_TAG: plan.key, "stage": "walk-forward", "mlflow.runName": f"wf-{plan.key}"},
    )
    params = {
        "dataset_version": plan.dataset_version,
        "from": plan.start,
        "to": plan.end,
        "retrain_every": plan.retrain_every,
        "window": plan.window,
        "models": ",".join(plan.models),
        "retrain_points": len(plan.points),
    }
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def record_point(
    client: MlflowClient, experiment: str, parent: str, plan: Plan, result: PointResult
) -> dict[str, str]:
    """One nested run per model of the point (found again on a rerun, not duplicated)."""
    from mlflow.entities import Metric, Param

    ids = {}
    now = int(utcnow().timestamp() * 1000)
    for name, outcome in result.models.items():
        existing = _nested(client, experiment, plan.key, result.index, name)
        if existing is not None:
            ids[name] = existing
            continue
        run = client.create_run(
            experiment,
            tags={
                PARENT_TAG: parent,
                KEY_TAG: plan.key,
                POINT_TAG: str(result.index),
                MODEL_TAG: name,
                "mlflow.runName": f"{name}@{result.trained_to}",
            },
        )
        run_id = run.info.run_id
        params = {"model_name": name, "trained_to": result.trained_to, **outcome.ranges}
        metrics = {
            f"{split}_{k}": v
            for split, figures in outcome.per_split.items()
            for k, v in figures.items()
        }
        metrics["train_seconds"] = outcome.seconds
        client.log_batch(
            run_id,
            params=[Param(k, str(v)[:500]) for k, v in params.items()],
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        )
        client.log_dict(run_id, outcome.config, "ludwig_config.yaml")
        client.set_terminated(run_id, "FINISHED")
        ids[name] = run_id
    return ids


def record_gate(client: MlflowClient, experiment: str, plan: Plan, periods: list[Period]) -> None:
    """Each nested run gets the gate's decision on its version."""
    from mlflow.entities import Metric, RunTag

    now = int(utcnow().timestamp() * 1000)
    for period in periods:
        run_id = _nested(client, experiment, plan.key, period.point, period.model)
        if run_id is None:
            continue
        values = {
            "dm_p_value_naive": period.p_value_naive,
            "dm_p_value_champion": period.p_value_champion,
            "baseline_holdout_mape": period.naive_mape,
            "champion_holdout_mape": period.champion_mape,
        }
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in values.items() if v is not None],
            tags=[
                RunTag("promotion", "promoted" if period.promoted else "rejected"),
                RunTag("promotion_reason", period.reason[:5000]),
            ],
        )


def close_parent(
    client: MlflowClient, parent: str, summary: dict[str, Any], report: str, status: str
) -> None:
    """The headline figures per model, the summary and the report; the run ended."""
    from mlflow.entities import Metric

    now = int(utcnow().timestamp() * 1000)
    metrics = []
    for name, figures in summary.get("models", {}).items():
        for section in ("forecast", "trading"):
            for key, value in figures.get(section, {}).items():
                if isinstance(value, int | float) and value == value:  # not NaN
                    metrics.append(Metric(f"{name}.{section}.{key}"[:250], float(value), now, 0))
    for start in range(0, len(metrics), 900):
        client.log_batch(parent, metrics=metrics[start : start + 900])
    client.log_dict(parent, summary, "summary.json")
    with tempfile.TemporaryDirectory(prefix="mlops-walkforward-") as tmp:
        path = Path(tmp) / "report.html"
        path.write_text(report)
        client.log_artifact(parent, str(path))
    client.set_terminated(parent, status)


def end_quietly(client: MlflowClient, run_id: str, status: str) -> None:
    try:
        client.set_terminated(run_id, status)
    except Exception as exc:  # the walk-forward's own outcome matters more
        log.warning("MLflow run %s could not be marked %s: %s", run_id, status, exc)


def _nested(client: MlflowClient, experiment: str, key: str, point: int, model: str) -> str | None:
    found = client.search_runs(
        [experiment],
        filter_string=(
            f"tags.{KEY_TAG} = '{key}' and tags.{POINT_TAG} = '{point}' "
            f"and tags.{MODEL_TAG} = '{model}'"
        ),
        max_results=1,
    )
    return found[0].info.run_id if found else None
