"""The endpoints: one handler each, taking what it needs as arguments.

The handlers (``handle_predict``, ``handle_batch_predict``, ``readiness``,
``describe_model``, ``metrics_text``) are plain functions of a request and a
:class:`Serving` (or of the holder, or of the metrics), so each can be called alone;
:func:`make_router` puts them behind their paths with their OpenAPI descriptions and
the bearer-token guard. A request reads the loaded model once (``Serving.model``) and
uses it, and its request models, to the end, so a hot swap never mixes two versions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.responses import Response

from mlops.contracts.portable import class_threshold
from mlops.serving import bodies
from mlops.serving.api_errors import ApiError, error_item, error_responses
from mlops.serving.metrics import ServeMetrics
from mlops.serving.model_holder import LoadedModel, ModelHolder
from mlops.serving.predictions import (
    answer,
    form_body,
    records_body,
    run_model,
    table_body,
)
from mlops.serving.request_models import CLOSE, RequestModelCache, RequestModels

# Above this many records or rows, checking them and shaping the answer run in the
# thread pool, off the event loop.
CHECK_INLINE_ROWS = 2_000


@dataclass
class Serving:
    """What the prediction handlers use: the holder, the metrics, the request models."""

    holder: ModelHolder
    metrics: ServeMetrics
    request_models: RequestModelCache = field(default_factory=RequestModelCache)

    def model(self) -> tuple[LoadedModel, RequestModels]:
        """The model answering now and its request models; ApiError(503) when none."""
        loaded = self.holder.current
        if loaded is None:
            raise ApiError(503, "no model is loaded yet; see /readyz")
        key = (loaded.name, loaded.version)
        return loaded, self.request_models.get(key, loaded.predictor)

    def current_request_models(self) -> tuple[str, RequestModels | None]:
        """A key naming the loaded version ("" for none) and its request models."""
        loaded = self.holder.current
        if loaded is None:
            return "", None
        models = self.request_models.get((loaded.name, loaded.version), loaded.predictor)
        return f"{loaded.name}:{loaded.version}", models


def _identity(loaded: LoadedModel) -> dict[str, str]:
    return {"model_name": loaded.name, "model_version": loaded.version}


def _threshold(loaded: LoadedModel) -> float:
    """A classifier's decision threshold (its predicted class); unused by a regressor."""
    return class_threshold(loaded.predictor.config)


# POST /predict


async def handle_predict(request: Request, serving: Serving) -> Response:
    """One JSON record or a list of them; or ``ludwig serve``'s form, answered in its format."""
    loaded, models = serving.model()
    kind = bodies.content_type(request)
    if bodies.is_form(kind):
        return await _predict_form(await bodies.read_form(request), loaded, models, serving)
    if not bodies.is_json(kind):
        raise bodies.unsupported(kind)
    body = await bodies.read_json(request)
    heavy = isinstance(body, list) and len(body) > CHECK_INLINE_ROWS
    records, columns = await bodies.off_loop(heavy, lambda: _checked_records(body, models))
    raw = await run_model(loaded.predictor, columns, len(records))

    def respond() -> Response:
        result = answer(models.target, raw, columns.get(CLOSE), _threshold(loaded))
        return JSONResponse({**_identity(loaded), **records_body(result)})

    response = await bodies.off_loop(heavy, respond)
    serving.metrics.count_predictions("/predict", loaded.version, len(records))
    return response


def _checked_records(body: Any, models: RequestModels) -> tuple[list[Any], dict[str, list[Any]]]:
    records, single = bodies.record_list(body)
    return records, models.check(records, _record_locator(single), form=False)


def _record_locator(single: bool) -> Callable[[int, str], list[Any]]:
    if single:
        return lambda i, name: ["body", name]
    return lambda i, name: ["body", i, name]


async def _predict_form(
    fields: dict[str, Any], loaded: LoadedModel, models: RequestModels, serving: Serving
) -> Response:
    if not fields:
        raise ApiError(422, "the form is empty", [error_item(["body"], "empty form", "missing")])
    columns = models.check([fields], lambda i, name: ["body", name], form=True)
    raw = await run_model(loaded.predictor, columns, 1)
    result = answer(models.target, raw, columns.get(CLOSE), _threshold(loaded))
    serving.metrics.count_predictions("/predict", loaded.version, 1)
    return JSONResponse({**form_body(result), **_identity(loaded)})


# POST /batch_predict


async def handle_batch_predict(request: Request, serving: Serving) -> Response:
    """A pandas 'split' table, as JSON or as ``ludwig serve``'s ``dataset`` form field."""
    loaded, models = serving.model()
    table, from_form = await bodies.read_table(request)
    rows = table.get("data") if isinstance(table, dict) else None
    heavy = isinstance(rows, list) and len(rows) > CHECK_INLINE_ROWS

    def check() -> tuple[Any, ...]:
        names, data, index = bodies.split_table(table)
        return data, index, *models.check_table(names, data, form=from_form)

    data, index, columns, closes = await bodies.off_loop(heavy, check)
    raw = await run_model(loaded.predictor, columns, len(data))

    def respond() -> Response:
        result = answer(models.target, raw, closes, _threshold(loaded))
        return JSONResponse({**_identity(loaded), **table_body(result, index)})

    response = await bodies.off_loop(heavy, respond)
    serving.metrics.count_predictions("/batch_predict", loaded.version, len(data))
    return response


# The probes, the model, the metrics.


def readiness(holder: ModelHolder, *, details: bool = False) -> Response:
    """200 once a model is loaded, 503 before or while the champion alias points at an
    archived version (``refused``: the sentence); the model, registry and reload details.

    Errors are given as a sentence; their own text (which may name hosts or paths) only
    with ``details`` (a request with the valid token): it is in the log anyway."""
    current = holder.current
    model = None
    if current is not None:
        model = {
            "name": current.name,
            "version": current.version,
            "predictor": current.predictor.kind,
            "loaded_at": current.loaded_at.isoformat(),
        }
    ready = holder.ready
    body = {
        "ready": ready,
        "model": model,
        "refused": holder.refusal,
        "registry": holder.registry.as_dict(details=details),
        "reload": holder.reload.as_dict(details=details),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


def describe_model(serving: Serving) -> Response:
    """Name, version, run, training date, holdout metrics, predictor, inputs, load time."""
    loaded, models = serving.model()
    return JSONResponse(
        {
            "name": loaded.name,
            "version": loaded.version,
            **loaded.info,
            "predictor": loaded.predictor.kind,
            "target": models.target,
            "input_features": dict(loaded.predictor.input_features),
            "loaded_at": loaded.loaded_at.isoformat(),
            "load_seconds": loaded.load_seconds,
        }
    )


def metrics_text(metrics: ServeMetrics) -> Response:
    payload, media_type = metrics.render()
    return Response(payload, media_type=media_type)


# The paths.

_READYZ_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "No model is loaded yet, or the champion alias points at an archived "
        "version (same body; `refused` says which)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


# What a prediction route may answer besides 200 (403 is /admin/reload's alone).
PREDICTION_ERRORS = error_responses(400, 401, 408, 413, 415, 422, 503)


def make_router(
    serving: Serving,
    authorize: Callable[..., None],
    trusted: Callable[[Request], bool] = lambda request: False,
    admin: Callable[..., None] | None = None,
) -> APIRouter:
    """The API's paths; ``authorize`` guards all but the probes; ``trusted`` tells a
    request with the valid token (shown error details on ``/readyz``); ``admin`` guards
    ``POST /admin/reload`` (no such route without it)."""
    router = APIRouter()
    guarded = [Depends(authorize)]
    _prediction_routes(router, serving, guarded)
    _status_routes(router, serving, guarded, trusted)
    if admin is not None:
        _admin_routes(router, serving, [Depends(admin)])
    return router


def _admin_routes(router: APIRouter, serving: Serving, guarded: list[Any]) -> None:
    @router.post(
        "/admin/reload",
        dependencies=guarded,
        summary="Ask the registry now where the champion points; load it if it moved",
        responses=error_responses(401, 403),
    )
    async def reload() -> Response:
        from starlette.concurrency import run_in_threadpool

        holder = serving.holder
        swapped = await run_in_threadpool(holder.poll_once)
        current = holder.current
        return JSONResponse(
            {
                "reloaded": swapped,
                "model_version": current.version if current is not None else None,
                "registry_error": holder.registry.last_error,
            }
        )


def _prediction_routes(router: APIRouter, serving: Serving, guarded: list[Any]) -> None:
    @router.post(
        "/predict",
        dependencies=guarded,
        summary="Predict the next close of one record or a list of records",
        responses=PREDICTION_ERRORS,
    )
    async def predict(request: Request) -> Response:
        return await handle_predict(request, serving)

    @router.post(
        "/batch_predict",
        dependencies=guarded,
        summary="Predict a table in pandas 'split' layout (columns, data, index)",
        responses=PREDICTION_ERRORS,
    )
    async def batch_predict(request: Request) -> Response:
        return await handle_batch_predict(request, serving)


def _status_routes(
    router: APIRouter,
    serving: Serving,
    guarded: list[Any],
    trusted: Callable[[Request], bool],
) -> None:
    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: a model is loaded and its alias not archived (503 otherwise)",
        responses=_READYZ_RESPONSES,
    )
    async def readyz(request: Request) -> Response:
        return readiness(serving.holder, details=trusted(request))

    @router.get(
        "/model",
        dependencies=guarded,
        summary="The model answering: name, version, run id, training date, holdout metrics",
        responses=error_responses(401, 503),
    )
    async def model_info() -> Response:
        return describe_model(serving)

    @router.get(
        "/metrics",
        dependencies=guarded,
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses=error_responses(401),
    )
    async def prometheus() -> Response:
        return metrics_text(serving.metrics)
