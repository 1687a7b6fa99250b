"""The request models generated per loaded model, alone (no app, no trained model)."""

from __future__ import annotations

from typing import Any

import pytest

from mlops.serving.api_errors import MAX_ERRORS, ApiError
from mlops.serving.request_models import MAX_TEXT, RequestModelCache, RequestModels
from serving.fakes import FEATURES, OTHER_FEATURES, RECORD, FakePredictor


def _models(features: dict[str, str] = FEATURES) -> RequestModels:
    return RequestModels.of(features, "next_return")


def _one(record: dict[str, Any], *, form: bool = False) -> dict[str, list[Any]]:
    return _models().check([record], lambda i, name: ["body", name], form=form)


def _refused(record: Any, *, form: bool = False, models: RequestModels | None = None) -> ApiError:
    with pytest.raises(ApiError) as caught:
        (models or _models()).check([record], lambda i, name: ["body", name], form=form)
    assert caught.value.status == 422
    return caught.value


# The models follow the input features.


def test_models_are_generated_from_the_input_features() -> None:
    models = _models()
    assert models.required(form=False) == ["rsi_14", "return_1d", "symbol", "close"]
    assert models.required(form=True) == ["rsi_14", "return_1d", "symbol"]
    schema = models.json_schema(form=False)
    assert schema["type"] == "object"
    assert schema["required"] == ["rsi_14", "return_1d", "symbol", "close"]
    assert schema["additionalProperties"] is True
    props = schema["properties"]
    assert props["rsi_14"]["type"] == "number"
    assert props["close"]["type"] == "number" and props["close"]["exclusiveMinimum"] == 0
    assert props["symbol"] == {**props["symbol"], "type": "string", "minLength": 1}
    assert props["symbol"]["maxLength"] == MAX_TEXT
    form = models.json_schema(form=True)
    assert "close" in form["properties"] and "close" not in form["required"]
    assert "default" not in form["properties"]["close"]  # optional, never null


def test_close_as_an_input_and_other_types() -> None:
    models = _models(OTHER_FEATURES)
    # close is an input: required in both, once, and still above 0.
    assert models.required(form=False) == ["close", "log_volume", "sector", "flag"]
    assert models.required(form=True) == models.required(form=False)
    assert models.json_schema(form=True)["properties"]["close"]["exclusiveMinimum"] == 0
    # A binary feature is taken as text, as any type but number.
    assert models.json_schema(form=False)["properties"]["flag"]["type"] == "string"
    record = {"close": 5, "log_volume": 1, "sector": "tech", "flag": "true"}
    checked = models.check([record], lambda i, n: ["body", n], form=False)
    assert checked == {"close": [5.0], "log_volume": [1.0], "sector": ["tech"], "flag": ["true"]}
    error = _refused({**record, "close": 0}, models=models, form=True)
    assert error.message == "close must be greater than 0"


def test_feature_names_need_not_be_python_names() -> None:
    odd = {"model_config": "number", "class": "category", "has space": "number", "_x": "number"}
    models = _models(odd)
    record = {"model_config": 1, "class": "a", "has space": 2.5, "_x": -1, "close": 3}
    checked = models.check([record], lambda i, n: ["body", n], form=False)
    assert checked == {
        "model_config": [1.0],
        "class": ["a"],
        "has space": [2.5],
        "_x": [-1.0],
        "close": [3.0],
    }
    assert set(models.json_schema(form=False)["properties"]) == set(record)


# What is accepted, as what.


def test_checked_values_become_columns() -> None:
    records = [RECORD, {**RECORD, "rsi_14": 7, "symbol": " MSFT ", "note": [1]}]
    checked = _models().check(records, lambda i, n: ["body", i, n], form=False)
    assert checked == {
        "rsi_14": [55.0, 7.0],
        "return_1d": [0.01, 0.01],
        "symbol": ["AAPL", " MSFT "],  # passed on as given; the predictor strips
        "close": [100.0, 100.0],
    }
    assert all(type(v) is float for v in checked["rsi_14"])


def test_form_numbers_are_read_from_text() -> None:
    fields = {"rsi_14": " 55.5 ", "return_1d": "1_0", "symbol": "AAPL"}
    assert _one(fields, form=True) == {"rsi_14": [55.5], "return_1d": [10.0], "symbol": ["AAPL"]}
    with_close = _one({**fields, "close": "12"}, form=True)
    assert with_close["close"] == [12.0]
    # Without a form, text is not a number.
    assert _refused({**RECORD, "rsi_14": "55"}).message == "rsi_14 must be a number"


@pytest.mark.parametrize(
    ("field", "value", "message", "kind"),
    [
        ("rsi_14", "55", "rsi_14 must be a number", "type_error"),
        ("rsi_14", True, "rsi_14 must be a number", "type_error"),
        ("rsi_14", None, "rsi_14 must not be null", "type_error"),
        ("rsi_14", [1], "rsi_14 must be a number", "type_error"),
        ("rsi_14", {"a": 1}, "rsi_14 must be a number", "type_error"),
        ("rsi_14", float("nan"), "rsi_14 must be a finite number", "type_error"),
        ("rsi_14", float("-inf"), "rsi_14 must be a finite number", "type_error"),
        ("rsi_14", 10**400, "rsi_14 must be a finite number", "type_error"),
        ("rsi_14", -(10**400), "rsi_14 must be a finite number", "type_error"),
        ("symbol", 3, "symbol must be a string", "type_error"),
        ("symbol", None, "symbol must not be null", "type_error"),
        ("symbol", "  ", "symbol must not be empty", "type_error"),
        ("symbol", " " * 90, "symbol must not be empty", "type_error"),
        ("symbol", "X" * 65, "symbol must be at most 64 characters", "type_error"),
        ("close", 0, "close must be greater than 0", "value_error"),
        ("close", -5.0, "close must be greater than 0", "value_error"),
        ("close", float("inf"), "close must be a finite number", "type_error"),
    ],
)
def test_json_errors_name_the_field(field: str, value: Any, message: str, kind: str) -> None:
    error = _refused({**RECORD, field: value})
    assert error.message == message
    assert error.detail == [{"loc": ["body", field], "msg": message, "type": kind}]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("high", "rsi_14 must be a number"),
        ("", "rsi_14 must be a number"),
        ("nan", "rsi_14 must be a finite number"),
        ("1e400", "rsi_14 must be a finite number"),
        ("-Infinity", "rsi_14 must be a finite number"),
    ],
)
def test_form_errors_name_the_field(value: str, message: str) -> None:
    fields = {"rsi_14": value, "return_1d": "0.1", "symbol": "AAPL"}
    assert _refused(fields, form=True).message == message


def test_missing_fields_are_named_in_field_order() -> None:
    error = _refused({"symbol": "AAPL"})
    assert error.message == "rsi_14 is required"
    assert [d["loc"] for d in error.detail] == [
        ["body", "rsi_14"],
        ["body", "return_1d"],
        ["body", "close"],
    ]
    assert {d["type"] for d in error.detail} == {"missing"}


def test_errors_are_listed_record_by_record_and_capped() -> None:
    records = [RECORD, {**RECORD, "symbol": "", "rsi_14": "x"}, {"close": -1}]
    with pytest.raises(ApiError) as caught:
        _models().check(records, lambda i, n: ["body", i, n], form=False)
    assert caught.value.message == "record 1: rsi_14 must be a number"
    assert [d["loc"] for d in caught.value.detail] == [
        ["body", 1, "rsi_14"],
        ["body", 1, "symbol"],
        ["body", 2, "rsi_14"],
        ["body", 2, "return_1d"],
        ["body", 2, "symbol"],
        ["body", 2, "close"],
    ]
    many = [{**RECORD, "rsi_14": None, "symbol": 1}] * 1000
    with pytest.raises(ApiError) as caught:
        _models().check(many, lambda i, n: ["body", i, n], form=False)
    assert len(caught.value.detail) == MAX_ERRORS
    assert caught.value.detail[-1]["loc"] == ["body", MAX_ERRORS // 2 - 1, "symbol"]


def test_a_forms_close_is_checked_once_the_inputs_are_fine() -> None:
    fields = {"rsi_14": "x", "return_1d": "0.1", "symbol": "AAPL", "close": "-1"}
    assert [d["msg"] for d in _refused(fields, form=True).detail] == ["rsi_14 must be a number"]
    fine = {**fields, "rsi_14": "1"}
    assert _refused(fine, form=True).message == "close must be greater than 0"


# Tables.


def test_table_rows_are_checked_by_column_position() -> None:
    models = _models()
    columns = ["close", "symbol", "extra", "return_1d", "rsi_14"]
    data = [[10.0, "AAPL", None, 0.1, 50.0], [11.0, 7, "x", 0.2, 51.0]]
    with pytest.raises(ApiError) as caught:
        models.check_table(columns, data, form=False)
    assert caught.value.message == "record data/1: symbol must be a string"
    assert caught.value.detail[0]["loc"] == ["body", "data", 1, 1]
    data[1][1] = "MSFT"
    checked, closes = models.check_table(columns, data, form=False)
    assert checked["symbol"] == ["AAPL", "MSFT"] and closes == [10.0, 11.0]
    assert "extra" not in checked


def test_table_columns_missing_and_a_forms_optional_close() -> None:
    models = _models()
    with pytest.raises(ApiError) as caught:
        models.check_table(["symbol"], [["AAPL"]], form=False)
    assert caught.value.message == "column rsi_14 is missing"
    assert [d["msg"] for d in caught.value.detail] == [
        "rsi_14 is required",
        "return_1d is required",
        "close is required",
    ]
    columns = ["rsi_14", "return_1d", "symbol"]
    checked, closes = models.check_table(columns, [["1", 2, "AAPL"]], form=True)
    assert closes is None and checked == {"rsi_14": [1.0], "return_1d": [2.0], "symbol": ["AAPL"]}
    _, closes = models.check_table([*columns, "close"], [["1", 2, "AAPL", "5"]], form=True)
    assert closes == [5.0]


# One set of models per loaded version.


def test_the_cache_keeps_models_per_version() -> None:
    cache = RequestModelCache(size=2)
    first = cache.get(("m", "1"), FakePredictor(FEATURES))
    assert cache.get(("m", "1"), FakePredictor(OTHER_FEATURES)) is first
    other = cache.get(("m", "2"), FakePredictor(OTHER_FEATURES))
    assert other.required(form=False) == ["close", "log_volume", "sector", "flag"]
    cache.get(("m", "3"), FakePredictor(FEATURES))
    # Only the last two are kept: version 1's models are generated again.
    assert cache.get(("m", "1"), FakePredictor(FEATURES)) is not first
