"""Reading a request's body, up to what the model's fields are checked on.

JSON bodies (``application/json``, ``text/json``, ``*+json``, or no content type) and
``ludwig serve``'s forms (urlencoded or multipart, text fields only) are read here; so are
the shapes around the records: one object or a non-empty list of objects for
``/predict``, a pandas "split" table (``columns``, ``data``, optional ``index``) for
``/batch_predict``. What each record must hold depends on the loaded model: see
:mod:`mlops.serving.request_models`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from mlops.serving.api_errors import MAX_ERRORS, ApiError, error_item

MAX_ROWS = 100_000  # per request
# Bodies larger than this are decoded in the thread pool, not on the event loop (where
# a 100k-row body would hold up every other request, the probes included, for ~1 s).
PARSE_INLINE_BYTES = 256 * 1024
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

# The table of /batch_predict, as its OpenAPI description states it.
SPLIT_TABLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "columns": {"type": "array", "items": {"type": "string"}},
        "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
        "index": {"type": "array"},
    },
    "required": ["columns", "data"],
}
DATASET_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"dataset": {"type": "string", "description": "the table as JSON"}},
    "required": ["dataset"],
}


# Content types.


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_form(kind: str) -> bool:
    return kind in FORM_TYPES


def is_json(kind: str) -> bool:
    return kind in {"", "application/json", "text/json"} or kind.endswith("+json")


def unsupported(kind: str) -> ApiError:
    return ApiError(
        415,
        f"content type {kind!r} is not supported: send application/json, "
        "application/x-www-form-urlencoded or multipart/form-data",
    )


# Bodies.


async def off_loop[T](heavy: bool, work: Callable[[], T]) -> T:
    """``work()`` on the event loop when light, in the thread pool when ``heavy``."""
    if not heavy:
        return work()
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(work)


def decode_json(data: bytes | str) -> Any:
    """JSON text to Python (the one place bodies are decoded)."""
    return json.loads(data)


def why_not_json(exc: Exception) -> str:
    """Where the JSON text went wrong, in words of the API (no exception text)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return "unreadable"


def _parse_body(body: bytes) -> Any:
    try:
        return decode_json(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            400,
            f"the body is not valid JSON ({why_not_json(exc)})",
            [error_item(["body"], "invalid JSON", "json_invalid")],
        ) from None


async def read_json(request: Request) -> Any:
    """The parsed JSON body; 422 when empty, 400 when not JSON (large ones decoded off
    the event loop). The body's size limit is the app's (:mod:`~mlops.serving.limits`)."""
    body = await request.body()
    if not body.strip():
        raise ApiError(
            422, "the request body is empty", [error_item(["body"], "empty body", "missing")]
        )
    return await off_loop(len(body) > PARSE_INLINE_BYTES, lambda: _parse_body(body))


async def read_form(request: Request) -> dict[str, Any]:
    """The form's text fields (the last value of a repeated one); 422 for a file upload."""
    from starlette.datastructures import UploadFile

    try:
        form = await request.form()
    except (ApiError, ClientDisconnect):  # too large, or the client went away
        raise
    except Exception:
        raise ApiError(
            400, "the form cannot be read: it is not well-formed urlencoded or multipart data"
        ) from None
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            raise ApiError(
                422,
                f"{key} is a file upload; this model takes text fields",
                [error_item(["body", key], "file uploads are not supported", "type_error")],
            )
        fields[key] = value
    return fields


async def read_table(request: Request) -> tuple[Any, bool]:
    """The body of ``/batch_predict`` (not yet checked) and whether it came as a form."""
    kind = content_type(request)
    if is_form(kind):
        fields = await read_form(request)
        heavy = len(str(fields.get("dataset", ""))) > PARSE_INLINE_BYTES
        return await off_loop(heavy, lambda: dataset_field(fields)), True
    if is_json(kind):
        return await read_json(request), False
    raise unsupported(kind)


def dataset_field(fields: dict[str, Any]) -> Any:
    """``ludwig serve``'s ``dataset`` form field: the table as JSON."""
    if "dataset" not in fields:
        raise ApiError(
            422,
            "dataset is required (the table as JSON in pandas 'split' layout)",
            [error_item(["body", "dataset"], "dataset is required", "missing")],
        )
    try:
        return decode_json(fields["dataset"])
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            422,
            f"dataset is not valid JSON ({why_not_json(exc)})",
            [error_item(["body", "dataset"], "invalid JSON", "json_invalid")],
        ) from None


# Shapes.


def record_list(body: Any) -> tuple[list[Any], bool]:
    """The records of a ``/predict`` JSON body, and whether it was a single object."""
    if isinstance(body, dict):
        return [body], True
    if not isinstance(body, list):
        raise ApiError(
            422,
            "the body must be a JSON object (one record) or a list of objects",
            [error_item(["body"], "must be an object or a list", "type_error")],
        )
    if not body:
        raise ApiError(
            422, "the list of records is empty", [error_item(["body"], "empty list", "missing")]
        )
    if len(body) > MAX_ROWS:
        raise ApiError(413, f"at most {MAX_ROWS} records per request")
    bad = [i for i, record in enumerate(body) if not isinstance(record, dict)]
    if bad:
        raise ApiError(
            422,
            f"record {bad[0]} is not a JSON object",
            [error_item(["body", i], "must be an object", "type_error") for i in bad[:MAX_ERRORS]],
        )
    return body, False


def split_table(table: Any) -> tuple[list[str], list[list[Any]], list[Any] | None]:
    """Columns, rows and index of a pandas 'split' table; ApiError naming what is wrong."""
    if not isinstance(table, dict):
        raise ApiError(
            422,
            "the table must be a JSON object with columns and data",
            [error_item(["body"], "must be an object", "type_error")],
        )
    columns = _columns(table.get("columns"))
    data = _rows(table.get("data"), len(columns))
    index = table.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise ApiError(
            422,
            "index must be a list as long as data",
            [error_item(["body", "index"], "must match the rows of data", "value_error")],
        )
    return columns, data, index


def _columns(columns: Any) -> list[str]:
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ApiError(
            422,
            "columns must be a list of column names",
            [error_item(["body", "columns"], "must be a list of strings", "type_error")],
        )
    if len(set(columns)) != len(columns):
        raise ApiError(
            422,
            "columns must not repeat a name",
            [error_item(["body", "columns"], "duplicate column names", "value_error")],
        )
    return columns


def _rows(data: Any, width: int) -> list[list[Any]]:
    if not isinstance(data, list):
        raise ApiError(
            422,
            "data must be a list of rows",
            [error_item(["body", "data"], "must be a list of lists", "type_error")],
        )
    if not data:
        raise ApiError(
            422, "data has no rows", [error_item(["body", "data"], "empty table", "missing")]
        )
    if len(data) > MAX_ROWS:
        raise ApiError(413, f"at most {MAX_ROWS} rows per request")
    bad = [i for i, row in enumerate(data) if not isinstance(row, list) or len(row) != width]
    if bad:
        raise ApiError(
            422,
            f"row {bad[0]} of data is not a list of {width} values",
            [
                error_item(["body", "data", i], f"must be a list of {width} values", "type_error")
                for i in bad[:MAX_ERRORS]
            ],
        )
    return data
