"""Answers other than 200: the exception handlers raise, its JSON body, its OpenAPI entry.

Every error answer is ``{"error": <one sentence about the first problem>, "detail": [...]}``;
each detail item is ``{"loc": [...], "msg": ..., "type": ...}`` and names the field at
fault (``["body", <field>]``, ``["body", <record>, <field>]``,
``["body", "data", <row>, <column>]``), at most :data:`MAX_ERRORS` of them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

MAX_ERRORS = 20  # listed in one answer


class ApiError(Exception):
    """An answer other than 200, with the fields at fault."""

    def __init__(
        self, status: int, message: str, detail: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail or []


def error_item(loc: list[Any], message: str, kind: str) -> dict[str, Any]:
    """One entry of ``detail``."""
    return {"loc": loc, "msg": message, "type": kind}


def invalid(errors: list[dict[str, Any]]) -> ApiError:
    """A 422 listing ``errors``; its sentence is about the first, prefixed by its record."""
    return ApiError(422, _sentence(errors[0]), errors)


def _sentence(error: dict[str, Any]) -> str:
    position = [str(p) for p in error["loc"][1:-1]]
    prefix = f"record {'/'.join(position)}: " if position else ""
    return prefix + error["msg"]


async def api_error_response(request: Request, exc: Exception) -> Response:
    """The exception handler for :class:`ApiError`."""
    assert isinstance(exc, ApiError)
    headers = None
    if exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif exc.status == 413:  # the rest of the body is not read: do not reuse the connection
        headers = {"Connection": "close"}
    return JSONResponse(
        {"error": exc.message, "detail": exc.detail}, status_code=exc.status, headers=headers
    )


async def http_error_response(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (and any other HTTPException) in the API's error format."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"there is no endpoint {request.url.path}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}" + (
            f"; use {allowed}" if allowed else ""
        )
    else:
        message = "the request cannot be answered"
    return JSONResponse(
        {"error": message, "detail": []}, status_code=exc.status_code, headers=exc.headers
    )


async def internal_error_response(request: Request, exc: Exception) -> Response:
    """A bug: a generic sentence for the client, the traceback in the log."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"error": "the server failed to answer; the server log says why", "detail": []},
        status_code=500,
    )


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["error"],
}
_DESCRIPTIONS = {
    400: "The body cannot be read",
    401: "Missing or wrong bearer token",
    403: "The endpoint is disabled (POST /admin/reload without SERVE_ADMIN_TOKEN)",
    408: "The body did not arrive within SERVE_BODY_TIMEOUT_SECONDS",
    413: "Too many rows, or a body over the size limit",
    415: "Unsupported content type",
    422: "A field is missing or has a wrong value (named in detail)",
    503: "No model is loaded yet, or too many large bodies are being read at once",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses (all of them without arguments)."""
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for status, description in _DESCRIPTIONS.items()
        if not statuses or status in statuses
    }
