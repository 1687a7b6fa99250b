"""The route handlers alone (fake predictors, no trained model), and the app around them:
hot swaps between versions with other inputs, the OpenAPI description, the token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from mlops.errors import ConfigError
from mlops.serving.api_errors import ApiError
from mlops.serving.metrics import ServeMetrics
from mlops.serving.routes import (
    Serving,
    describe_model,
    handle_batch_predict,
    handle_predict,
    metrics_text,
    readiness,
)
from serving.fakes import FEATURES, OTHER_FEATURES, RECORD, FakePredictor, Registry, request

TARGET = "next_return_predictions"


@pytest.fixture
def registry() -> Registry:
    registry = Registry(
        {
            "1": FakePredictor(FEATURES),
            "2": FakePredictor(OTHER_FEATURES),
            "3": FakePredictor({"a": "number"}, target="next_close"),
        }
    )
    registry.champion = "1"
    return registry


@pytest.fixture
def serving(registry: Registry, embedded_settings: Any) -> Serving:
    holder = registry.holder(embedded_settings)
    assert holder.poll_once()
    return Serving(holder, ServeMetrics(holder))


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def _json(response: Any) -> Any:
    return json.loads(response.body)


def _refused(coroutine: Any, status: int) -> ApiError:
    with pytest.raises(ApiError) as caught:
        _run(coroutine)
    assert caught.value.status == status
    return caught.value


# POST /predict


def test_predict_one_record(serving: Serving, registry: Registry) -> None:
    response = _run(handle_predict(request(RECORD), serving))
    assert response.status_code == 200
    body = _json(response)
    assert list(body) == ["model_name", "model_version", "predictions"]
    assert (body["model_name"], body["model_version"]) == ("stock-close", "1")
    (answer,) = body["predictions"]
    r = registry.versions["1"].expected(RECORD)
    assert answer == {
        "predicted_close": pytest.approx(100.0 * (1 + r)),
        "expected_change": pytest.approx(r),
        TARGET: pytest.approx(r),
    }


def test_predict_a_list_and_count_it(serving: Serving) -> None:
    records = [RECORD, {**RECORD, "rsi_14": 10}, {**RECORD, "symbol": "MSFT"}]
    body = _json(_run(handle_predict(request(records), serving)))
    assert len(body["predictions"]) == 3
    text = metrics_text(serving.metrics).body.decode()
    assert 'mlops_serve_predictions_total{endpoint="/predict",model_version="1"} 3.0' in text


def test_predict_form_answers_like_ludwig_serve(serving: Serving, registry: Registry) -> None:
    fields = {"rsi_14": "55", "return_1d": "0.01", "symbol": "AAPL"}
    body = _json(_run(handle_predict(request(form=fields), serving)))
    r = registry.versions["1"].expected({**RECORD})
    assert body == {TARGET: pytest.approx(r), "model_name": "stock-close", "model_version": "1"}
    with_close = _json(_run(handle_predict(request(form={**fields, "close": "100"}), serving)))
    assert list(with_close)[:3] == [TARGET, "predicted_close", "expected_change"]


def test_predict_refusals(serving: Serving) -> None:
    assert _refused(handle_predict(request(raw=b"x=1", content_type="text/plain"), serving), 415)
    assert _refused(handle_predict(request(raw=b"{x"), serving), 400)
    assert "empty" in _refused(handle_predict(request(raw=b" "), serving), 422).message
    assert "form is empty" in _refused(handle_predict(request(form={}), serving), 422).message
    error = _refused(handle_predict(request([RECORD, {**RECORD, "rsi_14": "x"}]), serving), 422)
    assert error.message == "record 1: rsi_14 must be a number"


def test_inputs_far_out_of_range_are_refused_not_answered(serving: Serving) -> None:
    record = {**RECORD, "rsi_14": 1e308, "close": 1e308}
    error = _refused(handle_predict(request(record), serving), 422)
    assert "not a finite number" in error.message


def test_no_model_yet(embedded_settings: Any) -> None:
    holder = Registry({}).holder(embedded_settings)
    holder.poll_once()
    serving = Serving(holder, ServeMetrics(holder))
    assert "no model" in _refused(handle_predict(request(RECORD), serving), 503).message
    with pytest.raises(ApiError):
        describe_model(serving)
    response = readiness(holder)
    assert response.status_code == 503 and _json(response)["ready"] is False


# POST /batch_predict


def test_batch_predict_json_and_form(serving: Serving) -> None:
    table = {
        "columns": ["symbol", "rsi_14", "return_1d", "close"],
        "data": [["AAPL", 50, 0.1, 10.0], ["MSFT", 51, 0.2, 20.0]],
        "index": ["a", "b"],
    }
    body = _json(_run(handle_batch_predict(request(table, path="/batch_predict"), serving)))
    assert body["columns"] == [TARGET, "predicted_close", "expected_change"]
    assert body["index"] == ["a", "b"] and len(body["data"]) == 2
    without_close = {"columns": table["columns"][:3], "data": [row[:3] for row in table["data"]]}
    form = request(form={"dataset": json.dumps(without_close)}, path="/batch_predict")
    body = _json(_run(handle_batch_predict(form, serving)))
    assert body["columns"] == [TARGET] and body["index"] == [0, 1]
    missing = request({"columns": ["symbol"], "data": [["AAPL"]]}, path="/batch_predict")
    assert _refused(handle_batch_predict(missing, serving), 422).message == (
        "column rsi_14 is missing"
    )


# The probes, the model, the metrics.


def test_readiness_and_model_description(serving: Serving) -> None:
    ready = readiness(serving.holder)
    assert ready.status_code == 200
    assert _json(ready)["model"]["version"] == "1"
    model = _json(describe_model(serving))
    assert model["input_features"] == FEATURES
    assert model["target"] == "next_return" and model["holdout_metrics"] == {"mae": 0.5}


def test_an_archived_champion_is_not_loaded_and_the_server_says_why(
    serving: Serving, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """The alias on an archived version (issue 19): version 1 keeps answering, /readyz is
    503 with the sentence, until the alias moves to a version that is not archived."""
    holder = serving.holder
    registry.archived.add("2")
    registry.champion = "2"
    assert not holder.poll_once() and not holder.poll_once()
    assert holder.current is not None and holder.current.version == "1"
    ready = readiness(holder)
    body = _json(ready)
    assert ready.status_code == 503 and body["ready"] is False
    assert body["model"]["version"] == "1" and body["registry"]["champion_version"] == "2"
    assert body["refused"] == (
        "Model stock-close's champion points at version 2, which is archived, so it is not "
        "used: move the champion with `mlops models promote stock-close VERSION --reason ...` "
        "or `mlops models rollback stock-close`."
    )
    assert caplog.text.count("which is archived") == 1, "said once, not at every poll"
    answer = _json(_run(handle_predict(request(RECORD), serving)))
    assert answer["model_version"] == "1"
    registry.champion = "3"
    assert holder.poll_once() and holder.current.version == "3"
    ready = readiness(holder)
    assert ready.status_code == 200 and _json(ready)["refused"] is None


# Hot swaps: validation follows the model answering.


def test_validation_follows_the_loaded_version(serving: Serving, registry: Registry) -> None:
    assert _run(handle_predict(request(RECORD), serving)).status_code == 200
    registry.champion = "2"
    assert serving.holder.poll_once()
    error = _refused(handle_predict(request(RECORD), serving), 422)
    assert error.message == "log_volume is required"
    other = {"close": 5.0, "log_volume": 1.0, "sector": "tech", "flag": "yes"}
    body = _json(_run(handle_predict(request(other), serving)))
    assert body["model_version"] == "2"
    registry.champion = "3"  # a model of next_close: its output is the close
    assert serving.holder.poll_once()
    (answer,) = _json(_run(handle_predict(request({"a": 2.0, "close": 4.0}), serving)))[
        "predictions"
    ]
    assert answer["predicted_close"] == answer["next_close_predictions"] == pytest.approx(0.002)
    registry.champion = "1"  # rolled back: the first version's rules again
    assert serving.holder.poll_once()
    assert _run(handle_predict(request(RECORD), serving)).status_code == 200


# The app: OpenAPI per version, the token.


@pytest.fixture
def api(registry: Registry, embedded_settings: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    holder = registry.holder(embedded_settings)
    holder.poll_once()
    with TestClient(create_app(embedded_settings, holder)) as client:
        yield client


def _predict_record_schema(api: Any) -> dict[str, Any]:
    spec = api.get("/openapi.json").json()
    return spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["anyOf"][0]


def test_openapi_follows_the_loaded_version(api: Any, registry: Registry) -> None:
    assert set(_predict_record_schema(api)["required"]) == {*FEATURES, "close"}
    registry.champion = "2"
    assert api.app.state.holder.poll_once()
    assert set(_predict_record_schema(api)["required"]) == set(OTHER_FEATURES)
    spec = api.get("/openapi.json").json()
    batch = spec["paths"]["/batch_predict"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["required"] == ["columns", "data"]
    assert set(spec["paths"]) == {
        "/predict",
        "/batch_predict",
        "/healthz",
        "/readyz",
        "/model",
        "/metrics",
        "/admin/reload",
    }


def test_app_routes_answer_with_the_handlers(api: Any) -> None:
    assert api.post("/predict", json=RECORD).json()["model_version"] == "1"
    assert api.post("/predict", json={**RECORD, "rsi_14": None}).status_code == 422
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    assert api.get("/model").json()["version"] == "1"
    text = api.get("/metrics").text
    assert 'mlops_serve_requests_total{endpoint="/predict",method="POST",status="422"} 1.0' in text


def test_every_answer_refuses_to_be_framed(api: Any) -> None:
    answers = [
        api.get("/healthz"),
        api.post("/predict", json=RECORD),
        api.post("/predict", json={**RECORD, "rsi_14": None}),  # 422
        api.get("/nope"),  # 404
        api.post("/predict", content=b"x" * 10, headers={"Content-Length": str(2**40)}),  # 413
    ]
    for answer in answers:
        assert answer.headers["content-security-policy"] == "frame-ancestors 'none'", answer
        assert answer.headers["x-frame-options"] == "DENY", answer


def test_token_guards_all_but_the_probes(
    registry: Registry, make_settings: Any, tmp_path: Any
) -> None:
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    settings = make_settings(tmp_path, SERVE_API_TOKEN="s3cret")
    holder = registry.holder(settings)
    holder.poll_once()
    with TestClient(create_app(settings, holder)) as client:
        refused = client.post("/predict", json=RECORD)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/predict", json=RECORD, headers=good).status_code == 200
        assert client.get("/readyz").status_code == 200
    with pytest.raises(ConfigError):
        create_app(make_settings(tmp_path, SERVE_API_TOKEN="changeme"), holder)
