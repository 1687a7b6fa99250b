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
415 for another content type, 413 for too many rows or a body over 64 MiB, counted as
it streams in), never a 500. Public answers carry no exception text or server paths (the
log has them; ``/readyz`` shows them to a request with the token). With
``SERVE_API_TOKEN`` set, ``/predict``, ``/batch_predict``, ``/model`` and ``/metrics``
need ``Authorization: Bearer <token>`` (the probes stay open). ``POST /admin/reload``
(with ``SERVE_ADMIN_TOKEN``; disabled without it) asks the registry now instead of at the
next poll, so a promotion is served within a second of the call. Slow bodies get 408,
large ones beyond ``SERVE_MAX_LARGE_BODIES`` at once 503 (:mod:`~mlops.serving.limits`).
The OpenAPI description at ``/openapi.json`` lists the loaded model's features. Every
answer carries ``Content-Security-Policy: frame-ancestors 'none'`` and
``X-Frame-Options: DENY``.

The parts: :mod:`~mlops.serving.routes` (the handlers),
:mod:`~mlops.serving.request_models` (what a record must hold, generated per loaded
model), :mod:`~mlops.serving.bodies` (reading JSON and forms),
:mod:`~mlops.serving.predictions` (running the model, shaping answers),
:mod:`~mlops.serving.api_errors`, :mod:`~mlops.serving.auth`,
:mod:`~mlops.serving.metrics`, :mod:`~mlops.serving.openapi` and
:mod:`~mlops.serving.model_holder` (the model, hot-reloaded from the registry, read
through :mod:`~mlops.serving.registry`). :mod:`~mlops.serving.server` runs it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from mlops.serving import openapi
from mlops.serving.api_errors import (
    ApiError,
    api_error_response,
    http_error_response,
    internal_error_response,
)
from mlops.serving.auth import admin_token, api_token, bearer_guard, token_check
from mlops.serving.limits import MAX_BODY_BYTES, BodyLimitMiddleware
from mlops.serving.metrics import MetricsMiddleware, ServeMetrics
from mlops.serving.model_holder import ModelHolder
from mlops.serving.routes import Serving, make_router
from mlops.settings import Settings
from mlops.web_safety import FRAME_HEADERS

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    holder: ModelHolder | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The API. Without ``holder``, one is made that polls the registry while the app runs;
    a given holder is used as it is (not started or stopped by the app). A request body
    over ``max_body_bytes`` is refused (413) as soon as that many bytes have arrived."""
    token = api_token(settings)
    own_holder = holder is None
    holder = holder if holder is not None else ModelHolder(settings)
    metrics = ServeMetrics(holder)
    serving = Serving(holder, metrics)
    app = FastAPI(
        title="mlops serving API",
        version="1",
        description="Next-day close predictions from the champion model in the MLflow registry.",
        lifespan=_lifespan(holder, started_here=own_holder),
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.serving = serving
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=max_body_bytes,
        body_timeout=settings.serve_body_timeout_seconds,
        large_bytes=settings.serve_large_body_bytes,
        max_large=settings.serve_max_large_bodies,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # counts the 413s
    app.add_middleware(FrameHeadersMiddleware)  # the outermost: on every answer, 413s too
    app.add_exception_handler(ApiError, api_error_response)
    app.add_exception_handler(HTTPException, http_error_response)
    app.add_exception_handler(Exception, internal_error_response)
    admin = bearer_guard(admin_token(settings), setting="SERVE_ADMIN_TOKEN", required=True)
    app.include_router(make_router(serving, bearer_guard(token), token_check(token), admin))
    openapi.install(app, serving.current_request_models)
    return app


class FrameHeadersMiddleware:
    """Adds :data:`~mlops.web_safety.FRAME_HEADERS` to every HTTP answer (plain ASGI)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in FRAME_HEADERS.items()]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, with_headers)


def _lifespan(
    holder: ModelHolder, *, started_here: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the holder's poller with the app and stop it after, when the app made it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if started_here:
            holder.start()
        try:
            yield
        finally:
            if started_here:
                holder.stop()

    return lifespan
