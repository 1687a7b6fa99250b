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
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import update

from mlops import tracking
from mlops.context import Context
from mlops.data_prep import dataset
from mlops.db.schema import retrain_requests
from mlops.errors import ModelError
from mlops.metrics import regression_metrics
from mlops.runs import utcnow
from mlops.training.model_config import load_model_config
from mlops.training.predict import predict_close
from mlops.training.promotion import Decision, decide
from mlops.training.splits import Splits, split_by_date

log = logging.getLogger(__name__)


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


def naive_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """The naive baseline: tomorrow's close is today's close."""
    return regression_metrics(frame["next_close"], frame["close"])


def run(ctx: Context, as_of: date | None = None) -> TrainResult:
    """Train on the newest dataset published on or before ``as_of``."""
    settings = ctx.settings
    config = load_model_config(settings)  # fails before anything is written
    version = dataset.latest_version(ctx.engine, as_of)
    manifest, frame = dataset.load(ctx.store, version)
    splits = split_by_date(
        frame, validation_days=settings.validation_days, holdout_days=settings.holdout_days
    )
    client = tracking.configure(settings)
    experiment_id = tracking.ensure_experiment(client, settings)
    current = tracking.champion(client, settings)

    import mlflow

    with mlflow.start_run(experiment_id=experiment_id) as active:
        run_id = active.info.run_id
        mlflow.set_tags(
            {
                "stage": "train",
                "dataset_version": manifest.version,
                "dataset_hash": manifest.content_hash,
                "as_of": manifest.as_of,
            }
        )
        mlflow.log_params(_params(config, manifest, splits, settings.random_seed))
        mlflow.log_dict(config, "ludwig_config.yaml")
        model, stats = _fit(config, splits, settings.random_seed)
        mlflow.log_dict(stats, "training_statistics.json")

        per_split = {
            name: regression_metrics(part["next_close"], predict_close(model, config, part))
            for name, part in (
                ("train", splits.train),
                ("validation", splits.validation),
                ("holdout", splits.holdout),
            )
        }
        baseline = naive_metrics(splits.holdout)
        champion_holdout = None
        if current is not None:
            champion_model = tracking.load_ludwig_model(current)
            champion_holdout = regression_metrics(
                splits.holdout["next_close"],
                predict_close(champion_model, champion_model.config, splits.holdout),
            )
        decision = decide(per_split["holdout"], baseline, champion_holdout)

        for split_name, values in per_split.items():
            mlflow.log_metrics({f"{split_name}_{k}": v for k, v in values.items()})
        mlflow.log_metrics({f"baseline_holdout_{k}": v for k, v in baseline.items()})
        if champion_holdout is not None:
            mlflow.log_metrics({f"champion_holdout_{k}": v for k, v in champion_holdout.items()})
        mlflow.log_dict(
            {
                **asdict(decision),
                "champion_version": current.version if current else None,
                "holdout": per_split["holdout"],
                "baseline": baseline,
                "champion_holdout": champion_holdout,
            },
            "promotion.json",
        )
        mlflow.set_tag("promotion", "promoted" if decision.promote else "rejected")
        mlflow.set_tag("promotion_reason", decision.reason)

        from ludwig.contribs.mlflow.model import log_model

        log_model(model, "model")

    registered = _register(
        client, settings.model_name, run_id, manifest.version, per_split, decision
    )
    if decision.promote:
        client.set_registered_model_alias(settings.model_name, settings.champion_alias, registered)
    _resolve_retrain_requests(ctx, run_id, as_of)
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
        holdout=per_split["holdout"],
        baseline=baseline,
        champion_holdout=champion_holdout,
    )


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


def _params(config: dict[str, Any], manifest: Any, splits: Splits, seed: int) -> dict[str, Any]:
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
    return {k: str(v)[:500] for k, v in params.items()}


def _register(
    client: Any,
    name: str,
    run_id: str,
    dataset_version: str,
    per_split: dict[str, dict[str, float]],
    decision: Decision,
) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Next-day close of daily US equities, from a Ludwig model."
        )
    mv = client.create_model_version(
        name,
        source=f"{client.get_run(run_id).info.artifact_uri}/model",
        run_id=run_id,
        tags={
            "dataset_version": dataset_version,
            "holdout_mae": f"{per_split['holdout']['mae']:.6f}",
            "holdout_mape": f"{per_split['holdout']['mape']:.6f}",
            "promotion": "promoted" if decision.promote else "rejected",
            "promotion_reason": decision.reason,
        },
    )
    return str(mv.version)
