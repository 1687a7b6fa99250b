"""Issue 10 ("no silent failure") on the serving side, with fake predictors (no training):
a body limit enforced while the body streams in, client disconnects counted apart, large
bodies decoded off the event loop, no server paths or exception text in public answers,
and a corpus of bad requests each with its status and sentence."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mlops.contracts.models import ModelRef
from mlops.serving import bodies
from mlops.serving.model_holder import LoadedModel, ModelHolder
from serving.fakes import FEATURES, RECORD, FakePredictor, Registry

DEADLINE = 60.0  # seconds; the machine is shared and loaded: only a hang should hit it
LIMIT = 4096  # the body limit of the test apps


def _wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``predicate`` until it is true (bounded; no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def registry() -> Registry:
    registry = Registry({"1": FakePredictor(FEATURES)})
    registry.champion = "1"
    return registry


@dataclass
class LiveServer:
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)


@pytest.fixture
def live(registry: Registry, embedded_settings: Any) -> Iterator[LiveServer]:
    """The app behind a real uvicorn on a loopback port, in a thread."""
    import uvicorn

    from mlops.serving.app import create_app

    holder = registry.holder(embedded_settings)
    assert holder.poll_once()
    app = create_app(embedded_settings, holder, max_body_bytes=LIMIT)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield LiveServer(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(DEADLINE)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (enough for these answers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return status, headers, body


# 1. The body limit, while the body streams in.


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_all_sent(live: LiveServer) -> None:
    with live.connect() as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"[" + b" " * 1022 + b"\n"  # 1 KiB of a (never finished) JSON list
        for _ in range(LIMIT // len(chunk) + 2):  # just past the limit, then no more
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # The body is not finished (no last chunk): a server waiting for all of it would
        # never answer; this one answers as soon as the limit is passed.
        status, headers, body = _read_response(sock)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == f"the body is larger than the limit of {LIMIT} bytes"
    metrics = httpx.get(f"{live.base}/metrics", timeout=DEADLINE).text
    assert 'mlops_serve_requests_total{endpoint="/predict",method="POST",status="413"} 1.0' in (
        metrics
    )


def test_a_content_length_over_the_limit_is_refused_unread(live: LiveServer) -> None:
    with live.connect() as sock:
        sock.sendall(
            b"POST /batch_predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (200 * 1024 * 1024)
        )
        status, _, body = _read_response(sock)  # answered with none of the 200 MiB sent
    assert status == 413
    assert "larger than the limit" in json.loads(body)["error"]


def test_a_body_under_the_limit_is_answered(live: LiveServer) -> None:
    response = httpx.post(f"{live.base}/predict", json=RECORD, timeout=DEADLINE)
    assert response.status_code == 200
    assert response.json()["model_version"] == "1"


# 3. A client that goes away is neither a 400 nor a 5xx.


def test_a_client_disconnect_is_counted_apart(live: LiveServer) -> None:
    with live.connect() as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"rsi_14": 5'
        )
    # Closed with 988 bytes of the body missing.

    def disconnects() -> str | None:
        text = httpx.get(f"{live.base}/metrics", timeout=DEADLINE).text
        line = 'mlops_serve_client_disconnects_total{endpoint="/predict"} 1.0'
        return text if line in text else None

    text = _wait_for(disconnects, "the disconnect to be counted")
    assert 'endpoint="/predict",method="POST",status="400"' not in text
    assert 'endpoint="/predict",method="POST",status="500"' not in text
    # The server carries on.
    assert httpx.post(f"{live.base}/predict", json=RECORD, timeout=DEADLINE).status_code == 200


def test_a_disconnect_while_a_form_is_read_is_not_a_400(
    registry: Registry, embedded_settings: Any
) -> None:
    from mlops.serving.app import create_app

    holder = registry.holder(embedded_settings)
    holder.poll_once()
    app = create_app(embedded_settings, holder)
    messages = [
        {"type": "http.request", "body": b"rsi_14=5", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "app": app,
    }
    asyncio.run(app(scope, receive, send))
    assert sent == []  # nobody to answer
    text = app.state.metrics.render()[0].decode()
    assert 'mlops_serve_client_disconnects_total{endpoint="/predict"} 1.0' in text
    assert "mlops_serve_requests_total{" not in text


# 4. Large bodies are decoded and checked off the event loop.


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_large_bodies_are_parsed_off_the_event_loop(
    registry: Registry, embedded_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from mlops.serving import routes
    from mlops.serving.app import create_app
    from mlops.serving.request_models import RequestModels

    seen: dict[str, list[tuple[str, bool]]] = {"decode": [], "check": [], "table": []}
    decode, check, check_table = bodies.decode_json, RequestModels.check, RequestModels.check_table

    def noted(kind: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen[kind].append((threading.current_thread().name, _on_event_loop()))
            return call(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(bodies, "decode_json", noted("decode", decode))
    monkeypatch.setattr(RequestModels, "check", noted("check", check))
    monkeypatch.setattr(RequestModels, "check_table", noted("table", check_table))
    holder = registry.holder(embedded_settings)
    holder.poll_once()
    rows = max(3 * routes.CHECK_INLINE_ROWS, bodies.PARSE_INLINE_BYTES // 20)
    big = [RECORD] * rows
    table = {"columns": list(RECORD), "data": [list(RECORD.values())] * rows}
    assert min(len(json.dumps(big)), len(json.dumps(table))) > bodies.PARSE_INLINE_BYTES
    with TestClient(create_app(embedded_settings, holder)) as client:
        loop_thread = client.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]
        small = client.post("/predict", json=RECORD)
        large = client.post("/predict", json=big)
        batch = client.post("/batch_predict", json=table)
        form = client.post("/batch_predict", data={"dataset": json.dumps(table)})
    assert small.status_code == large.status_code == batch.status_code == form.status_code == 200
    assert len(large.json()["predictions"]) == rows
    assert len(batch.json()["data"]) == len(form.json()["data"]) == rows
    # The small body on the event loop; the large ones in worker threads.
    assert seen["decode"][0] == (loop_thread, True)
    assert seen["check"][0] == (loop_thread, True)
    for name, on_loop in seen["decode"][1:] + seen["check"][1:] + seen["table"]:
        assert name != loop_thread and not on_loop
    assert len(seen["decode"]) == 4 and len(seen["table"]) == 2


# 5. No server paths or exception text in public answers.


def _failing_holder(settings: Any, secret_path: str, state: dict[str, Any]) -> ModelHolder:
    """Version 1 loads; version 2's artifact and, when ``state["down"]``, the registry fail
    with errors naming ``secret_path``."""
    good = FakePredictor(FEATURES)

    def lookup() -> ModelRef | None:
        if state["down"]:
            raise OSError(f"[Errno 13] Permission denied: '{secret_path}/mlflow.db'")
        return ModelRef("stock-close", state["champion"], "run", {})

    def loader(ref: ModelRef) -> LoadedModel:
        if ref.version != "1":
            raise FileNotFoundError(f"{secret_path}/artifacts/{ref.version}/model.npz")
        return LoadedModel(ref, good, {"run_id": "run"}, holder.started_at, 0.1)

    holder = ModelHolder(settings, lookup=lookup, loader=loader)
    return holder


def _leaks(text: str, secret_path: str) -> list[str]:
    words = [secret_path, "Traceback", "Errno", "FileNotFoundError", "model.npz", ".py"]
    return [w for w in words if w in text]


def test_public_answers_show_no_paths_or_exception_text(
    make_settings: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    settings = make_settings(tmp_path, SERVE_API_TOKEN="s3cret")
    home = str(tmp_path)
    state: dict[str, Any] = {"champion": "1", "down": False}
    holder = _failing_holder(settings, home, state)
    assert holder.poll_once()
    state["champion"] = "2"
    assert not holder.poll_once()  # version 2 cannot be loaded
    state["down"] = True
    assert not holder.poll_once()  # and now the registry cannot be read
    good = {"Authorization": "Bearer s3cret"}
    with TestClient(create_app(settings, holder), raise_server_exceptions=False) as client:
        answers = [
            client.get("/readyz"),
            client.get("/readyz", headers={"Authorization": "Bearer wrong"}),
            client.get("/model", headers=good),
            client.post("/predict", content=b"{oops", headers=good),
            client.post("/predict", data={"rsi_14": "x"}, headers=good),
            client.post("/batch_predict", data={"dataset": "[1,"}, headers=good),
            client.get("/nothing"),
        ]
        detailed = client.get("/readyz", headers=good).json()
    for response in answers:
        assert _leaks(response.text, home) == [], response.text
    ready = answers[0].json()
    assert ready["ready"] is True and ready["reload"]["failed_version"] == "2"
    assert ready["reload"]["last_error"] == "version 2 cannot be loaded; the server log says why"
    assert ready["registry"]["last_error"].startswith("the model registry cannot be read")
    # The details: for the token's holder, and in the log.
    assert home in detailed["reload"]["last_error"] and home in detailed["registry"]["last_error"]
    assert home in caplog.text


def test_an_unexpected_failure_is_a_generic_500(
    registry: Registry, embedded_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    secret = "/srv/secret/mlops-home/artifacts/1"

    def broken(columns: Any) -> Any:
        raise RuntimeError(f"cannot map {secret}")

    holder = registry.holder(embedded_settings)
    holder.poll_once()
    registry.versions["1"].predict_columns = broken  # type: ignore[method-assign]
    with TestClient(create_app(embedded_settings, holder), raise_server_exceptions=False) as api:
        response = api.post("/predict", json=RECORD)
        metrics = api.get("/metrics").text
    assert response.status_code == 500
    assert response.json()["error"] == "the server failed to answer; the server log says why"
    assert _leaks(response.text, secret) == []
    assert secret in caplog.text
    assert 'endpoint="/predict",method="POST",status="500"} 1.0' in metrics


# 6. A corpus of bad requests: each kind with its status and its sentence.

GOOD = {"Authorization": "Bearer s3cret"}
JSON = {**GOOD, "content-type": "application/json"}
BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # (kind, method, path, request arguments, status, the error sentence or its start)
    ("malformed JSON", "POST", "/predict", {"content": b'{"rsi_14": ', "headers": JSON},
     400, "the body is not valid JSON (line 1, column 12)"),
    ("not UTF-8", "POST", "/predict", {"content": b'{"a": "\xff"}', "headers": JSON},
     400, "the body is not valid JSON (not UTF-8 text)"),
    ("wrong content type", "POST", "/predict",
     {"content": b"rsi_14=1", "headers": {**GOOD, "content-type": "text/plain"}},
     415, "content type 'text/plain' is not supported"),
    ("empty body", "POST", "/predict", {"content": b" ", "headers": JSON},
     422, "the request body is empty"),
    ("missing field", "POST", "/predict",
     {"json": {k: v for k, v in RECORD.items() if k != "rsi_14"}, "headers": GOOD},
     422, "rsi_14 is required"),
    ("non-finite number", "POST", "/predict",
     {"content": json.dumps({**RECORD, "rsi_14": float("nan")}).encode(), "headers": JSON},
     422, "rsi_14 must be a finite number"),
    ("wrong type", "POST", "/predict", {"json": {**RECORD, "symbol": 3}, "headers": GOOD},
     422, "symbol must be a string"),
    ("not an object", "POST", "/predict", {"json": 42, "headers": GOOD},
     422, "the body must be a JSON object (one record) or a list of objects"),
    ("empty list", "POST", "/predict", {"json": [], "headers": GOOD},
     422, "the list of records is empty"),
    ("too many rows", "POST", "/predict", {"json": [RECORD] * 6, "headers": GOOD},
     413, "at most 5 records per request"),
    ("too many table rows", "POST", "/batch_predict",
     {"json": {"columns": ["a"], "data": [[1]] * 6}, "headers": GOOD},
     413, "at most 5 rows per request"),
    ("oversize body", "POST", "/predict",
     {"content": b"[" + b" " * LIMIT + b"]", "headers": JSON},
     413, f"the body is larger than the limit of {LIMIT} bytes"),
    ("unknown endpoint method", "GET", "/predict", {"headers": GOOD},
     405, "GET is not allowed on /predict; use POST"),
    ("unknown path", "GET", "/predictions", {"headers": GOOD},
     404, "there is no endpoint /predictions"),
    ("no token", "POST", "/predict", {"json": RECORD}, 401, "a valid bearer token is required"),
    ("bad token", "GET", "/model", {"headers": {"Authorization": "Bearer nope"}},
     401, "a valid bearer token is required"),
    ("form with a broken dataset field", "POST", "/batch_predict",
     {"data": {"dataset": '{"columns": ["a"], '}, "headers": GOOD},
     422, "dataset is not valid JSON (line 1, column 20)"),
    ("form without the dataset field", "POST", "/batch_predict",
     {"data": {"table": "{}"}, "headers": GOOD},
     422, "dataset is required (the table as JSON in pandas 'split' layout)"),
    ("broken multipart form", "POST", "/predict",
     {"content": b"--x\r\nbroken", "headers": {**GOOD, "content-type": "multipart/form-data"}},
     400, "the form cannot be read"),
    ("file upload", "POST", "/predict",
     {"files": {"symbol": ("a.txt", b"AAPL")}, "headers": GOOD},
     422, "symbol is a file upload; this model takes text fields"),
    ("table rows of the wrong width", "POST", "/batch_predict",
     {"json": {"columns": ["a", "b"], "data": [[1]]}, "headers": GOOD},
     422, "row 0 of data is not a list of 2 values"),
]  # fmt: skip


@pytest.fixture
def guarded_api(
    registry: Registry, make_settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    monkeypatch.setattr(bodies, "MAX_ROWS", 5)
    settings = make_settings(tmp_path, SERVE_API_TOKEN="s3cret")
    holder = registry.holder(settings)
    holder.poll_once()
    with TestClient(create_app(settings, holder, max_body_bytes=LIMIT)) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "arguments", "status", "sentence"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS],
)
def test_bad_requests_get_a_4xx_and_a_sentence(
    guarded_api: Any, method: str, path: str, arguments: dict, status: int, sentence: str
) -> None:
    assert len(BAD_REQUESTS) >= 12
    response = guarded_api.request(method, path, **arguments)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"].startswith(sentence), body
    assert isinstance(body["detail"], list)
    assert 'status="5' not in guarded_api.get("/metrics", headers=GOOD).text
