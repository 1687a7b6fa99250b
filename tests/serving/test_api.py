"""The serving API on a real trained model: answers, errors, auth, probes, metrics."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from inference.trained_model import INPUTS, Trained
from mlops.errors import ConfigError, ModelError

pytestmark = pytest.mark.slow

TARGET = "next_return_predictions"


@pytest.fixture(scope="module")
def ludwig_answers(trained: Trained, records: list[dict]) -> np.ndarray:
    """LudwigModel.predict's next_return for the records (the reference)."""
    from ludwig.api import LudwigModel

    model = LudwigModel.load(
        str(trained.model_dirs[trained.versions[0]] / "model"),
        backend="local",
        logging_level=logging.ERROR,
    )
    predictions, _ = model.predict(pd.DataFrame(records)[INPUTS])
    return predictions[TARGET].to_numpy()


# Answers.


def test_one_record(client, trained, records, ludwig_answers) -> None:
    response = client.post("/predict", json=records[0])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == trained.model_name
    assert body["model_version"] == trained.versions[0]
    (answer,) = body["predictions"]
    r = ludwig_answers[0]
    assert answer[TARGET] == pytest.approx(r, rel=1e-5)
    assert answer["predicted_close"] == pytest.approx(records[0]["close"] * (1 + r), rel=1e-9)
    assert answer["expected_change"] == pytest.approx(r, rel=1e-6)


def test_a_list_of_records(client, records, ludwig_answers) -> None:
    response = client.post("/predict", json=records)
    assert response.status_code == 200, response.text
    got = [p[TARGET] for p in response.json()["predictions"]]
    np.testing.assert_allclose(got, ludwig_answers, rtol=1e-5)


def test_extra_fields_are_ignored(client, records, ludwig_answers) -> None:
    response = client.post("/predict", json={**records[0], "date": "2017-05-31", "note": None})
    assert response.status_code == 200
    assert response.json()["predictions"][0][TARGET] == pytest.approx(ludwig_answers[0], rel=1e-5)


@pytest.mark.parametrize("multipart", [False, True])
def test_ludwig_serve_form_request(client, trained, records, ludwig_answers, multipart) -> None:
    # What `ludwig serve` clients send: one form field per input feature, no close.
    fields = {k: str(v) for k, v in records[1].items() if k != "close"}
    if multipart:
        response = client.post("/predict", files={k: (None, v) for k, v in fields.items()})
    else:
        response = client.post("/predict", data=fields)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body[TARGET] == pytest.approx(ludwig_answers[1], rel=1e-5)
    assert body["model_version"] == trained.versions[0]
    assert "predicted_close" not in body
    with_close = client.post("/predict", data={**fields, "close": str(records[1]["close"])})
    assert with_close.json()["predicted_close"] == pytest.approx(
        records[1]["close"] * (1 + ludwig_answers[1]), rel=1e-9
    )


def test_batch_predict_split_layout(client, trained, records, ludwig_answers) -> None:
    frame = pd.DataFrame(records[:10], index=range(100, 110))
    table = json.loads(frame.to_json(orient="split"))
    response = client.post("/batch_predict", json=table)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == [TARGET, "predicted_close", "expected_change"]
    assert body["index"] == list(range(100, 110))
    assert body["model_version"] == trained.versions[0]
    got = np.array(body["data"])
    np.testing.assert_allclose(got[:, 0], ludwig_answers[:10], rtol=1e-5)
    np.testing.assert_allclose(got[:, 1], frame["close"] * (1 + ludwig_answers[:10]), rtol=1e-9)
    # ludwig serve's form: the table in the `dataset` field, without close.
    ludwig_table = json.loads(frame[INPUTS].to_json(orient="split"))
    form = client.post("/batch_predict", data={"dataset": json.dumps(ludwig_table)})
    assert form.status_code == 200, form.text
    assert form.json()["columns"] == [TARGET]
    np.testing.assert_allclose(np.array(form.json()["data"])[:, 0], ludwig_answers[:10], rtol=1e-5)


def test_unknown_symbol_is_answered_like_ludwig(client, records) -> None:
    # Ludwig maps a symbol it never saw to the most frequent training value; so do we.
    response = client.post("/predict", json={**records[0], "symbol": "NOTASYMBOL"})
    assert response.status_code == 200


# Errors: 4xx naming the field, never 500.


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


def test_missing_feature_is_named(client, records) -> None:
    record = {k: v for k, v in records[0].items() if k != "rsi_14"}
    body = _error(client.post("/predict", json=record), 422)
    assert "rsi_14" in body["error"]
    assert body["detail"][0]["loc"] == ["body", "rsi_14"]
    assert body["detail"][0]["type"] == "missing"


def test_missing_close_is_named(client, records) -> None:
    record = {k: v for k, v in records[0].items() if k != "close"}
    assert "close" in _error(client.post("/predict", json=record), 422)["error"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("rsi_14", "55", "rsi_14 must be a number"),
        ("rsi_14", True, "rsi_14 must be a number"),
        ("rsi_14", None, "rsi_14 must not be null"),
        ("rsi_14", [1], "rsi_14 must be a number"),
        ("log_volume", 10**400, "log_volume must be a finite number"),
        ("log_volume", "1e400", "log_volume must be a number"),
        ("symbol", 3, "symbol must be a string"),
        ("symbol", "  ", "symbol must not be empty"),
        ("symbol", "X" * 65, "symbol must be at most 64"),
        ("close", 0, "close must be greater than 0"),
        ("close", -5.0, "close must be greater than 0"),
    ],
)
def test_wrong_types_and_values_are_named(client, records, field, value, words) -> None:
    body = _error(client.post("/predict", json={**records[0], field: value}), 422)
    assert words in body["error"]
    assert body["detail"][0]["loc"] == ["body", field]


def test_errors_in_a_list_name_the_record(client, records) -> None:
    batch = [records[0], {**records[1], "return_1d": "x"}, records[2]]
    body = _error(client.post("/predict", json=batch), 422)
    assert body["error"] == "record 1: return_1d must be a number"
    assert body["detail"][0]["loc"] == ["body", 1, "return_1d"]
    # Listed record by record, then in field order.
    second = {k: v for k, v in records[1].items() if k != "rsi_14"}
    batch = [records[0], {**second, "symbol": ""}, {**records[2], "close": "1"}]
    locs = [d["loc"] for d in _error(client.post("/predict", json=batch), 422)["detail"]]
    assert locs == [["body", 1, "rsi_14"], ["body", 1, "symbol"], ["body", 2, "close"]]


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b"", {"content-type": "application/json"}, 422, "empty"),
        (b"   ", {}, 422, "empty"),
        (b"[]", {"content-type": "application/json"}, 422, "empty"),
        (b"{not json", {"content-type": "application/json"}, 400, "not valid JSON"),
        (b"42", {"content-type": "application/json"}, 422, "must be a JSON object"),
        (b'"text"', {"content-type": "application/json"}, 422, "must be a JSON object"),
        (b"[1, 2]", {"content-type": "application/json"}, 422, "record 0 is not a JSON object"),
        (b'{"rsi_14": NaN}', {"content-type": "application/json"}, 422, "finite"),
        (b'{"rsi_14": 1e400}', {"content-type": "application/json"}, 422, "finite"),
        (b"rsi_14=1", {"content-type": "text/plain"}, 415, "text/plain"),
        (b"", {"content-type": "application/x-www-form-urlencoded"}, 422, "form is empty"),
    ],
)
def test_bodies_that_cannot_be_used(client, content, headers, status, words) -> None:
    body = _error(client.post("/predict", content=content, headers=headers), status)
    assert words in body["error"]


def test_form_errors_name_the_field(client, records) -> None:
    fields = {k: str(v) for k, v in records[0].items() if k not in {"close", "symbol"}}
    assert "symbol is required" in _error(client.post("/predict", data=fields), 422)["error"]
    bad = {**fields, "symbol": "AAPL", "rsi_14": "high"}
    assert "rsi_14 must be a number" in _error(client.post("/predict", data=bad), 422)["error"]
    upload = client.post("/predict", files={"symbol": ("a.txt", b"AAPL")}, data=fields)
    assert "file upload" in _error(upload, 422)["error"]


def test_inputs_far_out_of_range_give_422_not_500(client, records) -> None:
    record = {**records[0], "log_volume": 1e300, "rsi_14": -1e300}  # inf in float32
    body = _error(client.post("/predict", json=record), 422)
    assert "not a finite number" in body["error"]


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ([1, 2], "must be a JSON object"),
        ({"data": [[1]]}, "columns must be a list"),
        ({"columns": ["a", "a"], "data": [[1, 2]]}, "repeat"),
        ({"columns": ["a"], "data": "x"}, "data must be a list"),
        ({"columns": ["a"], "data": []}, "no rows"),
        ({"columns": ["a"], "data": [[1, 2]]}, "row 0 of data"),
        ({"columns": ["a"], "data": [[1]], "index": [1, 2]}, "index"),
        ({"columns": ["a"], "data": [[1]]}, "column rsi_14 is missing"),
    ],
)
def test_batch_table_errors(client, table, words) -> None:
    assert words in _error(client.post("/batch_predict", json=table), 422)["error"]


def test_batch_value_error_names_row_and_column(client, records) -> None:
    frame = pd.DataFrame(records[:3])
    table = json.loads(frame.to_json(orient="split"))
    column = table["columns"].index("symbol")
    table["data"][2][column] = 7
    body = _error(client.post("/batch_predict", json=table), 422)
    assert body["error"] == "record data/2: symbol must be a string"
    assert body["detail"][0]["loc"] == ["body", "data", 2, column]
    form = client.post("/batch_predict", data={"dataset": "{oops"})
    assert "dataset is not valid JSON" in _error(form, 422)["error"]
    assert (
        "dataset is required"
        in _error(client.post("/batch_predict", data={"x": "1"}), 422)["error"]
    )


def test_wrong_method_and_path(client) -> None:
    assert client.get("/predict").status_code == 405
    assert client.get("/nothing").status_code == 404


# Probes, model, metrics.


def test_probes_and_model_description(client, trained) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["model"]["version"] == trained.versions[0]
    # An array predictor, not Ludwig's own predict: the NumPy one for a version registered
    # with its portable export (all trained now), the torch one for older versions.
    assert body["model"]["predictor"] in {"portable", "fast"}
    assert body["registry"]["reachable"] is True
    assert body["registry"]["champion_version"] == trained.versions[0]
    model = client.get("/model").json()
    assert model["name"] == trained.model_name
    assert model["version"] == trained.versions[0]
    assert len(model["run_id"]) == 32
    assert model["trained_at"].startswith("20")
    assert model["as_of"] == "2017-05-31"
    ic = {f"{k}_{s}" for k in ("ic", "rank_ic") for s in ("mean", "std", "ir", "t", "sessions")}
    assert set(model["holdout_metrics"]) == {"mae", "rmse", "mape", "wmape", *ic}
    assert model["input_features"]["symbol"] == "category"
    assert model["target"] == "next_return"


def test_metrics(client, trained, records) -> None:
    client.post("/predict", json=records[:3])
    client.post("/predict", json={})
    text = client.get("/metrics").text
    assert 'mlops_serve_requests_total{endpoint="/predict",method="POST",status="200"}' in text
    assert 'mlops_serve_requests_total{endpoint="/predict",method="POST",status="422"}' in text
    assert 'mlops_serve_request_duration_seconds_bucket{endpoint="/predict",le="0.005"}' in text
    version = trained.versions[0]
    assert f'mlops_serve_predictions_total{{endpoint="/predict",model_version="{version}"}}' in text
    assert f'model_version="{version}"' in text and "mlops_serve_model_info{" in text
    assert f"mlops_serve_model_version {float(version)}" in text
    assert "mlops_serve_registry_up 1.0" in text
    assert "mlops_serve_model_loaded 1.0" in text


def test_openapi_describes_the_models_features(client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    record = body["application/json"]["schema"]["anyOf"][0]
    assert set(record["required"]) == {*INPUTS, "close"}
    assert record["properties"]["symbol"]["type"] == "string"
    assert "close" not in body["application/x-www-form-urlencoded"]["schema"]["required"]
    assert "/batch_predict" in spec["paths"]


# Bearer token.


def test_bearer_token(trained, champion_holder, records) -> None:
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    settings = trained.settings(SERVE_API_TOKEN="s3cret-token")
    with TestClient(create_app(settings, champion_holder)) as api:
        for path in ("/predict", "/batch_predict"):
            response = api.post(path, json=records[0])
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        assert api.get("/model").status_code == 401
        assert api.get("/metrics").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert api.post("/predict", json=records[0], headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret-token"}
        assert api.post("/predict", json=records[0], headers=right).status_code == 200
        assert api.get("/model", headers=right).status_code == 200
        assert api.get("/metrics", headers=right).status_code == 200
        # The probes stay open for the kubelet.
        assert api.get("/healthz").status_code == 200
        assert api.get("/readyz").status_code == 200
    # An empty token means none; the template's placeholder is refused.
    with TestClient(create_app(trained.settings(SERVE_API_TOKEN=" "), champion_holder)) as api:
        assert api.post("/predict", json=records[0]).status_code == 200
    with pytest.raises(ConfigError, match="SERVE_API_TOKEN"):
        create_app(trained.settings(SERVE_API_TOKEN="changeme"), champion_holder)


# No model yet, registry down, a model Ludwig must serve.


def _app_with(trained, holder):
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    return TestClient(create_app(trained.settings(), holder))


def test_not_ready_until_a_model_is_loaded(trained, records) -> None:
    from mlops.serving.model_holder import ModelHolder

    holder = ModelHolder(trained.settings(), lookup=lambda: None)
    holder.poll_once()
    with _app_with(trained, holder) as api:
        assert api.get("/healthz").status_code == 200
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert ready.json()["registry"]["champion_version"] is None
        assert "no model" in _error(api.post("/predict", json=records[0]), 503)["error"]
        assert api.get("/model").status_code == 503
        assert "mlops_serve_model_loaded 0.0" in api.get("/metrics").text


def test_registry_down_keeps_serving_and_says_so(trained, champion_holder, records) -> None:
    from mlops.serving.model_holder import ModelHolder

    state = {"down": False}

    def lookup():
        if state["down"]:
            raise ModelError("The MLflow registry could not be read: connection refused.")
        return champion_holder.current.ref

    holder = ModelHolder(
        trained.settings(), lookup=lookup, loader=lambda ref: champion_holder.current
    )
    assert holder.poll_once()
    state["down"] = True
    assert not holder.poll_once()
    assert not holder.poll_once()
    with _app_with(trained, holder) as api:
        assert api.post("/predict", json=records[0]).status_code == 200
        ready = api.get("/readyz")
        assert ready.status_code == 200
        registry = ready.json()["registry"]
        assert registry["reachable"] is False
        # A sentence, not the error's text (which may name hosts or paths: the log has it).
        assert registry["last_error"] == (
            "the model registry cannot be read; the server log says why"
        )
        assert registry["consecutive_failures"] == 2
        text = api.get("/metrics").text
        assert "mlops_serve_registry_up 0.0" in text
        assert "mlops_serve_registry_consecutive_failures 2.0" in text
        assert "mlops_serve_registry_failures_total 2.0" in text
    state["down"] = False
    assert not holder.poll_once()
    assert holder.registry.reachable is True and holder.registry.consecutive_failures == 0


def test_a_model_the_fast_path_lacks_is_served_by_ludwig(trained, champion_holder, records) -> None:
    from ludwig.api import LudwigModel

    from mlops.contracts.predictor import LudwigPredictor
    from mlops.serving.model_holder import LoadedModel, ModelHolder

    current = champion_holder.current
    ludwig = LudwigPredictor(
        LudwigModel.load(
            str(trained.model_dirs[current.version] / "model"),
            backend="local",
            logging_level=logging.ERROR,
        )
    )
    loaded = LoadedModel(current.ref, ludwig, current.info, current.loaded_at, 0.0)
    holder = ModelHolder(trained.settings(), lookup=lambda: current.ref, loader=lambda ref: loaded)
    holder.poll_once()
    with _app_with(trained, holder) as api:
        slow = api.post("/predict", json=records[:5])
        assert slow.status_code == 200
        assert api.get("/readyz").json()["model"]["predictor"] == "ludwig"
    with _app_with(trained, champion_holder) as api:
        fast = api.post("/predict", json=records[:5])
    assert [p[TARGET] for p in slow.json()["predictions"]] == pytest.approx(
        [p[TARGET] for p in fast.json()["predictions"]], rel=1e-5
    )
