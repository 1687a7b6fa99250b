"""The OpenAPI description (``/openapi.json``, ``/docs``), with the loaded model's fields.

The request bodies of ``/predict`` and ``/batch_predict`` are read by the handlers
themselves (JSON or form), so FastAPI cannot describe them; they are added here: the
records are the JSON schemas of the loaded model's request models
(:mod:`mlops.serving.request_models`), the table is the 'split' layout. The description
is rebuilt when another version is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from mlops.serving.bodies import DATASET_FORM_SCHEMA, MAX_ROWS, SPLIT_TABLE_SCHEMA
from mlops.serving.request_models import RequestModels

ANY_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}


def predict_body(models: RequestModels | None) -> dict[str, Any]:
    """The request body of ``/predict``: a record or a list of them, or a form."""
    record = models.json_schema(form=False) if models is not None else ANY_OBJECT
    form_record = models.json_schema(form=True) if models is not None else ANY_OBJECT
    records = {"type": "array", "items": record, "minItems": 1, "maxItems": MAX_ROWS}
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"anyOf": [record, records]}},
            "application/x-www-form-urlencoded": {"schema": form_record},
            "multipart/form-data": {"schema": form_record},
        },
    }


def batch_predict_body() -> dict[str, Any]:
    """The request body of ``/batch_predict``: a 'split' table, or it as a form field."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": SPLIT_TABLE_SCHEMA},
            "application/x-www-form-urlencoded": {"schema": DATASET_FORM_SCHEMA},
            "multipart/form-data": {"schema": DATASET_FORM_SCHEMA},
        },
    }


def describe(app: FastAPI, models: RequestModels | None) -> dict[str, Any]:
    """The app's OpenAPI description with the request bodies of ``models``."""
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    paths = spec.get("paths", {})
    if "/predict" in paths:
        paths["/predict"]["post"]["requestBody"] = predict_body(models)
    if "/batch_predict" in paths:
        paths["/batch_predict"]["post"]["requestBody"] = batch_predict_body()
    return spec


def install(app: FastAPI, current: Callable[[], tuple[str, RequestModels | None]]) -> None:
    """Serve ``describe(app, ...)`` for the loaded version, rebuilt when it changes.

    ``current`` gives a key naming the loaded version and its request models.
    """
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        key, models = current()
        if cache.get("key") != key or "spec" not in cache:
            cache.update(key=key, spec=describe(app, models))
        return cache["spec"]

    app.openapi = openapi  # type: ignore[method-assign]
