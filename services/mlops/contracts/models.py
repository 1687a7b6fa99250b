"""The model interface between training and the stages that use its models.

Training registers each model as a version in the MLflow registry, with its lineage as
version tags (:class:`Lineage`: dataset version and hash, as-of day, train, validation and
holdout windows) and the ``champion`` alias on the version that won. Batch inference,
serving and monitoring find the champion (:func:`champion`), read its lineage from the
tags, and load it as a :class:`~mlops.contracts.predictor.Predictor`
(:func:`load_registered`, one cache per process). :func:`predict_close` turns a model's
output into a predicted next close, whichever target it was trained on.

The MLflow client is always passed in (``mlops.tracking.connect``); nothing here reads
MLflow's global tracking URI.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from mlops.contracts.columns import (
    PROBABILITY,
    RETURN,
    TARGET_RETURN_COLUMN,
    is_classifier,
    score_kind,
)
from mlops.errors import ModelError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from mlops.contracts.predictor import Predictor

# Error codes with which the registry says "no such model or alias" (not an outage).
MISSING_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
# The artifact path of the model inside its training run.
MODEL_ARTIFACT_PATH = "model"

# Registry conventions (besides the champion alias, CHAMPION_ALIAS):
# - alias ``challenger``: the newest version that did not win its promotion; it is scored
#   in shadow beside the champion until it is promoted, archived or replaced;
CHALLENGER_ALIAS = "challenger"
# - version tag ``mlops_status`` = ``archived``: never scored, promoted or rolled back to;
STATUS_TAG = "mlops_status"
ARCHIVED = "archived"
# - registered-model tag ``mlops_paused`` = ``true``: scheduled training skips the model;
PAUSED_TAG = "mlops_paused"
# - registered-model tag ``mlops_champion_stack``: the champion versions in the order they
#   took the alias (comma-separated); a rollback pops the last one;
CHAMPION_STACK_TAG = "mlops_champion_stack"
# - version tags ``promotion`` (promoted | rejected | rolled_back) and ``promotion_reason``:
#   the last decision on the version, whoever took it (training's gate, a manual promotion,
#   a rollback); ``mlops_promoted_by``: who made it the champion (training's gate ``train``,
#   ``cli:<login>``, ``dashboard:<user>``) and ``mlops_promotion_reason`` the reason a
#   person gave, both cleared when the champion is rolled back from it.
# - version tag ``promotion_metric``: the holdout figure the gate compared with the naive
#   forecast's (``mape``; a direction classifier's ``log_loss``; none on older versions:
#   ``mape``), which a manual promotion compares too;
PROMOTION_METRIC_TAG = "promotion_metric"
# - version tag ``train_up_rate``: a direction classifier's training window's share of
#   rises, the base-rate classifier monitoring compares it with;
TRAIN_UP_RATE_TAG = "train_up_rate"
PROMOTION_TAG = "promotion"
PROMOTION_DECISION_TAG = "promotion_reason"
PROMOTED_BY_TAG = "mlops_promoted_by"
PROMOTION_REASON_TAG = "mlops_promotion_reason"
PROMOTED, REJECTED, ROLLED_BACK = "promoted", "rejected", "rolled_back"


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from, stored as registry tags of the version."""

    dataset_version: str
    dataset_hash: str = ""
    as_of: str = ""
    train_start: str = ""
    train_end: str = ""
    validation_start: str = ""
    validation_end: str = ""
    holdout_start: str = ""
    holdout_end: str = ""

    def to_tags(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items() if v}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Lineage | None:
        """The lineage in ``tags``; None for a version registered without one."""
        if not tags.get("dataset_version"):
            return None
        return cls(**{f.name: tags.get(f.name, "") for f in fields(cls)})


@dataclass(frozen=True)
class ModelRef:
    """One registered model version."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def lineage(self) -> Lineage | None:
        return Lineage.from_tags(self.tags)


def champion(client: MlflowClient, model_name: str, alias: str) -> ModelRef | None:
    """The version ``alias`` points at, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in MISSING_CODES:
            return None
        raise ModelError(f"The MLflow registry could not be read: {exc.message}.") from None
    return _ref(model_name, mv)


def _ref(name: str, mv: Any) -> ModelRef:
    return ModelRef(name=name, version=str(mv.version), run_id=mv.run_id, tags=dict(mv.tags))


def version_ref(client: MlflowClient, model_name: str, version: str) -> ModelRef | None:
    """One version of ``model_name``; None when the model or the version does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        if exc.error_code in MISSING_CODES:
            return None
        raise ModelError(f"The MLflow registry could not be read: {exc.message}.") from None
    return _ref(model_name, mv)


def is_archived(ref: ModelRef) -> bool:
    return ref.tags.get(STATUS_TAG) == ARCHIVED


def shadow_refs(client: MlflowClient, model_name: str, alias: str) -> list[ModelRef]:
    """The versions of ``model_name`` scored each day: its champion and its challenger
    (when it has them and they are not archived), the champion first.
    """
    found: list[ModelRef] = []
    for name in (alias, CHALLENGER_ALIAS):
        ref = champion(client, model_name, name)
        if (
            ref is not None
            and not is_archived(ref)
            and ref.version not in {r.version for r in found}
        ):
            found.append(ref)
    return found


def registered_tags(client: MlflowClient, model_name: str) -> dict[str, str] | None:
    """The registered model's own tags; None when it is not registered yet."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code in MISSING_CODES:
            return None
        raise ModelError(f"The MLflow registry could not be read: {exc.message}.") from None
    return dict(model.tags or {})


def is_paused(client: MlflowClient, model_name: str) -> bool:
    """Whether scheduled training skips ``model_name`` (``mlops models pause``)."""
    return (registered_tags(client, model_name) or {}).get(PAUSED_TAG) == "true"


def champion_stack(client: MlflowClient, model_name: str) -> list[str]:
    """The versions that held the champion alias, oldest first (see CHAMPION_STACK_TAG)."""
    value = (registered_tags(client, model_name) or {}).get(CHAMPION_STACK_TAG, "")
    return [v for v in value.split(",") if v]


def move_champion(client: MlflowClient, model_name: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version`` and push it on the champion stack; a version that
    becomes champion stops being the challenger.
    """
    stack = champion_stack(client, model_name)
    if not stack or stack[-1] != str(version):
        stack.append(str(version))
    client.set_registered_model_alias(model_name, alias, str(version))
    client.set_registered_model_tag(model_name, CHAMPION_STACK_TAG, ",".join(stack[-200:]))
    challenger = champion(client, model_name, CHALLENGER_ALIAS)
    if challenger is not None and challenger.version == str(version):
        client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)


def require_champion(client: MlflowClient, model_name: str, alias: str) -> ModelRef:
    """The version ``alias`` points at; ModelError when there is none or it is archived."""
    ref = champion(client, model_name, alias)
    if ref is None:
        raise ModelError(
            f"Model {model_name!r} has no {alias!r} version yet: "
            "run `mlops train` until a model beats the naive baseline."
        )
    if is_archived(ref):
        raise ModelError(archived_champion(ref, alias))
    return ref


def archived_champion(ref: ModelRef, alias: str) -> str:
    """The sentence that refuses a ``alias`` pointing at an archived version."""
    return (
        f"Model {ref.name}'s {alias} points at version {ref.version}, which is archived, so "
        f"it is not used: move the {alias} with `mlops models promote {ref.name} VERSION "
        f"--reason ...` or `mlops models rollback {ref.name}`."
    )


def load_registered(client: MlflowClient, ref: ModelRef) -> Predictor:
    """Download a registered version and load it as a predictor.

    Registered versions never change, so a process keeps the last few it loaded (one
    cache, whoever asks: batch inference, training's comparison with the champion, serving).
    """
    key = (client.tracking_uri, ref.name, ref.version)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    predictor = _download_and_load(client, ref.name, ref.version)
    with _cache_lock:
        _cache[key] = predictor
        while len(_cache) > CACHED_MODELS:
            _cache.popitem(last=False)
    return predictor


CACHED_MODELS = 4
_cache: OrderedDict[tuple[str, str, str], Predictor] = OrderedDict()
_cache_lock = threading.Lock()


def _download_and_load(client: MlflowClient, name: str, version: str) -> Predictor:
    """The version's portable export when it has one (NumPy alone), else its whole model."""
    import mlflow

    from mlops.contracts.portable import PORTABLE_FOLDER, PortablePredictor, has_portable
    from mlops.contracts.predictor import load_dir

    try:
        source = client.get_model_version_download_uri(name, version)
        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            try:
                portable = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source.rstrip('/')}/{PORTABLE_FOLDER}",
                    dst_path=f"{tmp}/portable",
                    tracking_uri=client.tracking_uri,
                )
            except Exception:  # an older version without one: the whole model below
                portable = None
            if portable is not None and has_portable(portable):
                return PortablePredictor.from_dir(portable)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=f"{tmp}/model", tracking_uri=client.tracking_uri
            )
            return load_dir(local)
    except Exception as exc:
        raise ModelError(f"Model {name} version {version} cannot be loaded: {exc}") from None


def predict_close(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """Predicted next close for each row of ``frame`` (a features frame).

    ``model`` is a predictor or a ``LudwigModel`` (turned into the fast predictor, which
    computes what ``LudwigModel.predict`` would, or Ludwig's own for a config it does not
    reproduce). A classifier predicts no close: ModelError.
    """
    from mlops.contracts.predictor import as_predictor

    predictor = as_predictor(model)
    if is_classifier(predictor.target):
        raise ModelError(
            f"A model of {predictor.target} is a direction classifier: it predicts the "
            "probability of a rise, not a close."
        )
    values = predictor.predict_frame(frame.reset_index(drop=True))
    if predictor.target == TARGET_RETURN_COLUMN:
        return frame["close"].to_numpy(dtype="float64") * (1.0 + values)
    return values


@dataclass(frozen=True)
class Scores:
    """A model's forecasts for rows of a features frame: the model's own output
    (``score``: a close, a return or a probability, by ``kind``) and, for a regressor, the
    predicted close (None for a classifier).
    """

    kind: str  # price | return | probability (mlops.contracts.columns.score_kind)
    score: np.ndarray
    predicted_close: np.ndarray | None

    def predicted_or_score(self) -> np.ndarray:
        """The predicted close; a classifier's probability (it predicts no close)."""
        return self.score if self.predicted_close is None else self.predicted_close


def predict_scores(model: Any, frame: pd.DataFrame) -> Scores:
    """The model's output for each row of ``frame``, its kind, and (regressors) the close."""
    from mlops.contracts.predictor import as_predictor

    predictor = as_predictor(model)
    values = predictor.predict_frame(frame.reset_index(drop=True))
    kind = score_kind(predictor.target)
    if kind == PROBABILITY:
        return Scores(kind, values, None)
    close = values
    if kind == RETURN:
        close = frame["close"].to_numpy(dtype="float64") * (1.0 + values)
    return Scores(kind, values, close)


def input_features(model: Any) -> list[str]:
    """The input features a model (a predictor or a ``LudwigModel``) reads."""
    from mlops.contracts.predictor import as_predictor

    return list(as_predictor(model).input_features)


def target_of(model: Any) -> str:
    """The target a model (a predictor or a ``LudwigModel``) was trained on."""
    from mlops.contracts.predictor import as_predictor

    return as_predictor(model).target
