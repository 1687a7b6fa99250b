"""Property-based tests of the API from its own OpenAPI description (schemathesis).

Schemathesis generates requests for every operation from ``/openapi.json`` (which lists
the loaded model's features): valid records, lists, tables and forms (positive mode),
and invalid ones (negative mode: wrong types, missing fields, out-of-schema values and
content). No answer may be a server error; status codes, content types and answer bodies
must be the documented ones.

(Hypothesis is driven directly with ``schema.as_strategy``: schemathesis' lazy pytest
fixture loader does not work with pytest 9.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(trained, champion_holder):
    from mlops.serving.app import create_app

    app = create_app(trained.settings(), champion_holder)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _fuzz(api_schema, mode: GenerationMode, examples: int) -> list[int]:
    statuses: list[int] = []

    @given(case=api_schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        response = case.call()
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    check()
    return statuses


def test_valid_requests_never_get_a_server_error(api_schema) -> None:
    statuses = _fuzz(api_schema, GenerationMode.POSITIVE, 300)
    assert all(s < 500 for s in statuses)
    assert 200 in statuses  # schema-valid requests do get answers


def test_invalid_requests_get_4xx_not_5xx(api_schema) -> None:
    statuses = _fuzz(api_schema, GenerationMode.NEGATIVE, 300)
    assert all(s < 500 for s in statuses)
    assert any(400 <= s < 500 for s in statuses)
