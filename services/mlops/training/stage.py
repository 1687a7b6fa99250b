"""``mlops train``: train a catalog model on the latest dataset, track it, register it
under its own name, and move the champion alias only when the new version wins on the
holdout (``run``); ``run_all`` trains every catalog model that is not paused.

A version that is not promoted but beats the naive forecast on the holdout becomes the
``challenger`` (scored in shadow beside the champion). Each comparison on the holdout
carries a Diebold-Mariano p-value (:func:`paired_tests`), logged to MLflow, kept in the
version's tags and ``promotion.json``; ``PROMOTION_MAX_P_VALUE`` makes it a condition. A
champion move by this gate is written to the audit table ``model_actions`` (actor
``train``). The holdout's information coefficient (:func:`holdout_ic`: IC and Rank IC of
the predicted against the realised next-day return, per session) is reported the same
way; it is not a condition.

A direction classifier (a model of ``next_up``, see :mod:`mlops.training.direction`) goes
through the same gate on its own figures: log loss (the promotion metric), Brier score,
accuracy and AUC against the base-rate classifier (the training window's share of rises),
the Diebold-Mariano tests on each day's mean log loss.

Reruns converge, whatever stopped the previous run:

* every MLflow run ends with a status: ``FINISHED``, ``FAILED``, or ``KILLED`` on SIGTERM
  and Ctrl-C; a run left ``RUNNING`` by a process that could not end it (kill -9, the
  tracking server gone) is closed by the next ``mlops train`` once its stage run is
  recorded as failed or abandoned (tag ``mlops_stage_run``);
* a run is keyed by its dataset version, model name and config, seed and split sizes (tag
  ``mlops_training_key``): when a run with the same key already registered its version
  (tag ``mlops_registration=done``) the rerun trains nothing and answers with it; when
  one logged its model but did not finish registering (``pending``: the registry failed
  or the process died), the rerun registers that model, adopting the version the failed
  attempt may already have created, so no run is left with a model and no version and no
  version is registered twice.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert, select, update

from mlops import alerts, market_calendar, runs, tracking
from mlops.context import Context
from mlops.contracts import catalog, datasets
from mlops.contracts.columns import (
    TARGET_COLUMN,
    TARGET_UP_COLUMN,
    is_classifier,
    require_inputs,
)
from mlops.contracts.datasets import Manifest
from mlops.contracts.models import (
    CHALLENGER_ALIAS,
    MODEL_ARTIFACT_PATH,
    PROMOTED_BY_TAG,
    PROMOTION_METRIC_TAG,
    TRAIN_UP_RATE_TAG,
    Lineage,
    ModelRef,
    champion,
    is_archived,
    is_paused,
    load_registered,
    move_champion,
    predict_close,
    target_of,
    version_ref,
)
from mlops.contracts.portable import PORTABLE_FOLDER
from mlops.db.locks import model_lock
from mlops.db.schema import model_actions, retrain_requests
from mlops.errors import MlopsError, ModelError, Terminated, classify
from mlops.metrics import (
    classification_metrics,
    diebold_mariano,
    information_coefficients,
    regression_metrics,
)
from mlops.runs import utcnow
from mlops.settings import Settings
from mlops.training import direction
from mlops.training.model_config import input_names, load_model_config
from mlops.training.promotion import PROMOTION_METRIC, Decision, decide
from mlops.training.splits import Splits, split_by_date

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "holdout")
# How far the portable export may be from LudwigModel.predict: Ludwig computes in float32
# (about 1e-7 relative per operation, so 1e-6 to 1e-5 through a network and an output's
# denormalisation), the export in float64; relative to the value, with an absolute floor
# for outputs near zero (a return of 0.01 %).
PORTABLE_RTOL = 1e-5
PORTABLE_ATOL = 1e-6
# Rows of the holdout logged as the MLflow model's input example.
INPUT_EXAMPLE_ROWS = 5
METRICS = ("mae", "rmse", "mape", "wmape")
# The holdout's information coefficients (mlops.metrics.information_coefficients), logged
# as holdout_<name>: mean, standard deviation, ICIR, t-statistic and sessions counted.
IC_METRICS = tuple(
    f"{kind}_{what}"
    for kind in ("ic", "rank_ic")
    for what in ("mean", "std", "ir", "t", "sessions")
)
# The Diebold-Mariano figures of the holdout, as run metrics (and p-values as version tags).
DM_METRICS = tuple(
    f"dm_{what}_{other}" for other in ("naive", "champion") for what in ("p_value", "statistic")
)
# Run tags that make reruns converge (see the module doc).
KEY_TAG = "mlops_training_key"
STAGE_RUN_TAG = "mlops_stage_run"
REGISTRATION_TAG = "mlops_registration"
VERSION_TAG = "mlops_model_version"
END_REASON_TAG = "mlops_end_reason"
MODEL_NAME_TAG = "mlops_model_name"
# Who the promotion gate is in the audit table.
AUDIT_ACTOR = "train"


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    dataset_version: str
    promoted: bool
    reason: str
    champion_version: str | None
    holdout: dict[str, float]  # regression figures and the IC_METRICS that exist
    baseline: dict[str, float]
    champion_holdout: dict[str, float] | None
    # One-sided Diebold-Mariano p-values on the holdout: "this version is more accurate
    # than the naive forecast / the champion" (None: no champion, or an older run).
    dm_p_value_naive: float | None = None
    dm_p_value_champion: float | None = None
    challenger: bool = False  # not promoted, beats the naive forecast: alias challenger
    already_trained: bool = False  # a run with the same key had registered this version
    market_closed: str | None = None  # why nothing was trained: not a trading session


def _closed_result(name: str, closed: str) -> TrainResult:
    """What training answers for a day the market was closed: nothing trained."""
    return TrainResult(
        "", name, "", "", False, "nothing trained", None, {}, {}, None, market_closed=closed
    )


@dataclass
class _Evaluation:
    """A trained model's metrics on every split, the naive forecast's and the champion's."""

    per_split: dict[str, dict[str, float]]
    baseline: dict[str, float]
    champion_holdout: dict[str, float] | None
    decision: Decision
    tests: dict[str, float] = field(default_factory=dict)  # DM_METRICS that were computed

    @property
    def challenger(self) -> bool:
        return not self.decision.promote and self.decision.beats_naive


def naive_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """The naive baseline: tomorrow's close is today's close."""
    return regression_metrics(frame[TARGET_COLUMN], frame["close"])


def paired_tests(
    holdout: pd.DataFrame, predicted: np.ndarray, others: dict[str, np.ndarray | None]
) -> dict[str, float]:
    """One-sided Diebold-Mariano tests of ``predicted`` against each of ``others`` (by
    name: ``naive``, ``champion``) on the holdout, as ``dm_p_value_<name>`` and
    ``dm_statistic_<name>``.

    The loss of a day is the mean absolute percentage error over the symbols that day
    (the promotion metric, MAPE, day by day): symbols of one day move together, so the
    test runs on the daily series, not on rows as if they were independent.
    """
    actual = holdout[TARGET_COLUMN].to_numpy(dtype="float64")
    days = holdout["date"].to_numpy()
    daily = {
        who: pd.Series(np.abs(np.asarray(p, dtype="float64") - actual) / np.abs(actual))
        .groupby(days)
        .mean()
        for who, p in {"candidate": predicted, **others}.items()
        if p is not None
    }
    found: dict[str, float] = {}
    for who in others:
        if who not in daily or len(daily[who]) < 3:
            continue
        test = diebold_mariano(daily["candidate"].to_numpy(), daily[who].to_numpy())
        found[f"dm_p_value_{who}"], found[f"dm_statistic_{who}"] = test.p_value, test.statistic
    return found


def holdout_ic(holdout: pd.DataFrame, predicted: np.ndarray) -> dict[str, float]:
    """The IC and Rank IC figures (``IC_METRICS``) of the predicted next-day return
    (``predicted / close - 1``) against the realised one (``next_close / close - 1``), each
    session a cross-section of the symbols; figures that do not exist are left out.
    """
    close = holdout["close"].to_numpy(dtype="float64")
    figures = information_coefficients(
        holdout["date"].to_numpy(),
        np.asarray(predicted, dtype="float64") / close - 1.0,
        holdout[TARGET_COLUMN].to_numpy(dtype="float64") / close - 1.0,
    )
    return {k: v for k, v in figures.items() if v is not None}


def run(
    ctx: Context,
    as_of: date | None = None,
    *,
    allow_older_dataset: bool = False,
    model: str | None = None,
) -> TrainResult:
    """Train the catalog model ``model`` (MODEL_NAME without it) on the dataset published
    for ``as_of`` (the newest without it); see the module doc.
    """
    settings = ctx.settings
    name = model or settings.model_name
    if as_of is not None and (
        closed := market_calendar.closed_day(as_of, f"{name} is not trained")
    ):
        return _closed_result(name, closed)
    spec = catalog.spec(settings, ctx.store, name)  # these fail before anything is written
    config = load_model_config(settings, spec.config_path)
    version = datasets.version_for_day(ctx.engine, as_of, allow_older=allow_older_dataset)
    manifest, frame = datasets.load(ctx.store, version)
    require_inputs(name, input_names(config), frame.columns, version)  # before any run
    splits = split_by_date(
        frame, validation_days=settings.validation_days, holdout_days=settings.holdout_days
    )
    client = ctx.mlflow
    experiment_id = tracking.ensure_experiment(client, settings)
    close_orphaned_runs(client, experiment_id, ctx.engine)
    key = training_key(config, manifest, settings, name)
    current = champion(client, name, settings.champion_alias)
    target = _Target(name, settings, ctx.engine, _lineage(manifest, splits))
    earlier = _earlier_run(client, experiment_id, key)
    if earlier is not None and earlier.data.tags.get(REGISTRATION_TAG) == "done":
        outcome = _reuse(client, earlier)
    elif earlier is not None:
        outcome = _resume(client, target, earlier, splits, current)
    else:
        outcome = _train_new(client, target, experiment_id, config, manifest, splits, key, current)
    if name == settings.model_name:  # retrain requests are raised for the trading model
        _resolve_retrain_requests(ctx, outcome.run_id, as_of)
    result = _result(name, manifest, outcome, current)
    log.info(
        "Model %s version %s: %s: %s%s",
        name,
        outcome.registered,
        "promoted to champion"
        if result.promoted
        else ("not promoted: the challenger" if result.challenger else "not promoted"),
        result.reason,
        " - already trained on this dataset with this config" if outcome.reused else "",
    )
    return result


def _result(
    name: str, manifest: Manifest, outcome: _Outcome, current: ModelRef | None
) -> TrainResult:
    evaluation, decision = outcome.evaluation, outcome.decision
    return TrainResult(
        run_id=outcome.run_id,
        model_name=name,
        model_version=outcome.registered,
        dataset_version=manifest.version,
        promoted=decision.promote,
        reason=decision.reason,
        champion_version=outcome.registered
        if decision.promote
        else (current.version if current else None),
        holdout=evaluation.per_split["holdout"],
        baseline=evaluation.baseline,
        champion_holdout=evaluation.champion_holdout,
        dm_p_value_naive=evaluation.tests.get("dm_p_value_naive"),
        dm_p_value_champion=evaluation.tests.get("dm_p_value_champion"),
        challenger=evaluation.challenger,
        already_trained=outcome.reused,
    )


def run_all(
    ctx: Context, as_of: date | None = None, *, allow_older_dataset: bool = False
) -> list[TrainResult]:
    """Train every catalog model that is not paused, the trading model first.

    Each is tried whatever happened to the others; when any failed, one error names them
    all (of the first failure's class, so its exit code), carrying the others' results.
    """
    if as_of is not None and (closed := market_calendar.closed_day(as_of, "no model is trained")):
        return [
            _closed_result(name, closed) for name in catalog.model_names(ctx.settings, ctx.store)
        ]
    results: list[TrainResult] = []
    failures: dict[str, BaseException] = {}
    for name in catalog.model_names(ctx.settings, ctx.store):
        if is_paused(ctx.mlflow, name):
            log.info("Model %s is paused (`mlops models resume %s`): not trained", name, name)
            continue
        try:
            results.append(run(ctx, as_of, allow_older_dataset=allow_older_dataset, model=name))
        except Exception as exc:
            failures[name] = exc
            log.error("Model %s was not trained: %s", name, runs.describe_failure(exc))
    if failures:
        raise _failed_models(failures, results)
    return results


def _failed_models(failures: dict[str, BaseException], results: list[TrainResult]) -> MlopsError:
    """One error naming every model that failed, of the first failure's class."""
    from mlops.log import save_traceback

    reasons = {}
    for name, exc in failures.items():
        error = classify(exc)
        if error is None:  # unforeseen: keep its traceback, as the command would
            saved = save_traceback(exc, f"train-{name}")
            error = MlopsError(f"{runs.describe_failure(exc)} (traceback in {saved})")
        reasons[name] = str(error).rstrip(".")
    first = classify(next(iter(failures.values())))
    kind = type(first) if first is not None else MlopsError
    sentence = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
    trained = f" ({', '.join(r.model_name for r in results)} trained)" if results else ""
    error = kind(f"{len(failures)} model(s) failed to train{trained}: {sentence}.")
    error.result = {  # type: ignore[attr-defined]
        "models": [asdict(r) for r in results],
        "failed": reasons,
    }
    return error


@dataclass(frozen=True)
class _Target:
    """Where a trained model goes: its registry name, the settings, the audit database and
    the lineage of the data it was trained on.
    """

    name: str
    settings: Settings
    engine: Engine
    lineage: Lineage


@dataclass
class _Outcome:
    run_id: str
    registered: str
    evaluation: _Evaluation
    reused: bool = False

    @property
    def decision(self) -> Decision:
        return self.evaluation.decision


def _train_new(
    client: MlflowClient,
    target: _Target,
    experiment_id: str,
    config: dict[str, Any],
    manifest: Manifest,
    splits: Splits,
    key: str,
    current: ModelRef | None,
) -> _Outcome:
    """A new MLflow run: fit, evaluate, log, register; the run always ends with a status."""
    seed = target.settings.random_seed
    stage_run = runs.current_run()
    tags = {"stage": "train", KEY_TAG: key, MODEL_NAME_TAG: target.name}
    tags.update(target.lineage.to_tags())
    if stage_run is not None:
        tags[STAGE_RUN_TAG] = stage_run.run_id
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    runs.annotate(mlflow_run_id=run_id)
    try:
        client.log_batch(run_id, params=_params(config, manifest, splits, seed, target.name))
        client.log_dict(run_id, config, "ludwig_config.yaml")
        model, stats = fit(config, splits, seed)
        client.log_dict(run_id, stats, "training_statistics.json")
        evaluation = _evaluate(client, target.settings, model, splits, current)
        _log_evaluation(client, run_id, evaluation, current)
        _log_model(client, run_id, model, splits.holdout)
        client.set_tag(run_id, REGISTRATION_TAG, "pending")  # a rerun finishes it if we fail
        registered = _complete_registration(client, target, run_id, evaluation)
    except BaseException as exc:
        _end_run(client, run_id, _end_status(exc))
        raise
    _end_run(client, run_id, "FINISHED")
    return _Outcome(run_id, registered, evaluation)


def _end_status(exc: BaseException) -> str:
    """KILLED for a signal or Ctrl-C, FAILED for an error."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit | Terminated) else "FAILED"


def _lineage(manifest: Manifest, splits: Splits) -> Lineage:
    ranges = splits.ranges()
    return Lineage(
        dataset_version=manifest.version,
        dataset_hash=manifest.content_hash,
        as_of=manifest.as_of,
        **{f"{name}_{end}": ranges[f"{name}_{end}"] for name in SPLITS for end in ("start", "end")},
    )


def _evaluate(
    client: MlflowClient, settings: Settings, model: Any, splits: Splits, current: ModelRef | None
) -> _Evaluation:
    predicted, per_split = split_figures(model, splits)
    return _against_others(
        client, settings, per_split, splits.holdout, predicted["holdout"], current
    )


def split_figures(
    model: Any, splits: Splits
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """A trained model's predicted closes on every split, and its figures there (the
    holdout's with its IC and Rank IC); a classifier's probabilities and figures
    (:func:`mlops.training.direction.split_figures`, the holdout's IC of the probability).
    """
    if is_classifier(target_of(model)):
        predicted, per_split = direction.split_figures(model, splits)
        holdout = splits.holdout
        realised = holdout[TARGET_COLUMN].to_numpy(dtype="float64") / holdout["close"] - 1.0
        days = holdout["date"].to_numpy()
        figures = information_coefficients(days, predicted["holdout"], realised)
        per_split["holdout"].update({k: v for k, v in figures.items() if v is not None})
        return predicted, per_split
    predicted = {name: predict_close(model, getattr(splits, name)) for name in SPLITS}
    per_split = {
        name: regression_metrics(getattr(splits, name)[TARGET_COLUMN], predicted[name])
        for name in SPLITS
    }
    per_split["holdout"].update(holdout_ic(splits.holdout, predicted["holdout"]))
    return predicted, per_split


def _against_others(
    client: MlflowClient,
    settings: Settings,
    per_split: dict[str, dict[str, float]],
    holdout: pd.DataFrame,
    predicted: np.ndarray,
    current: ModelRef | None,
) -> _Evaluation:
    """The candidate's holdout predictions against the naive forecast's and the
    registered champion's (see :func:`judge`).
    """
    champion_predicted = None
    classifier = "log_loss" in per_split["holdout"]
    if current is not None:
        model = load_registered(client, current)
        champion_predicted = (
            model.predict_frame(holdout.reset_index(drop=True))
            if classifier
            else predict_close(model, holdout)
        )
    return judge(settings, per_split, holdout, predicted, champion_predicted, classifier=classifier)


def judge(
    settings: Settings,
    per_split: dict[str, dict[str, float]],
    holdout: pd.DataFrame,
    predicted: np.ndarray,
    champion_predicted: np.ndarray | None,
    *,
    classifier: bool = False,
) -> _Evaluation:
    """The promotion gate on plain predictions: the candidate's holdout predictions
    against the naive forecast's and the champion's (None: there is no champion), their
    figures, the paired tests and the decision. ``mlops train`` and the walk-forward both
    decide through here. ``classifier``: the predictions are probabilities of a rise,
    judged against the base-rate classifier (:mod:`mlops.training.direction`).
    """
    if classifier:
        return _judge_classifier(settings, per_split, holdout, predicted, champion_predicted)
    baseline = naive_metrics(holdout)
    champion_holdout = None
    if champion_predicted is not None:
        champion_holdout = regression_metrics(holdout[TARGET_COLUMN], champion_predicted)
    tests = paired_tests(
        holdout,
        predicted,
        {"naive": holdout["close"].to_numpy(dtype="float64"), "champion": champion_predicted},
    )
    decision = _decide(per_split["holdout"], baseline, champion_holdout, tests, settings)
    return _Evaluation(per_split, baseline, champion_holdout, decision, tests)


def _judge_classifier(
    settings: Settings,
    per_split: dict[str, dict[str, float]],
    holdout: pd.DataFrame,
    predicted: np.ndarray,
    champion_predicted: np.ndarray | None,
) -> _Evaluation:
    """The gate of a direction classifier: log loss against the base-rate classifier's
    (the training window's up-rate) and the champion's, paired tests on daily log loss.
    """
    rate = direction.base_rate(per_split)
    baseline = direction.naive_figures(holdout, rate)
    champion_holdout = None
    if champion_predicted is not None:
        champion_holdout = classification_metrics(holdout[TARGET_UP_COLUMN], champion_predicted)
    naive = np.full(len(holdout), rate)
    tests = direction.paired_tests(
        holdout, predicted, {"naive": naive, "champion": champion_predicted}
    )
    decision = _decide(
        per_split["holdout"],
        baseline,
        champion_holdout,
        tests,
        settings,
        metric=direction.PROMOTION_METRIC,
    )
    return _Evaluation(per_split, baseline, champion_holdout, decision, tests)


def _decide(
    holdout: dict[str, float],
    baseline: dict[str, float],
    champion_holdout: dict[str, float] | None,
    tests: dict[str, float],
    settings: Settings,
    metric: str = PROMOTION_METRIC,
) -> Decision:
    return decide(
        holdout,
        baseline,
        champion_holdout,
        metric,
        p_value_naive=tests.get("dm_p_value_naive"),
        p_value_champion=tests.get("dm_p_value_champion"),
        max_p_value=settings.promotion_max_p_value,
    )


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
    values.update(evaluation.tests)
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
            "beats_naive": decision.beats_naive,
            "challenger": evaluation.challenger,
            "champion_version": current.version if current else None,
            "holdout": evaluation.per_split["holdout"],
            "baseline": evaluation.baseline,
            "champion_holdout": evaluation.champion_holdout,
            "diebold_mariano": evaluation.tests,
        },
        "promotion.json",
    )


def _log_model(client: MlflowClient, run_id: str, model: Any, holdout: pd.DataFrame) -> None:
    """The Ludwig model as an MLflow model (``ludwig`` flavour) under the run's ``model``,
    with its portable export (``model/portable``) checked against ``LudwigModel.predict``,
    and its ``python_function`` flavour answering from that export, with the signature
    (inputs and outputs) and an input example of a few holdout rows
    (:mod:`mlops.contracts.pyfunc`): MLflow then checks a request's columns and types
    (`mlflow models serve`, pyfunc) and the answer names the predicted close.
    """
    from ludwig.contribs.mlflow.model import save_model

    from mlops.contracts.pyfunc import example_inputs, make_native

    names = [f["name"] for f in model.config["input_features"]]
    target = model.config["output_features"][0]["name"]
    example = example_inputs(holdout, names, target, INPUT_EXAMPLE_ROWS)
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        folder = Path(tmp) / MODEL_ARTIFACT_PATH
        save_model(model, str(folder), input_example=example)
        export_portable(model, holdout, folder / PORTABLE_FOLDER)
        make_native(folder, example)
        client.log_artifacts(run_id, str(folder), MODEL_ARTIFACT_PATH)


def export_excess(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """How far ``actual`` (the export's outputs) goes past the tolerance around
    ``expected`` (Ludwig's): the largest ``|a - e| - (ATOL + RTOL |e|)`` (above 0: too far)
    and the value of ``expected`` where it is largest; a category output's probabilities
    (rows x classes) are compared class by class."""
    actual, expected = np.ravel(actual), np.ravel(expected)
    excess = np.abs(actual - expected) - (PORTABLE_ATOL + PORTABLE_RTOL * np.abs(expected))
    if excess.size == 0:
        return -PORTABLE_ATOL, 0.0
    worst = int(np.argmax(excess))
    return float(excess[worst]), float(expected[worst])


def export_portable(model: Any, holdout: pd.DataFrame, folder: Path) -> None:
    """Write the portable form, refusing a model it does not reproduce within
    ``PORTABLE_ATOL + PORTABLE_RTOL x |value|`` (a classifier: its probability of a rise; a
    category output: each class's probability).
    """
    from mlops.contracts.portable import encode, save
    from mlops.contracts.predictor import FastPredictor, UnsupportedModelError, ludwig_output

    try:
        portable = FastPredictor.from_ludwig(model).portable()
    except UnsupportedModelError as exc:
        raise ModelError(
            f"The model cannot be exported to the portable form the serve and batch-infer "
            f"images load ({exc}); it was not registered. Use a config the fast predictor "
            "supports (docs/serving.md)."
        ) from None
    inputs = holdout[list(portable.input_features)].reset_index(drop=True)
    predictions, _ = model.predict(inputs)
    expected = ludwig_output(predictions, portable.target, portable.config)
    excess, value = export_excess(portable.predict_frame(inputs), np.asarray(expected))
    if not excess <= 0:
        raise ModelError(
            f"The portable export differs from LudwigModel.predict on the holdout by more "
            f"than {PORTABLE_ATOL:g} + {PORTABLE_RTOL:g} x |value| (by {excess:.3g} past it, "
            f"at a value of {value:.6g}); the model was not registered."
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


def fit(config: dict[str, Any], splits: Splits, seed: int) -> tuple[Any, dict[str, Any]]:
    """Train ``config`` on the splits with Ludwig (the validated best checkpoint) and its
    training statistics: how ``mlops train`` fits, and the walk-forward with it.
    """
    from ludwig.api import LudwigModel

    with tempfile.TemporaryDirectory(prefix="ludwig-") as tmp, warnings.catch_warnings():
        # torchmetrics warns about R^2 on a last batch of one row; it is not our metric.
        warnings.filterwarnings("ignore", message=".*R\\^2 score is not well-defined.*")
        model = LudwigModel(config, logging_level=logging.ERROR)
        try:
            with _heap_frozen(), _one_thread():
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


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch runs on one thread while Ludwig trains (``torch.set_num_threads(1)``), and on
    as many as before afterwards.

    The catalog's networks are tiny (batches of 64 rows, a few dozen weights): a second
    thread never pays for its hand-offs, and on a busy machine each hand-off can wait for
    a descheduled thread. Measured on the shared 2-core test machine: the direction
    classifier's two epochs took 5 to 7 s with two threads (its binary cross-entropy of 64
    values waited up to 40 ms a call), 0.7 to 1.7 s with one; the regressors' 1.4 s became
    1.2 s. The trained weights are the same bit for bit (checked for every catalog model).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """The objects alive before training are out of the garbage collector's reach while
    Ludwig trains (``gc.freeze``), and handed back afterwards (``gc.unfreeze``).

    Ludwig's batch-size tuner runs ``gc.collect()`` before each of its trials (eight per
    training of the catalog's models); with Ludwig, torch and MLflow imported, each pass
    would rescan about a million objects that have nothing to do with the training (up
    to seconds per pass: most of a small model's training time). Frozen, a pass scans
    only what the training allocated. Nothing is collected less: the frozen objects are
    collected as usual once unfrozen.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def _params(
    config: dict[str, Any], manifest: Manifest, splits: Splits, seed: int, name: str
) -> list[Any]:
    from mlflow.entities import Param

    trainer = config.get("trainer", {})
    combiner = config.get("combiner", {})
    params: dict[str, Any] = {
        "model_name": name,
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


def _complete_registration(
    client: MlflowClient, target: _Target, run_id: str, evaluation: _Evaluation
) -> str:
    """Register the run's model (or adopt the version an earlier attempt made, its tags
    brought up to this decision), then promote it or make it the challenger.
    """
    name = target.name
    registered = _version_of_run(client, name, run_id)
    if registered is None:
        registered = _register(client, name, run_id, target.lineage, evaluation)
    else:
        for key, value in _version_tags(name, evaluation).items():
            client.set_model_version_tag(name, registered, key, value)
    if evaluation.decision.promote:
        _promote(client, target, registered, evaluation)
    elif evaluation.challenger:
        with model_lock(target.engine, name):
            if not _archived(client, name, registered):
                client.set_registered_model_alias(name, CHALLENGER_ALIAS, registered)
    client.set_tag(run_id, VERSION_TAG, registered)
    client.set_tag(run_id, REGISTRATION_TAG, "done")
    return registered


def _archived(client: MlflowClient, name: str, version: str) -> bool:
    """Whether someone archived the version while it was being registered (it stays so)."""
    ref = version_ref(client, name, version)
    if ref is None or not is_archived(ref):
        return False
    log.warning("Model %s version %s was archived meanwhile: it gets no alias.", name, version)
    return True


def _promote(client: MlflowClient, target: _Target, version: str, evaluation: _Evaluation) -> None:
    """Move the champion alias to ``version`` and write the audit row, under the model's
    lock (the one ``mlops models`` actions hold), as one decision: a rerun that finds the
    audit row (an attempt died after it) changes nothing, not even an alias moved since.
    """
    alias, name = target.settings.champion_alias, target.name
    with model_lock(target.engine, name), target.engine.begin() as conn:
        done = conn.execute(
            select(model_actions.c.id).where(
                model_actions.c.model_name == name,
                model_actions.c.model_version == version,
                model_actions.c.action == "promote",
                model_actions.c.actor == AUDIT_ACTOR,
            )
        ).first()
        if done is not None or _archived(client, name, version):
            return
        previous = champion(client, name, alias)
        if previous is None or previous.version != version:
            client.set_model_version_tag(name, version, PROMOTED_BY_TAG, AUDIT_ACTOR)
            move_champion(client, name, alias, version)
        details = {
            "previous": previous.version if previous and previous.version != version else None,
            **_version_tags(name, evaluation),
        }
        conn.execute(
            insert(model_actions).values(
                created_at=utcnow(),
                actor=AUDIT_ACTOR,
                action="promote",
                model_name=name,
                model_version=version,
                reason=evaluation.decision.reason,
                details=json.dumps(details, sort_keys=True),
            )
        )
    alerts.send(
        target.settings,
        "promotion",
        f"{name} version {version} is the new {alias}: {evaluation.decision.reason}",
    )


def _version_of_run(client: MlflowClient, name: str, run_id: str) -> str | None:
    """The version of ``name`` already registered from this run, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST"}:
            return None
        raise
    versions = sorted((int(v.version) for v in found if v.name == name), reverse=True)
    return str(versions[0]) if versions else None


def _register(
    client: MlflowClient, name: str, run_id: str, lineage: Lineage, evaluation: _Evaluation
) -> str:
    """A new version of ``name`` from the run's model, its lineage and holdout figures as tags.

    Only "no such model" leads to creating it; any other registry error (the server
    down, a timeout) stops here, read as what it is.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise ModelError(f"The MLflow registry could not be read: {exc.message}.") from exc
        what = (
            "Probability that the next close is above today's"
            if "log_loss" in evaluation.per_split["holdout"]
            else "Next-day close"
        )
        client.create_registered_model(
            name, description=f"{what} of daily US equities, from the Ludwig model {name}."
        )
    mv = client.create_model_version(
        name,
        source=f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
        run_id=run_id,
        tags={**lineage.to_tags(), **_version_tags(name, evaluation)},
    )
    return str(mv.version)


def _version_tags(name: str, evaluation: _Evaluation) -> dict[str, str]:
    """The evaluation as version tags: the holdout figures (the candidate's and the naive
    forecast's, the mean IC and Rank IC), the Diebold-Mariano p-values and the decision.
    """
    holdout, decision = evaluation.per_split["holdout"], evaluation.decision
    shown = {"mae", "mape", "wmape", "ic_mean", "rank_ic_mean", *direction.METRICS}
    figures = {f"holdout_{k}": v for k, v in holdout.items() if k in shown}
    for metric in ("mape", *direction.METRICS):
        if metric in evaluation.baseline:
            figures[f"baseline_holdout_{metric}"] = evaluation.baseline[metric]
    figures.update({k: v for k, v in evaluation.tests.items() if k.startswith("dm_p_value_")})
    train = evaluation.per_split.get("train", {})
    if "up_rate" in train and "log_loss" in holdout:  # a classifier's base rate
        figures[TRAIN_UP_RATE_TAG] = train["up_rate"]
    return {
        "model_name": name,
        **{k: f"{v:.6g}" if k.startswith("dm_") else f"{v:.6f}" for k, v in figures.items()},
        "promotion": "promoted" if decision.promote else "rejected",
        "promotion_reason": decision.reason[:5000],
        PROMOTION_METRIC_TAG: decision.metric,
    }


# Reruns: the key, earlier runs, orphans.


def training_key(
    config: dict[str, Any], manifest: Manifest, settings: Settings, name: str | None = None
) -> str:
    """What makes two trainings the same: dataset, model name (MODEL_NAME without one),
    config, seed, split sizes.
    """
    payload = {
        "model_name": name or settings.model_name,
        "config": config,
        "seed": settings.random_seed,
        "validation_days": settings.validation_days,
        "holdout_days": settings.holdout_days,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    return f"{manifest.version}:{digest.hexdigest()[:16]}"


def _earlier_run(client: MlflowClient, experiment_id: str, key: str) -> Any:
    """The newest ended run with this key that registered its model or has one pending."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{KEY_TAG} = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for candidate in found:
        state = candidate.data.tags.get(REGISTRATION_TAG)
        if candidate.info.status != "RUNNING" and state in {"done", "pending"}:
            return candidate
    return None


def _evaluation_from_run(earlier: Any) -> _Evaluation:
    """The figures, paired tests and promotion decision a run logged, as an evaluation
    (a run logged before some figures existed lacks them: WMAPE, the tests, the IC).
    """
    metrics = earlier.data.metrics

    def logged(prefix: str, names: tuple[str, ...] = METRICS) -> dict[str, float]:
        return {k: metrics[f"{prefix}_{k}"] for k in names if f"{prefix}_{k}" in metrics}

    classifier = f"holdout_{direction.PROMOTION_METRIC}" in metrics
    names = direction.METRICS if classifier else METRICS
    per_split = {split: logged(split, names) for split in SPLITS}
    per_split["holdout"].update(logged("holdout", IC_METRICS))
    baseline = logged("baseline_holdout", names)
    champion_holdout = logged("champion_holdout", names) or None
    tests = {k: metrics[k] for k in DM_METRICS if k in metrics}
    figures = decide(
        per_split["holdout"],
        baseline,
        champion_holdout,
        direction.PROMOTION_METRIC if classifier else PROMOTION_METRIC,
        p_value_naive=tests.get("dm_p_value_naive"),
        p_value_champion=tests.get("dm_p_value_champion"),
    )
    tags = earlier.data.tags
    decision = replace(
        figures,
        promote=tags.get("promotion") == "promoted",
        reason=tags.get("promotion_reason", figures.reason),
    )
    return _Evaluation(per_split, baseline, champion_holdout, decision, tests)


def _reuse(client: MlflowClient, earlier: Any) -> _Outcome:
    """A run with the same key registered its version: answer with it, train nothing."""
    run_id = earlier.info.run_id
    if earlier.info.status != "FINISHED":  # its work was complete when its process died
        _end_run(client, run_id, "FINISHED")
    return _Outcome(
        run_id, earlier.data.tags[VERSION_TAG], _evaluation_from_run(earlier), reused=True
    )


def _resume(
    client: MlflowClient, target: _Target, earlier: Any, splits: Splits, current: ModelRef | None
) -> _Outcome:
    """Finish the registration of a run that logged its model, deciding against today's
    champion (unless the run's own version already became it before the run could say so).
    """
    run_id = earlier.info.run_id
    log.warning("Run %s logged its model but did not register it: registering it now", run_id)
    evaluation = _evaluation_from_run(earlier)
    if current is None or current.run_id != run_id:
        model = _run_model(client, run_id)
        predicted = (
            model.predict_frame(splits.holdout)
            if is_classifier(model.target)
            else predict_close(model, splits.holdout)
        )
        evaluation = _against_others(
            client, target.settings, evaluation.per_split, splits.holdout, predicted, current
        )
    runs.annotate(mlflow_run_id=run_id)
    try:
        _log_evaluation(client, run_id, evaluation, current)
        registered = _complete_registration(client, target, run_id, evaluation)
    except BaseException as exc:
        _end_run(client, run_id, _end_status(exc))
        raise
    _end_run(client, run_id, "FINISHED")
    return _Outcome(run_id, registered, evaluation)


def _run_model(client: MlflowClient, run_id: str) -> Any:
    """The portable export a run logged with its model, loaded."""
    import mlflow

    from mlops.contracts.portable import PortablePredictor

    try:
        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"{MODEL_ARTIFACT_PATH}/{PORTABLE_FOLDER}",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
            return PortablePredictor.from_dir(local)
    except Exception as exc:
        if classify(exc) is not None:  # the tracking server or the store: read as such
            raise
        raise ModelError(f"The model logged by run {run_id} cannot be loaded: {exc}") from None


def close_orphaned_runs(client: MlflowClient, experiment_id: str, engine: Any) -> list[str]:
    """End the training runs left RUNNING by a stage run that is over; their ids.

    A stage run recorded ``abandoned`` (killed) ends its MLflow run ``KILLED``, ``failed``
    (it could not reach the tracking server at the end) ``FAILED``, ``succeeded``
    ``FINISHED``. Runs of a stage run still ``running``, or unknown to this database, are
    left alone.
    """
    found = client.search_runs(
        [experiment_id],
        filter_string="attributes.status = 'RUNNING' and tags.stage = 'train'",
        max_results=50,
    )
    closed = []
    for orphan in found:
        stage_run = orphan.data.tags.get(STAGE_RUN_TAG)
        status = runs.run_status(engine, stage_run) if stage_run else None
        if status in {None, "running"}:
            continue
        end = {"abandoned": "KILLED", "succeeded": "FINISHED"}.get(status, "FAILED")
        client.set_tag(orphan.info.run_id, END_REASON_TAG, f"stage run {stage_run} {status}")
        _end_run(client, orphan.info.run_id, end)
        log.warning(
            "MLflow run %s was left RUNNING by stage run %s (%s): ended %s",
            orphan.info.run_id,
            stage_run[:8] if stage_run else "?",
            status,
            end,
        )
        closed.append(orphan.info.run_id)
    return closed
