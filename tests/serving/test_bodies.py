"""Reading request bodies alone: content types, JSON, forms, record lists, 'split' tables."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlops.serving import bodies
from mlops.serving.api_errors import MAX_ERRORS, ApiError
from serving.fakes import request


def _refused(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        result = call(*args)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return caught.value


@pytest.mark.parametrize(
    ("header", "kind", "json", "form"),
    [
        ("application/json; charset=utf-8", "application/json", True, False),
        ("Application/Problem+JSON", "application/problem+json", True, False),
        (None, "", True, False),
        ("multipart/form-data; boundary=x", "multipart/form-data", False, True),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded", False, True),
        ("text/plain", "text/plain", False, False),
    ],
)
def test_content_types(header: str | None, kind: str, json: bool, form: bool) -> None:
    got = bodies.content_type(request(raw=b"", content_type=header))
    assert got == kind
    assert (bodies.is_json(got), bodies.is_form(got)) == (json, form)
    assert bodies.unsupported(got).status == 415


def test_read_json() -> None:
    assert asyncio.run(bodies.read_json(request(raw=b'{"a": NaN}')))["a"] != 0
    assert _refused(bodies.read_json, request(raw=b"  ")).status == 422
    error = _refused(bodies.read_json, request(raw=b"{oops"))
    assert error.status == 400 and error.detail[0]["type"] == "json_invalid"
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _refused(bodies.read_json, request(raw=deep)).status == 400


def test_read_form_and_dataset_field() -> None:
    fields = asyncio.run(bodies.read_form(request(form={"a": "1", "b": "x"})))
    assert fields == {"a": "1", "b": "x"}
    assert bodies.dataset_field({"dataset": '{"columns": []}'}) == {"columns": []}
    assert "dataset is required" in _refused(bodies.dataset_field, {"x": "1"}).message
    assert "not valid JSON" in _refused(bodies.dataset_field, {"dataset": "{"}).message


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (42, 422, "must be a JSON object"),
        ([], 422, "empty"),
        ([{}, 1, "x"], 422, "record 1 is not a JSON object"),
        ([{}] * (bodies.MAX_ROWS + 1), 413, "at most"),
    ],
)
def test_record_list_refusals(body: Any, status: int, words: str) -> None:
    error = _refused(bodies.record_list, body)
    assert error.status == status and words in error.message


def test_record_list() -> None:
    assert bodies.record_list({"a": 1}) == ([{"a": 1}], True)
    assert bodies.record_list([{"a": 1}]) == ([{"a": 1}], False)
    error = _refused(bodies.record_list, [1] * 50)
    assert len(error.detail) == MAX_ERRORS and error.detail[0]["loc"] == ["body", 0]


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ([1, 2], "must be a JSON object"),
        ({"data": [[1]]}, "columns must be a list"),
        ({"columns": ["a", 1], "data": [[1, 2]]}, "columns must be a list"),
        ({"columns": ["a", "a"], "data": [[1, 2]]}, "repeat"),
        ({"columns": ["a"], "data": "x"}, "data must be a list"),
        ({"columns": ["a"], "data": []}, "no rows"),
        ({"columns": ["a"], "data": [[1, 2]]}, "row 0 of data"),
        ({"columns": ["a"], "data": [[1], "x"]}, "row 1 of data"),
        ({"columns": ["a"], "data": [[1]], "index": [1, 2]}, "index"),
        ({"columns": ["a"], "data": [[1]], "index": "x"}, "index"),
    ],
)
def test_split_table_refusals(table: Any, words: str) -> None:
    error = _refused(bodies.split_table, table)
    assert error.status == 422 and words in error.message


def test_split_table() -> None:
    table = {"columns": ["a", "b"], "data": [[1, 2], [3, 4]], "index": ["x", "y"]}
    assert bodies.split_table(table) == (["a", "b"], [[1, 2], [3, 4]], ["x", "y"])
    assert bodies.split_table({"columns": ["a"], "data": [[1]]})[2] is None
    too_many = {"columns": ["a"], "data": [[1]] * (bodies.MAX_ROWS + 1)}
    assert _refused(bodies.split_table, too_many).status == 413
