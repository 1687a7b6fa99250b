"""MLflow answers that are not an outage, each in its class: a refused login (401) or
permission (403) is a setting to fix (exit 2, naming the MLflow credential settings), a
tracking URI that is another HTTP server is exit 2 naming ``MLFLOW_TRACKING_URI``, and the
object store failing behind MLflow's artifact proxy is the object store's failure (exit 7)
or says plainly that it may be. No classified failure points at a traceback file.

The "servers" are small HTTP servers on loopback in this process, answering every request
the same way.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from faults.conftest import DAYS, assert_fails
from mlops.errors import ConfigError, ModelError, StoreError, TrackingError, classify

CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
HTML_404 = b"<html><body><h1>404 Not Found</h1><p>nginx</p></body></html>"


@dataclass
class Answer:
    """What the server answers: on ``/health``, and on every other path."""

    health: tuple[int, bytes] = (200, b"OK")
    other: tuple[int, bytes] = (404, HTML_404)
    content_type: str = "text/html"


class _Handler(BaseHTTPRequestHandler):
    answer: Answer

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, body = self.answer.health if self.path == "/health" else self.answer.other
        self.send_response(status)
        self.send_header("Content-Type", self.answer.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _reply

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def http_server() -> Iterator[Answer]:
    """A loopback HTTP server; ``answer.url`` its address, its answers changeable."""
    answer = Answer()
    handler = type("Handler", (_Handler,), {"answer": answer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    answer.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield answer
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _no_traceback_pointer(sentence: str) -> None:
    assert "traceback" not in sentence.lower(), sentence


def test_a_refused_login_or_permission_is_a_setting_naming_the_credentials(
    world, cli, http_server
) -> None:
    """401 then 403 on every REST route (``/health`` answers, as MLflow's basic-auth app
    leaves it open): batch-infer (read as "registry could not be read", exit 4, before)
    and train (exit 1, before) both exit 2 naming the credential settings."""
    env = world.with_env(MLFLOW_TRACKING_URI=http_server.url)  # type: ignore[attr-defined]
    http_server.other = (401, b"You are not authenticated. Please see the documentation.")
    outcome = cli(env, "batch-infer", "--as-of", DAYS[-1].isoformat())
    sentence = assert_fails(outcome, 2, "refused the login (HTTP 401", *CREDENTIALS)
    _no_traceback_pointer(sentence)

    http_server.other = (403, b"Permission denied")
    outcome = cli(env, "train", "--as-of", DAYS[0].isoformat())
    sentence = assert_fails(outcome, 2, "refused the user access (HTTP 403", *CREDENTIALS)
    _no_traceback_pointer(sentence)
    assert world.predictions_on(DAYS[-1]) == 0
    assert [r.status for r in world.runs()] == ["failed", "failed"]


def test_a_tracking_uri_that_is_another_server_names_the_setting(world, cli, http_server) -> None:
    """A server answering 404 HTML everywhere stops at the health probe; one answering
    ``/health`` (many do) but 404 HTML on MLflow's routes stops at its first call. Both
    exit 2 naming MLFLOW_TRACKING_URI (before: the probe passed, then exit 4 quoting the
    body)."""
    url = http_server.url  # type: ignore[attr-defined]
    env = world.with_env(MLFLOW_TRACKING_URI=url)
    http_server.health = (404, HTML_404)
    outcome = cli(env, "batch-infer", "--as-of", DAYS[-1].isoformat())
    sentence = assert_fails(
        outcome, 2, f"MLFLOW_TRACKING_URI ({url}) does not point at an MLflow tracking server"
    )
    assert "HTTP 404 on /health" in sentence and "<html>" not in sentence

    http_server.health = (200, b"OK")
    outcome = cli(env, "train", "--as-of", DAYS[0].isoformat())
    sentence = assert_fails(
        outcome, 2, "does not point at an MLflow tracking server (HTTP 404 on /api/2.0/mlflow/"
    )
    assert sentence.endswith("check MLFLOW_TRACKING_URI."), sentence
    assert "<html>" not in sentence
    _no_traceback_pointer(sentence)


def _artifact_failure(url: str, action: str, tmp_path: Path, monkeypatch) -> BaseException:
    """What MLflow's client raises uploading or downloading through the artifact proxy."""
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    # No retry: a retried upload resends an emptied file and waits for its time limit.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    repo = HttpArtifactRepository(f"{url}/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts")
    local = tmp_path / "model.bin"
    local.write_bytes(b"weights")
    with pytest.raises(Exception) as caught:
        if action == "upload":
            repo.log_artifact(str(local), "model")
        else:
            (tmp_path / "out").mkdir()
            try:
                repo.download_artifacts("model", str(tmp_path / "out"))
            except Exception as exc:  # as mlops.contracts.models reads it
                raise ModelError(f"Model m version 1 cannot be loaded: {exc}") from None
    return caught.value


@pytest.mark.parametrize("action", ["upload", "download"])
def test_the_object_store_failing_behind_mlflow_is_the_object_store(
    http_server, tmp_path, monkeypatch, action
) -> None:
    """MLflow's artifact proxy answers 500 when its S3 fails: exit 7, one clause of it
    (before: exit 8 "tracking server not answering" and 450 characters of urllib3)."""
    http_server.other = (500, b"Internal Server Error")
    http_server.content_type = "text/plain"
    raised = _artifact_failure(http_server.url, action, tmp_path, monkeypatch)  # type: ignore[attr-defined]
    found = classify(raised)
    assert isinstance(found, StoreError) and found.exit_code == 7, repr(raised)
    text = str(found)
    assert text.startswith("The MLflow server failed to move an artifact to or from its object ")
    assert "(HTTP 500 on /api/2.0/mlflow-artifacts/artifacts" in text
    assert "1/run/artifacts/model" in text  # the file, or the folder whose listing failed
    assert "HTTPConnectionPool" not in text and len(text) < 250


def test_an_artifact_transfer_cut_off_says_plainly_either_may_have_failed(
    tmp_path, monkeypatch
) -> None:
    """A reset on the artifact route cannot tell MLflow from its store: the sentence says
    so (exit 8), in one clause."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def reset_everything() -> None:
        import struct

        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=reset_everything, daemon=True)
    thread.start()
    try:
        raised = _artifact_failure(f"http://127.0.0.1:{port}", "upload", tmp_path, monkeypatch)
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone would not)
        listener.close()
        thread.join(timeout=10)
    found = classify(raised)
    assert isinstance(found, TrackingError) and found.exit_code == 8, repr(raised)
    # How the cut shows (reset, aborted mid-send) depends on when the client was writing.
    assert re.fullmatch(
        r"An artifact transfer through the MLflow server failed \(connection (reset|aborted) "
        r"on /api/2\.0/mlflow-artifacts/artifacts/1/run/artifacts/model/model\.bin\): the "
        r"MLflow server or the object store behind it failed; check both, then rerun\.",
        str(found),
    ), str(found)


def test_a_missing_model_is_still_not_a_setting() -> None:
    """MLflow's own "no such model" (JSON, RESOURCE_DOES_NOT_EXIST) stays what it was."""
    from mlflow.exceptions import RestException

    missing = RestException(
        {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model 'x' not found"}
    )
    assert not isinstance(classify(missing), ConfigError)
