"""``mlops train``: train the Ludwig model on the latest dataset, track it, register it,
and move the champion alias only when the new version wins on the holdout.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import update

from mlops import tracking
from mlops.context import Context
from mlops.contracts import datasets
from mlops.contracts.columns import TARGET_COLUMN
from mlops.contracts.datasets import Manifest
from mlops.contracts.models import (
    MODEL_ARTIFACT_PATH,
    Lineage,
    ModelRef,
    champion,
    load_registered,
    predict_close,
)
from mlops.contracts.portable import PORTABLE_FOLDER
from mlops.db.schema import retrain_requests
from mlops.errors import ModelError
from mlops.metrics import regression_metrics
from mlops.runs import utcnow
from mlops.training.model_config import load_model_config
from mlops.training.promotion import Decision, decide
from mlops.training.splits import Splits, split_by_date

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "holdout")
# Largest difference allowed between the portable export and LudwigModel.predict.
PORTABLE_TOLERANCE = 1e-6


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    dataset_version: str
    promoted: bool
    reason: str
    champion_version: str | None
    holdout: dict[str, float]
    baseline: dict[str, float]
    champion_holdout: dict[str, float] | None


@dataclass
class _Evaluation:
    """A trained model's metrics on every split, the naive forecast's and the champion's."""

    per_split: dict[str, dict[str, float]]
    baseline: dict[str, float]
    champion_holdout: dict[str, float] | None
    decision: Decision


def naive_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """The naive baseline: tomorrow's close is today's close."""
    return regression_metrics(frame[TARGET_COLUMN], frame["close"])


def run(ctx: Context, as_of: date | None = None) -> TrainResult:
    """Train on the newest dataset published on or before ``as_of``."""
    settings = ctx.settings
    config = load_model_config(settings)  # fails before anything is written
    manifest, frame = datasets.load(ctx.store, datasets.latest_version(ctx.engine, as_of))
    splits = split_by_date(
        frame, validation_days=settings.validation_days, holdout_days=settings.holdout_days
    )
    client = ctx.mlflow
    experiment_id = tracking.ensure_experiment(client, settings)
    current = champion(client, settings.model_name, settings.champion_alias)
    lineage = _lineage(manifest, splits)
    run_id = client.create_run(
        experiment_id, tags={"stage": "train", **lineage.to_tags()}
    ).info.run_id
    try:
        client.log_batch(run_id, params=_params(config, manifest, splits, settings.random_seed))
        client.log_dict(run_id, config, "ludwig_config.yaml")
        model, stats = _fit(config, splits, settings.random_seed)
        client.log_dict(run_id, stats, "training_statistics.json")
        evaluation = _evaluate(client, model, splits, current)
        _log_evaluation(client, run_id, evaluation, current)
        _log_model(client, run_id, model, splits.holdout)
        registered = _register(client, settings.model_name, run_id, lineage, evaluation)
        if evaluation.decision.promote:
            client.set_registered_model_alias(
                settings.model_name, settings.champion_alias, registered
            )
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) else "FAILED"
        _end_run(client, run_id, status)
        raise
    _end_run(client, run_id, "FINISHED")
    _resolve_retrain_requests(ctx, run_id, as_of)
    decision = evaluation.decision
    log.info(
        "Model %s version %s: %s (%s)",
        settings.model_name,
        registered,
        "promoted to champion" if decision.promote else "not promoted",
        decision.reason,
    )
    return TrainResult(
        run_id=run_id,
        model_name=settings.model_name,
        model_version=registered,
        dataset_version=manifest.version,
        promoted=decision.promote,
        reason=decision.reason,
        champion_version=registered if decision.promote else (current.version if current else None),
        holdout=evaluation.per_split["holdout"],
        baseline=evaluation.baseline,
        champion_holdout=evaluation.champion_holdout,
    )


def _lineage(manifest: Manifest, splits: Splits) -> Lineage:
    ranges = splits.ranges()
    return Lineage(
        dataset_version=manifest.version,
        dataset_hash=manifest.content_hash,
        as_of=manifest.as_of,
        **{f"{name}_{end}": ranges[f"{name}_{end}"] for name in SPLITS for end in ("start", "end")},
    )


def _evaluate(
    client: MlflowClient, model: Any, splits: Splits, current: ModelRef | None
) -> _Evaluation:
    per_split = {
        name: regression_metrics(part[TARGET_COLUMN], predict_close(model, part))
        for name, part in ((n, getattr(splits, n)) for n in SPLITS)
    }
    baseline = naive_metrics(splits.holdout)
    champion_holdout = None
    if current is not None:
        champion_model = load_registered(client, current)
        champion_holdout = regression_metrics(
            splits.holdout[TARGET_COLUMN], predict_close(champion_model, splits.holdout)
        )
    decision = decide(per_split["holdout"], baseline, champion_holdout)
    return _Evaluation(per_split, baseline, champion_holdout, decision)


def _log_evaluation(
    client: MlflowClient, run_id: str, evaluation: _Evaluation, current: ModelRef | None
) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(utcnow().timestamp() * 1000)
    values = {
        f"{split}_{k}": v
        for split, metrics in evaluation.per_split.items()
        for k, v in metrics.items()
    }
    values.update({f"baseline_holdout_{k}": v for k, v in evaluation.baseline.items()})
    if evaluation.champion_holdout is not None:
        values.update({f"champion_holdout_{k}": v for k, v in evaluation.champion_holdout.items()})
    decision = evaluation.decision
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
        tags=[
            RunTag("promotion", "promoted" if decision.promote else "rejected"),
            RunTag("promotion_reason", decision.reason[:5000]),
        ],
    )
    client.log_dict(
        run_id,
        {
            **asdict(decision),
            "champion_version": current.version if current else None,
            "holdout": evaluation.per_split["holdout"],
            "baseline": evaluation.baseline,
            "champion_holdout": evaluation.champion_holdout,
        },
        "promotion.json",
    )


def _log_model(client: MlflowClient, run_id: str, model: Any, holdout: pd.DataFrame) -> None:
    """The Ludwig model as an MLflow model (``ludwig`` flavour) under the run's ``model``,
    with its portable export (``model/portable``) checked against ``LudwigModel.predict``.
    """
    from ludwig.contribs.mlflow.model import save_model

    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        folder = Path(tmp) / MODEL_ARTIFACT_PATH
        save_model(model, str(folder))
        export_portable(model, holdout, folder / PORTABLE_FOLDER)
        client.log_artifacts(run_id, str(folder), MODEL_ARTIFACT_PATH)


def export_portable(model: Any, holdout: pd.DataFrame, folder: Path) -> None:
    """Write the portable form, refusing a model it does not reproduce within 1e-6."""
    from mlops.contracts.portable import encode, save
    from mlops.contracts.predictor import FastPredictor, UnsupportedModelError

    try:
        portable = FastPredictor.from_ludwig(model).portable()
    except UnsupportedModelError as exc:
        raise ModelError(
            f"The model cannot be exported to the portable form the serve and batch-infer "
            f"images load ({exc}); it was not registered. Use a config the fast predictor "
            "supports (docs/serving.md)."
        ) from None
    inputs = holdout[list(portable.input_features)].reset_index(drop=True)
    expected, _ = model.predict(inputs)
    expected = expected[f"{portable.target}_predictions"].to_numpy(dtype="float64")
    difference = float(np.max(np.abs(portable.predict_frame(inputs) - expected), initial=0.0))
    if not difference <= PORTABLE_TOLERANCE:
        raise ModelError(
            f"The portable export differs from LudwigModel.predict by {difference:.3g} on "
            f"the holdout (more than {PORTABLE_TOLERANCE:g}); the model was not registered."
        )
    save(folder, *encode(portable.config, portable.inputs, portable.network))


def _end_run(client: MlflowClient, run_id: str, status: str) -> None:
    try:
        client.set_terminated(run_id, status)
    except Exception as exc:  # the training's own outcome matters more
        log.warning("MLflow run %s could not be marked %s: %s", run_id, status, exc)


def _resolve_retrain_requests(ctx: Context, run_id: str, as_of: date | None) -> None:
    """Open retrain requests up to this run's day are answered by this run."""
    query = update(retrain_requests).where(retrain_requests.c.status == "open")
    if as_of is not None:
        query = query.where(retrain_requests.c.requested_date <= as_of)
    with ctx.engine.begin() as conn:
        conn.execute(query.values(status="done", resolved_at=utcnow(), resolved_by=run_id))


def _fit(config: dict[str, Any], splits: Splits, seed: int) -> tuple[Any, dict[str, Any]]:
    from ludwig.api import LudwigModel

    with tempfile.TemporaryDirectory(prefix="ludwig-") as tmp, warnings.catch_warnings():
        # torchmetrics warns about R^2 on a last batch of one row; it is not our metric.
        warnings.filterwarnings("ignore", message=".*R\\^2 score is not well-defined.*")
        model = LudwigModel(config, logging_level=logging.ERROR)
        try:
            result = model.train(
                training_set=splits.train,
                validation_set=splits.validation,
                test_set=splits.holdout,
                output_directory=tmp,
                random_seed=seed,
                skip_save_processed_input=True,
                skip_save_log=True,
                skip_save_progress=True,
                skip_save_training_description=True,
            )
        except Exception as exc:
            raise ModelError(f"Ludwig training failed: {exc}.") from exc
        # Reload the best checkpoint saved by Ludwig so the model is the validated one.
        model_dir = Path(result.output_directory) / "model"
        if model_dir.exists():
            model = LudwigModel.load(str(model_dir), backend="local")
        stats = json.loads(json.dumps(result.train_stats, default=_to_jsonable))
    return model, stats


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def _params(config: dict[str, Any], manifest: Manifest, splits: Splits, seed: int) -> list[Any]:
    from mlflow.entities import Param

    trainer = config.get("trainer", {})
    combiner = config.get("combiner", {})
    params: dict[str, Any] = {
        "dataset_version": manifest.version,
        "dataset_rows": manifest.rows,
        "symbols": ",".join(manifest.symbols),
        "output_feature": config["output_features"][0]["name"],
        "input_features": ",".join(f["name"] for f in config["input_features"]),
        "random_seed": seed,
        **{f"trainer.{k}": v for k, v in trainer.items()},
        **{f"combiner.{k}": v for k, v in combiner.items()},
        **splits.ranges(),
    }
    return [Param(k, str(v)[:500]) for k, v in params.items()]


def _register(
    client: MlflowClient, name: str, run_id: str, lineage: Lineage, evaluation: _Evaluation
) -> str:
    """A new version of ``name`` from the run's model, its lineage and holdout figures as tags."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise ModelError(f"The MLflow registry could not be read: {exc.message}.") from None
        client.create_registered_model(
            name, description="Next-day close of daily US equities, from a Ludwig model."
        )
    holdout, decision = evaluation.per_split["holdout"], evaluation.decision
    mv = client.create_model_version(
        name,
        source=f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
        run_id=run_id,
        tags={
            **lineage.to_tags(),
            "holdout_mae": f"{holdout['mae']:.6f}",
            "holdout_mape": f"{holdout['mape']:.6f}",
            "promotion": "promoted" if decision.promote else "rejected",
            "promotion_reason": decision.reason,
        },
    )
    return str(mv.version)
