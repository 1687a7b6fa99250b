"""The records a loaded model takes, as pydantic models generated from its input features.

For each loaded model (one ``(name, version)``), :class:`RequestModels` builds two models
with ``pydantic.create_model`` from ``predictor.input_features`` (name -> Ludwig type):

* ``record``, a JSON record: every input feature and ``close`` (the last close, which
  turns a predicted return into a price) are required (a direction classifier's
  ``close`` is optional: it predicts no price); numbers must be JSON numbers;
* ``form_record``, ``ludwig serve``'s form fields (and the rows of its ``dataset``
  table): numbers may be given as text; ``close`` is optional.

A ``number`` feature takes a finite number (``close`` one above 0); any other type
(``category``) a non-empty string of at most :data:`MAX_TEXT` characters. Other fields
are ignored. The same models validate the requests and give the OpenAPI description its
request bodies, so the two cannot disagree; a hot swap to a version with other inputs
brings its own models (:class:`RequestModelCache`).

Errors are reported as the API always did: ``"<field> must be a number"`` and the like,
with the field's place in the body, record by record and then in field order, at most
:data:`~mlops.serving.api_errors.MAX_ERRORS` of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic import create_model as _create_model
from pydantic_core import PydanticCustomError

from mlops.contracts.columns import is_classifier
from mlops.serving.api_errors import MAX_ERRORS, ApiError, error_item, invalid

CLOSE = "close"
MAX_TEXT = 64  # characters of a category value
CACHED_MODELS = 8  # loaded versions whose request models are kept

# Where a field of record ``i`` sits in the body: ["body", name], ["body", i, name], ...
Locator = Callable[[int, str], list[Any]]
Columns = dict[str, list[Any]]


# Field types.


def _number_from_text(value: Any) -> Any:
    """A form's text as a float (Python's ``float``); anything else as it is."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value  # refused below as "must be a number"
    return value


def _category(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("category_empty", "must not be empty")
    if len(value) > MAX_TEXT:
        raise PydanticCustomError("category_too_long", f"must be at most {MAX_TEXT} characters")
    return value


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveNumber = Annotated[Number, Field(gt=0)]
Category = Annotated[
    str,
    Field(strict=True, json_schema_extra={"minLength": 1, "maxLength": MAX_TEXT}),
    AfterValidator(_category),
]


def field_type(kind: str, *, positive: bool, text: bool) -> Any:
    """The annotation of a field of Ludwig type ``kind`` (``number``; others are text)."""
    if kind != "number":
        return Category
    annotation: Any = PositiveNumber if positive else Number
    return Annotated[annotation, BeforeValidator(_number_from_text)] if text else annotation


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # "absent", not null: the OpenAPI field is just optional


# The models of one loaded model.


@dataclass(frozen=True)
class RequestModels:
    """The request models of one loaded model, and the checks that use them."""

    target: str
    input_features: Mapping[str, str]  # name -> Ludwig type
    record: type[BaseModel]
    form_record: type[BaseModel]
    fields: Mapping[str, str]  # attribute of the models -> field name in the body

    @classmethod
    def of(cls, input_features: Mapping[str, str], target: str) -> RequestModels:
        """Generate the models for a predictor's ``input_features`` and ``target``."""
        names = list(input_features)
        if CLOSE not in input_features:
            names.append(CLOSE)
        # Attributes f0, f1, ...: a feature may be named anything; its name is the alias.
        fields = {f"f{i}": name for i, name in enumerate(names)}
        return cls(
            target=target,
            input_features=dict(input_features),
            record=_model(
                "Record", fields, input_features, text=False, optional_close=is_classifier(target)
            ),
            form_record=_model("FormRecord", fields, input_features, text=True),
            fields=fields,
        )

    def model(self, *, form: bool) -> type[BaseModel]:
        return self.form_record if form else self.record

    def required(self, *, form: bool) -> list[str]:
        """The names a record must hold, in order."""
        model = self.model(form=form)
        return [self.fields[a] for a, f in model.model_fields.items() if f.is_required()]

    def json_schema(self, *, form: bool) -> dict[str, Any]:
        """The JSON schema of a record (OpenAPI request bodies)."""
        return self.model(form=form).model_json_schema()

    def check(self, records: Sequence[Any], loc: Locator, *, form: bool) -> Columns:
        """The records' checked values as columns (field name -> values).

        A column is there for each required field, and for ``close`` when the first record
        holds it (a form's ``close`` is optional). Raises ApiError(422) naming the bad
        fields, record by record (at most MAX_ERRORS).
        """
        model = self.model(form=form)
        if not records:
            return {name: [] for name in self.required(form=form)}
        validate = model.model_validate
        try:
            rows = [validate(record) for record in records]
        except ValidationError:
            raise self._refusal(model, records, loc, form=form) from None
        present = rows[0].model_fields_set
        values = [row.__dict__ for row in rows]
        return {
            name: [v[attribute] for v in values]
            for attribute, name in self.fields.items()
            if attribute in present
        }

    def check_table(
        self, columns: list[str], data: list[list[Any]], *, form: bool
    ) -> tuple[Columns, list[float] | None]:
        """The checked columns of a 'split' table's rows, and its closes when it has them."""
        missing = [name for name in self.required(form=form) if name not in columns]
        if missing:
            raise ApiError(
                422,
                f"column {missing[0]} is missing",
                [error_item(["body", "columns"], f"{n} is required", "missing") for n in missing],
            )
        position = {name: i for i, name in enumerate(columns)}
        wanted = [(name, position[name]) for name in self.fields.values() if name in position]
        records = [{name: row[i] for name, i in wanted} for row in data]
        checked = self.check(
            records, lambda i, name: ["body", "data", i, position[name]], form=form
        )
        return checked, checked.get(CLOSE)

    def _refusal(
        self, model: type[BaseModel], records: Sequence[Any], loc: Locator, *, form: bool
    ) -> ApiError:
        """A 422 with the first MAX_ERRORS errors, record by record, then in field order.

        A form's optional ``close`` is checked once the inputs are fine: its errors are
        listed only when no input has one (as the API always answered).
        """
        later = {CLOSE} if form and CLOSE not in self.input_features else set()
        found = self._first_errors(model, records, loc, skip=later)
        if not found:
            found = self._first_errors(model, records, loc, skip=set())
        return invalid(found)

    def _first_errors(
        self, model: type[BaseModel], records: Sequence[Any], loc: Locator, *, skip: set[str]
    ) -> list[dict[str, Any]]:
        order = {name: i for i, name in enumerate(self.fields.values())}
        found: list[dict[str, Any]] = []
        for i, record in enumerate(records):
            try:
                model.model_validate(record)
            except ValidationError as exc:
                errors = [
                    e
                    for e in exc.errors(include_url=False, include_context=False)
                    if _field_of(e) not in skip
                ]
                errors.sort(key=lambda e: order.get(_field_of(e), len(order)))
                found.extend(_error(e, i, loc) for e in errors)
                if len(found) >= MAX_ERRORS:
                    break
        return found[:MAX_ERRORS]


def _model(
    title: str,
    fields: Mapping[str, str],
    input_features: Mapping[str, str],
    *,
    text: bool,
    optional_close: bool = False,
) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for attribute, name in fields.items():
        kind = input_features.get(name, "number")  # close is a number
        annotation = field_type(kind, positive=name == CLOSE, text=text)
        if name in input_features or not (text or optional_close):
            info = Field(alias=name)
        else:  # the close of a form or a classifier's: optional
            info = Field(default=None, alias=name, json_schema_extra=_no_default)
        definitions[attribute] = (annotation, info)
    config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})
    return _create_model(title, __config__=config, **definitions)


def _field_of(error: Any) -> str:
    return str(error["loc"][0]) if error["loc"] else ""


def _error(error: Any, record: int, loc: Locator) -> dict[str, Any]:
    """A pydantic error in the API's words."""
    name = _field_of(error)
    message, kind = _reason(error)
    return error_item(loc(record, name), f"{name} {message}", kind)


def _reason(error: Any) -> tuple[str, str]:
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return "is required", "missing"
    if value is None:
        return "must not be null", "type_error"
    if kind == "float_type":
        # An integer beyond float's range (JSON allows it) is refused as not finite.
        return ("must be a finite number" if type(value) is int else "must be a number"), (
            "type_error"
        )
    if kind == "finite_number":
        return "must be a finite number", "type_error"
    if kind == "greater_than":
        return "must be greater than 0", "value_error"
    if kind == "string_type":
        return "must be a string", "type_error"
    return str(error["msg"]), "type_error"  # the category checks say it themselves


class RequestModelCache:
    """The request models of the last few loaded versions, by (model name, version)."""

    def __init__(self, size: int = CACHED_MODELS) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str], RequestModels] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], predictor: Any) -> RequestModels:
        """The models of version ``key``, generated from ``predictor`` the first time."""
        models = self._models.get(key)
        if models is not None:
            return models
        models = RequestModels.of(predictor.input_features, predictor.target)
        with self._lock:
            self._models[key] = models
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return models
