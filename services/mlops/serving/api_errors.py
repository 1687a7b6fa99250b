"""Answers other than 200: the exception handlers raise, its JSON body, its OpenAPI entry.

Every error answer is ``{"error": <one sentence about the first problem>, "detail": [...]}``;
each detail item is ``{"loc": [...], "msg": ..., "type": ...}`` and names the field at
fault (``["body", <field>]``, ``["body", <record>, <field>]``,
``["body", "data", <row>, <column>]``), at most :data:`MAX_ERRORS` of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

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
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        {"error": exc.message, "detail": exc.detail}, status_code=exc.status, headers=headers
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
    413: "Too many rows",
    415: "Unsupported content type",
    422: "A field is missing or has a wrong value (named in detail)",
    503: "No model is loaded yet",
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
