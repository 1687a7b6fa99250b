"""``mlops serve``: the champion model behind an HTTP API (FastAPI, one process, one model).

Endpoints:

* ``POST /predict``: one record (a JSON object) or a list of records; each record holds
  the model's input features and ``close`` (the last close, to turn the predicted return
  into a price). ``ludwig serve``'s form-encoded request (one field per input feature) is
  accepted too and answered in its format (``<target>_predictions``), so its clients keep
  working.
* ``POST /batch_predict``: a table in pandas "split" layout (``columns``, ``data``, optional
  ``index``), as JSON or as ``ludwig serve``'s form field ``dataset``; answered in the same
  layout.
* ``GET /healthz`` (the process is alive), ``GET /readyz`` (a model is loaded; details of
  the registry and of reloads), ``GET /metrics`` (Prometheus), ``GET /model`` (name, version,
  run id, training date, holdout metrics).

Invalid input gets a 4xx naming the field (422 for values, 400 for unreadable bodies,
415 for another content type, 413 for too many rows), never a 500. With
``SERVE_API_TOKEN`` set, ``/predict``, ``/batch_predict``, ``/model`` and ``/metrics``
need ``Authorization: Bearer <token>`` (the probes stay open). The OpenAPI description at
``/openapi.json`` lists the loaded model's features.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from mlops.data_prep.features import TARGET_COLUMN, TARGET_RETURN_COLUMN
from mlops.errors import ConfigError
from mlops.serving.model_holder import LoadedModel, ModelHolder
from mlops.settings import PLACEHOLDER_SECRETS, Settings

log = logging.getLogger(__name__)

MAX_ROWS = 100_000  # per request
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_TEXT = 64  # characters of a category value
MAX_ERRORS = 20  # listed in one answer
# Up to this many rows a prediction runs on the event loop (it takes well under a
# millisecond); larger ones, and Ludwig's own predict, go to the thread pool.
INLINE_ROWS = 256
CLOSE = "close"
ENDPOINTS = ("/predict", "/batch_predict", "/healthz", "/readyz", "/metrics", "/model")
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
_MISSING = object()


class ApiError(Exception):
    """An answer other than 200, with the fields at fault."""

    def __init__(
        self, status: int, message: str, detail: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail or []


# Validation.


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "number" or "category"
    positive: bool = False


@dataclass(frozen=True)
class Schema:
    """What a record must hold for one loaded model."""

    inputs: tuple[Field, ...]
    target: str
    close_is_input: bool

    @classmethod
    def of(cls, loaded: LoadedModel) -> Schema:
        predictor = loaded.predictor
        inputs = tuple(
            Field(name, "number" if kind == "number" else "category", positive=name == CLOSE)
            for name, kind in predictor.input_features.items()
        )
        return cls(inputs, predictor.target, CLOSE in predictor.input_features)

    def fields(self, *, require_close: bool) -> tuple[Field, ...]:
        if self.close_is_input or not require_close:
            return self.inputs
        return (*self.inputs, Field(CLOSE, "number", positive=True))

    def record_json_schema(self, *, form: bool = False) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for f in self.fields(require_close=True):
            if f.kind == "number":
                prop: dict[str, Any] = {"type": "number"}
                if f.positive:
                    prop["exclusiveMinimum"] = 0
            else:
                prop = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
            properties[f.name] = prop
        required = [f.name for f in self.fields(require_close=not form)]
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": True,
        }


def _error(loc: list[Any], message: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": message, "type": kind}


def _number(value: Any, *, from_text: bool) -> float | str:
    """The value as a float, or the reason it is not one."""
    if type(value) is float or type(value) is int:
        try:
            x = float(value)
        except OverflowError:
            return "must be a finite number"
    elif from_text and isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return "must be a number"
    elif value is None:
        return "must not be null"
    else:
        return "must be a number"
    if not math.isfinite(x):
        return "must be a finite number"
    return x


def _category(value: Any) -> str | None:
    """The reason a category value is unusable, or None."""
    if value is None:
        return "must not be null"
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_TEXT:
        return f"must be at most {MAX_TEXT} characters"
    return None


def validate_columns(
    fields: tuple[Field, ...],
    columns: dict[str, list[Any]],
    rows: int,
    loc: Callable[[int, str], list[Any]],
    *,
    from_text: bool,
) -> dict[str, list[Any]]:
    """Checked and converted columns; raises ApiError(422) naming the bad fields.

    The errors are listed record by record (then in field order), at most MAX_ERRORS.
    """
    found: list[tuple[int, int, dict[str, Any]]] = []
    out: dict[str, list[Any]] = {}
    for position, f in enumerate(fields):
        bad = 0

        def note(i: int, message: str, kind: str, f: Field = f, position: int = position) -> None:
            found.append((i, position, _error(loc(i, f.name), f"{f.name} {message}", kind)))

        values = columns[f.name]
        converted: list[Any] = []
        for i, value in enumerate(values):
            if bad >= MAX_ERRORS:
                break
            if value is _MISSING:
                note(i, "is required", "missing")
            elif f.kind == "number":
                x = _number(value, from_text=from_text)
                if isinstance(x, str):
                    note(i, x, "type_error")
                elif f.positive and x <= 0:
                    note(i, "must be greater than 0", "value_error")
                else:
                    converted.append(x)
                    continue
            else:
                reason = _category(value)
                if reason:
                    note(i, reason, "type_error")
                else:
                    converted.append(value)
                    continue
            bad += 1
        out[f.name] = converted
    if found:
        found.sort(key=lambda item: (item[0], item[1]))
        errors = [error for _, _, error in found[:MAX_ERRORS]]
        raise ApiError(422, _where(errors[0]), errors)
    return out


def _where(error: dict[str, Any]) -> str:
    position = [str(p) for p in error["loc"][1:-1]]
    prefix = f"record {'/'.join(position)}: " if position else ""
    return prefix + error["msg"]


# Request bodies.


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


def _is_json(content_type: str) -> bool:
    return content_type in {"", "application/json", "text/json"} or content_type.endswith("+json")


async def _body_json(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if not body.strip():
        raise ApiError(
            422, "the request body is empty", [_error(["body"], "empty body", "missing")]
        )
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            400,
            f"the body is not valid JSON: {exc}",
            [_error(["body"], "invalid JSON", "json_invalid")],
        ) from None


async def _form(request: Request) -> dict[str, Any]:
    from starlette.datastructures import UploadFile

    try:
        form = await request.form()
    except Exception as exc:
        raise ApiError(400, f"the form cannot be read: {exc}") from None
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            raise ApiError(
                422,
                f"{key} is a file upload; this model takes text fields",
                [_error(["body", key], "file uploads are not supported", "type_error")],
            )
        fields[key] = value
    return fields


def _unsupported(content_type: str) -> ApiError:
    return ApiError(
        415,
        f"content type {content_type!r} is not supported: send application/json, "
        "application/x-www-form-urlencoded or multipart/form-data",
    )


# Predictions.


@dataclass
class Answer:
    raw: np.ndarray  # the model's output, <target>_predictions
    predicted_close: np.ndarray | None
    expected_change: np.ndarray | None


def _answer(schema: Schema, raw: np.ndarray, closes: list[float] | None) -> Answer:
    close = np.asarray(closes, dtype=np.float64) if closes is not None else None
    predicted: np.ndarray | None = None
    with np.errstate(all="ignore"):  # non-finite results are refused below
        if schema.target == TARGET_RETURN_COLUMN and close is not None:
            predicted = close * (1.0 + raw)
        elif schema.target == TARGET_COLUMN:
            predicted = raw
        change = predicted / close - 1.0 if predicted is not None and close is not None else None
    bad = ~np.isfinite(raw)
    for extra in (predicted, change):
        if extra is not None:
            bad |= ~np.isfinite(extra)
    if bad.any():
        rows = np.flatnonzero(bad)[:MAX_ERRORS].tolist()
        raise ApiError(
            422,
            f"record {rows[0]}: the prediction is not a finite number; its feature values are "
            "far outside what the model was trained on",
            [_error(["body", i], "prediction is not finite", "value_error") for i in rows],
        )
    return Answer(raw, predicted, change)


async def _predict(loaded: LoadedModel, columns: dict[str, list[Any]], rows: int) -> np.ndarray:
    predictor = loaded.predictor
    inputs = {name: columns[name] for name in predictor.input_features}
    if rows <= INLINE_ROWS and predictor.kind == "fast":
        return predictor.predict_columns(inputs)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(predictor.predict_columns, inputs)


# Metrics.


class ServeMetrics:
    """Prometheus metrics of one app, in their own registry."""

    def __init__(self, holder: ModelHolder) -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Histogram

        prometheus_client.disable_created_metrics()  # no *_created series beside each counter
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlops_serve_requests",
            "HTTP requests answered, by endpoint, method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_serve_request_duration_seconds",
            "Time from request to response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlops_serve_predictions",
            "Rows predicted, by endpoint and model version.",
            ["endpoint", "model_version"],
            registry=self.registry,
        )
        self.registry.register(_HolderCollector(holder))
        self._latency_children = {e: self.latency.labels(e) for e in (*ENDPOINTS, "other")}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self._latency_children[endpoint].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _HolderCollector:
    """The model and registry state, read at scrape time."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        holder = self.holder
        current = holder.current
        yield GaugeMetricFamily(
            "mlops_serve_model_loaded",
            "1 when a model is loaded.",
            value=float(current is not None),
        )
        info = GaugeMetricFamily(
            "mlops_serve_model_info",
            "The model answering requests (value 1).",
            labels=["model_name", "model_version", "run_id", "predictor"],
        )
        version = GaugeMetricFamily(
            "mlops_serve_model_version", "Registry version number of the model answering."
        )
        if current is not None:
            info.add_metric(
                [current.name, current.version, current.ref.run_id, current.predictor.kind], 1.0
            )
            version.add_metric([], float(current.version) if current.version.isdigit() else -1.0)
        yield info
        yield version
        registry = holder.registry
        yield GaugeMetricFamily(
            "mlops_serve_registry_up",
            "1 when the last look at the model registry succeeded.",
            value=1.0 if registry.reachable else 0.0,
        )
        yield GaugeMetricFamily(
            "mlops_serve_registry_consecutive_failures",
            "Failed looks at the registry since the last success.",
            value=float(registry.consecutive_failures),
        )
        last = GaugeMetricFamily(
            "mlops_serve_registry_last_success_timestamp_seconds",
            "When the registry last answered (Unix time).",
        )
        if registry.last_success_at is not None:
            last.add_metric([], registry.last_success_at.timestamp())
        yield last
        yield CounterMetricFamily(
            "mlops_serve_registry_failures",
            "Looks at the registry that failed.",
            value=float(registry.failures_total),
        )
        yield CounterMetricFamily(
            "mlops_serve_model_reloads",
            "Models swapped in (the first load included).",
            value=float(holder.reload.reloads_total),
        )
        yield CounterMetricFamily(
            "mlops_serve_model_load_failures",
            "Versions that could not be loaded.",
            value=float(holder.reload.failures_total),
        )


class MetricsMiddleware:
    """Counts and times every HTTP request (plain ASGI: no per-request task overhead)."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.observe(
                endpoint, scope.get("method", ""), status, time.perf_counter() - began
            )


# The app.


def _token(settings: Settings) -> str | None:
    secret = settings.serve_api_token
    value = secret.get_secret_value().strip() if secret is not None else ""
    if not value:
        return None
    if value.lower() in PLACEHOLDER_SECRETS:
        raise ConfigError("Setting SERVE_API_TOKEN is still the template's placeholder value.")
    return value


def create_app(settings: Settings, holder: ModelHolder | None = None) -> FastAPI:
    """The API. Without ``holder``, one is made that polls the registry while the app runs;
    a given holder is used as it is (not started or stopped by the app)."""
    token = _token(settings)
    own_holder = holder is None
    holder = holder if holder is not None else ModelHolder(settings)
    metrics = ServeMetrics(holder)
    schemas: dict[tuple[str, str], Schema] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if own_holder:
            holder.start()
        try:
            yield
        finally:
            if own_holder:
                holder.stop()

    app = FastAPI(
        title="mlops serving API",
        version="1",
        description="Next-day close predictions from the champion model in the MLflow registry.",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    bearer = HTTPBearer(auto_error=False, description="SERVE_API_TOKEN, when it is set.")

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if credentials is None or not secrets.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "a valid bearer token is required")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            {"error": exc.message, "detail": exc.detail}, status_code=exc.status, headers=headers
        )

    def model_or_503() -> tuple[LoadedModel, Schema]:
        loaded = holder.current
        if loaded is None:
            raise ApiError(503, "no model is loaded yet; see /readyz")
        key = (loaded.name, loaded.version)
        schema = schemas.get(key)
        if schema is None:
            schema = schemas[key] = Schema.of(loaded)
            if len(schemas) > 8:
                schemas.pop(next(iter(schemas)))
        return loaded, schema

    def count(endpoint: str, loaded: LoadedModel, rows: int) -> None:
        metrics.predictions.labels(endpoint, loaded.version).inc(rows)

    @app.post(
        "/predict",
        dependencies=[Depends(authorize)],
        summary="Predict the next close of one record or a list of records",
        responses=_responses(),
    )
    async def predict(request: Request) -> Response:
        loaded, schema = model_or_503()
        content_type = _content_type(request)
        if content_type in FORM_TYPES:
            fields = await _form(request)
            if not fields:
                raise ApiError(
                    422, "the form is empty", [_error(["body"], "empty form", "missing")]
                )
            wanted = schema.fields(require_close=False)
            columns = {f.name: [fields.get(f.name, _MISSING)] for f in wanted}
            checked = validate_columns(
                wanted, columns, 1, lambda i, name: ["body", name], from_text=True
            )
            closes = None
            if CLOSE in fields:
                close = validate_columns(
                    (Field(CLOSE, "number", positive=True),),
                    {CLOSE: [fields[CLOSE]]},
                    1,
                    lambda i, name: ["body", name],
                    from_text=True,
                )
                closes = close[CLOSE]
            answer = _answer(schema, await _predict(loaded, checked, 1), closes)
            count("/predict", loaded, 1)
            out: dict[str, Any] = {f"{schema.target}_predictions": float(answer.raw[0])}
            if answer.predicted_close is not None:
                out["predicted_close"] = float(answer.predicted_close[0])
            if answer.expected_change is not None:
                out["expected_change"] = float(answer.expected_change[0])
            out["model_name"] = loaded.name
            out["model_version"] = loaded.version
            return JSONResponse(out)
        if not _is_json(content_type):
            raise _unsupported(content_type)
        body = await _body_json(request)
        if isinstance(body, dict):
            records, single = [body], True
        elif isinstance(body, list):
            records, single = body, False
            if not records:
                raise ApiError(
                    422, "the list of records is empty", [_error(["body"], "empty list", "missing")]
                )
            if len(records) > MAX_ROWS:
                raise ApiError(413, f"at most {MAX_ROWS} records per request")
            bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
            if bad:
                raise ApiError(
                    422,
                    f"record {bad[0]} is not a JSON object",
                    [
                        _error(["body", i], "must be an object", "type_error")
                        for i in bad[:MAX_ERRORS]
                    ],
                )
        else:
            raise ApiError(
                422,
                "the body must be a JSON object (one record) or a list of objects",
                [_error(["body"], "must be an object or a list", "type_error")],
            )
        wanted = schema.fields(require_close=True)
        columns = {f.name: [r.get(f.name, _MISSING) for r in records] for f in wanted}

        def loc(i: int, name: str) -> list[Any]:
            return ["body", name] if single else ["body", i, name]

        checked = validate_columns(wanted, columns, len(records), loc, from_text=False)
        answer = _answer(schema, await _predict(loaded, checked, len(records)), checked[CLOSE])
        count("/predict", loaded, len(records))
        raw_key = f"{schema.target}_predictions"
        assert answer.predicted_close is not None and answer.expected_change is not None
        predictions = [
            {"predicted_close": c, "expected_change": e, raw_key: r}
            for c, e, r in zip(
                answer.predicted_close.tolist(),
                answer.expected_change.tolist(),
                answer.raw.tolist(),
                strict=True,
            )
        ]
        return JSONResponse(
            {
                "model_name": loaded.name,
                "model_version": loaded.version,
                "predictions": predictions,
            }
        )

    @app.post(
        "/batch_predict",
        dependencies=[Depends(authorize)],
        summary="Predict a table in pandas 'split' layout (columns, data, index)",
        responses=_responses(),
    )
    async def batch_predict(request: Request) -> Response:
        loaded, schema = model_or_503()
        content_type = _content_type(request)
        from_form = content_type in FORM_TYPES
        if from_form:
            fields = await _form(request)
            if "dataset" not in fields:
                raise ApiError(
                    422,
                    "dataset is required (the table as JSON in pandas 'split' layout)",
                    [_error(["body", "dataset"], "dataset is required", "missing")],
                )
            try:
                table = json.loads(fields["dataset"])
            except (ValueError, RecursionError) as exc:
                raise ApiError(
                    422,
                    f"dataset is not valid JSON: {exc}",
                    [_error(["body", "dataset"], "invalid JSON", "json_invalid")],
                ) from None
        elif _is_json(content_type):
            table = await _body_json(request)
        else:
            raise _unsupported(content_type)
        frame_columns, data, index = _split_table(table)
        wanted = schema.fields(require_close=not from_form)
        missing = [f.name for f in wanted if f.name not in frame_columns]
        if missing:
            raise ApiError(
                422,
                f"column {missing[0]} is missing",
                [_error(["body", "columns"], f"{name} is required", "missing") for name in missing],
            )
        position = {name: i for i, name in enumerate(frame_columns)}
        columns = {f.name: [row[position[f.name]] for row in data] for f in wanted}
        checked = validate_columns(
            wanted,
            columns,
            len(data),
            lambda i, name: ["body", "data", i, position[name]],
            from_text=from_form,
        )
        closes = None
        if CLOSE in checked:
            closes = checked[CLOSE]
        elif CLOSE in position:
            closes = validate_columns(
                (Field(CLOSE, "number", positive=True),),
                {CLOSE: [row[position[CLOSE]] for row in data]},
                len(data),
                lambda i, name: ["body", "data", i, position[name]],
                from_text=from_form,
            )[CLOSE]
        answer = _answer(schema, await _predict(loaded, checked, len(data)), closes)
        count("/batch_predict", loaded, len(data))
        out_columns = [f"{schema.target}_predictions"]
        parts = [answer.raw.tolist()]
        if answer.predicted_close is not None:
            out_columns.append("predicted_close")
            parts.append(answer.predicted_close.tolist())
        if answer.expected_change is not None:
            out_columns.append("expected_change")
            parts.append(answer.expected_change.tolist())
        return JSONResponse(
            {
                "model_name": loaded.name,
                "model_version": loaded.version,
                "index": index if index is not None else list(range(len(data))),
                "columns": out_columns,
                "data": [list(row) for row in zip(*parts, strict=True)],
            }
        )

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: a model is loaded (503 until then); registry and reload details",
        responses={
            503: {
                "description": "No model is loaded yet (same body)",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def readyz() -> Response:
        current = holder.current
        body = {
            "ready": current is not None,
            "model": (
                {
                    "name": current.name,
                    "version": current.version,
                    "predictor": current.predictor.kind,
                    "loaded_at": current.loaded_at.isoformat(),
                }
                if current is not None
                else None
            ),
            "registry": holder.registry.as_dict(),
            "reload": holder.reload.as_dict(),
        }
        return JSONResponse(body, status_code=200 if current is not None else 503)

    @app.get(
        "/model",
        dependencies=[Depends(authorize)],
        summary="The model answering: name, version, run id, training date, holdout metrics",
        responses={k: v for k, v in _responses().items() if k in (401, 503)},
    )
    async def model_info() -> Response:
        loaded, schema = model_or_503()
        return JSONResponse(
            {
                "name": loaded.name,
                "version": loaded.version,
                **loaded.info,
                "predictor": loaded.predictor.kind,
                "target": schema.target,
                "input_features": dict(loaded.predictor.input_features),
                "loaded_at": loaded.loaded_at.isoformat(),
                "load_seconds": loaded.load_seconds,
            }
        )

    @app.get(
        "/metrics",
        dependencies=[Depends(authorize)],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={401: _responses()[401]},
    )
    async def prometheus() -> Response:
        payload, media_type = metrics.render()
        return Response(payload, media_type=media_type)

    openapi_cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        """The description, with the loaded model's features as request bodies."""
        current = holder.current
        key = f"{current.name}:{current.version}" if current else ""
        if openapi_cache.get("key") != key or "schema" not in openapi_cache:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _add_request_bodies(schema, model_or_503()[1] if current else None)
            openapi_cache.update(key=key, schema=schema)
        return openapi_cache["schema"]

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _split_table(table: Any) -> tuple[list[str], list[list[Any]], list[Any] | None]:
    """Columns, rows and index of a pandas 'split' table; ApiError naming what is wrong."""
    if not isinstance(table, dict):
        raise ApiError(
            422,
            "the table must be a JSON object with columns and data",
            [_error(["body"], "must be an object", "type_error")],
        )
    columns, data, index = table.get("columns"), table.get("data"), table.get("index")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ApiError(
            422,
            "columns must be a list of column names",
            [_error(["body", "columns"], "must be a list of strings", "type_error")],
        )
    if len(set(columns)) != len(columns):
        raise ApiError(
            422,
            "columns must not repeat a name",
            [_error(["body", "columns"], "duplicate column names", "value_error")],
        )
    if not isinstance(data, list):
        raise ApiError(
            422,
            "data must be a list of rows",
            [_error(["body", "data"], "must be a list of lists", "type_error")],
        )
    if not data:
        raise ApiError(
            422, "data has no rows", [_error(["body", "data"], "empty table", "missing")]
        )
    if len(data) > MAX_ROWS:
        raise ApiError(413, f"at most {MAX_ROWS} rows per request")
    bad = [i for i, row in enumerate(data) if not isinstance(row, list) or len(row) != len(columns)]
    if bad:
        raise ApiError(
            422,
            f"row {bad[0]} of data is not a list of {len(columns)} values",
            [
                _error(
                    ["body", "data", i], f"must be a list of {len(columns)} values", "type_error"
                )
                for i in bad[:MAX_ERRORS]
            ],
        )
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise ApiError(
            422,
            "index must be a list as long as data",
            [_error(["body", "index"], "must match the rows of data", "value_error")],
        )
    return columns, data, index


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["error"],
}


def _responses() -> dict[int | str, dict[str, Any]]:
    error = {"content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    return {
        400: {"description": "The body cannot be read", **error},
        401: {"description": "Missing or wrong bearer token", **error},
        413: {"description": "Too many rows", **error},
        415: {"description": "Unsupported content type", **error},
        422: {"description": "A field is missing or has a wrong value (named in detail)", **error},
        503: {"description": "No model is loaded yet", **error},
    }


def _add_request_bodies(openapi: dict[str, Any], schema: Schema | None) -> None:
    if schema is not None:
        record = schema.record_json_schema()
        form_record = schema.record_json_schema(form=True)
    else:
        record = form_record = {"type": "object", "additionalProperties": True}
    predict_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        record,
                        {"type": "array", "items": record, "minItems": 1, "maxItems": MAX_ROWS},
                    ]
                }
            },
            "application/x-www-form-urlencoded": {"schema": form_record},
            "multipart/form-data": {"schema": form_record},
        },
    }
    table = {
        "type": "object",
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
            "index": {"type": "array"},
        },
        "required": ["columns", "data"],
    }
    dataset_form = {
        "type": "object",
        "properties": {"dataset": {"type": "string", "description": "the table as JSON"}},
        "required": ["dataset"],
    }
    batch_body = {
        "required": True,
        "content": {
            "application/json": {"schema": table},
            "application/x-www-form-urlencoded": {"schema": dataset_form},
            "multipart/form-data": {"schema": dataset_form},
        },
    }
    paths = openapi.get("paths", {})
    if "/predict" in paths:
        paths["/predict"]["post"]["requestBody"] = predict_body
    if "/batch_predict" in paths:
        paths["/batch_predict"]["post"]["requestBody"] = batch_body


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the API with uvicorn: one process, so one copy of the model."""
    import uvicorn

    # A registry outage must show up within seconds, not after MLflow's long retries;
    # and no download progress bars in the server log.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app = create_app(settings)
    host = host or settings.serve_host
    port = port or settings.serve_port
    log.info("Serving on http://%s:%d (champion of %s)", host, port, settings.model_name)
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=1,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
