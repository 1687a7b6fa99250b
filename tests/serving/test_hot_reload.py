"""Hot reload: the champion moves while clients send requests; the registry goes away.

The first tests run the real ``mlops serve`` in a subprocess on 127.0.0.1 against the
trained model's registry; the last ones check the holder's rules with stand-ins for the
registry and the loader.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import mlflow_server_args
from inference.trained_model import Trained

POLL_SECONDS = "0.2"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the server exited ({process.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        process = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _serve(env: dict[str, str], port: int, log: Path):
    args = [sys.executable, "-m", "mlops.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return _process(args, env, log)


@dataclass
class ClientLoop:
    """Sends the same record to /predict in a loop, in a thread, and keeps every answer."""

    url: str
    record: dict
    answers: list[tuple[int, str | None, float | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(self.url, json=self.record)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.answers.append((response.status_code, None, None))
                    continue
                body = response.json()
                prediction = body["predictions"][0]["next_return_predictions"]
                self.answers.append((200, body["model_version"], prediction))

    def versions(self) -> set[str | None]:
        return {version for _, version, _ in self.answers}

    def __enter__(self) -> ClientLoop:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(20)


def _switches(answers: list) -> list[str]:
    """The versions in the order they answered, repeats collapsed."""
    order: list[str] = []
    for _, version, _ in answers:
        if not order or order[-1] != version:
            order.append(version)
    return order


@pytest.mark.slow
def test_champion_moves_while_clients_send_requests(
    trained: Trained, records, subprocess_env, tmp_path
) -> None:
    v1, v2 = trained.versions
    trained.set_champion(v1)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = subprocess_env(
        MLOPS_HOME=str(trained.home),
        SERVE_POLL_SECONDS=POLL_SECONDS,
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    try:
        with _serve(env, port, tmp_path / "serve.log") as server:
            _wait(lambda: httpx.get(f"{base}/readyz").status_code == 200, 120, "ready", server)
            with ClientLoop(f"{base}/predict", records[0]) as loop:
                _wait(lambda: len(loop.answers) > 200, 60, "answers from version 1", server)
                trained.set_champion(v2)
                _wait(lambda: v2 in loop.versions(), 60, "answers from version 2", server)
                count = len(loop.answers)
                _wait(lambda: len(loop.answers) > count + 200, 60, "more answers", server)
            ready = httpx.get(f"{base}/readyz").json()
            metrics = httpx.get(f"{base}/metrics").text
    finally:
        trained.set_champion(v1)
    assert loop.failures == []
    assert {status for status, _, _ in loop.answers} == {200}
    assert _switches(loop.answers) == [v1, v2]  # one switch, never back
    by_version = {v: {p for _, version, p in loop.answers if version == v} for v in (v1, v2)}
    assert len(by_version[v1]) == 1 and len(by_version[v2]) == 1  # each version is stable
    assert by_version[v1] != by_version[v2]  # and the answers did switch
    assert ready["model"]["version"] == v2
    assert [h["version"] for h in ready["reload"]["history"]] == [v1, v2]
    assert "mlops_serve_model_reloads_total 2.0" in metrics
    assert f'mlops_serve_predictions_total{{endpoint="/predict",model_version="{v2}"}}' in metrics


@pytest.mark.slow
def test_registry_outage_keeps_serving_and_recovers(
    trained: Trained, records, subprocess_env, tmp_path
) -> None:
    """A real MLflow tracking server in front of the registry hangs (SIGSTOP), then resumes."""
    v1, v2 = trained.versions
    trained.set_champion(v1)
    mlflow_port, port = _free_port(), _free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    base = f"http://127.0.0.1:{port}"
    # A real MLflow tracking server in front of the trained model's registry.
    mlflow_args = mlflow_server_args(f"sqlite:///{trained.home / 'mlflow.db'}", mlflow_port)
    mlflow_env = subprocess_env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env = subprocess_env(
        MLOPS_HOME=str(tmp_path / "serve-home"),
        MLFLOW_TRACKING_URI=mlflow_url,
        SERVE_POLL_SECONDS=POLL_SECONDS,
        # mlops sets MLflow's own MLFLOW_HTTP_REQUEST_* variables from these settings.
        MLFLOW_MAX_RETRIES="0",
        MLFLOW_TIMEOUT_SECONDS="1",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )

    def registry() -> dict:
        return httpx.get(f"{base}/readyz").json()["registry"]

    try:
        with (
            _process(mlflow_args, mlflow_env, tmp_path / "mlflow.log") as tracking,
            _serve(env, port, tmp_path / "serve.log") as server,
        ):
            _wait(lambda: httpx.get(f"{mlflow_url}/health").status_code == 200, 120, "mlflow")
            _wait(lambda: httpx.get(f"{base}/readyz").status_code == 200, 120, "ready", server)
            with ClientLoop(f"{base}/predict", records[0]) as loop:
                os.killpg(tracking.pid, signal.SIGSTOP)  # the registry hangs
                try:
                    _wait(lambda: registry()["reachable"] is False, 60, "outage seen", server)
                    down = registry()
                    assert down["last_error"]
                    assert down["consecutive_failures"] >= 1
                    # Still ready: the loaded model serves.
                    assert httpx.get(f"{base}/readyz").status_code == 200
                    assert "mlops_serve_registry_up 0.0" in httpx.get(f"{base}/metrics").text
                    trained.set_champion(v2)  # moved while the server cannot see it
                    count = len(loop.answers)
                    _wait(lambda: len(loop.answers) > count + 100, 60, "answers during outage")
                    assert loop.versions() == {v1}
                finally:
                    os.killpg(tracking.pid, signal.SIGCONT)  # it answers again
                _wait(lambda: registry()["reachable"] is True, 60, "recovery", server)
                _wait(lambda: v2 in loop.versions(), 60, "version 2 after recovery", server)
                assert "mlops_serve_registry_up 1.0" in httpx.get(f"{base}/metrics").text
    finally:
        trained.set_champion(v1)
    assert loop.failures == []
    assert {status for status, _, _ in loop.answers} == {200}
    assert _switches(loop.answers) == [v1, v2]


# The holder's rules, with stand-ins.


def _holder(trained: Trained, champion_holder, refs: dict, loads: list, fail: set):
    from mlops.serving.model_holder import LoadedModel, ModelHolder

    base = champion_holder.current

    def lookup():
        return refs.get("champion")

    def loader(ref):
        loads.append(ref.version)
        if ref.version in fail:
            raise RuntimeError(f"broken artifact for {ref.version}")
        return LoadedModel(ref, base.predictor, {}, base.loaded_at, 0.0)

    return ModelHolder(trained.settings(), lookup=lookup, loader=loader, poll_seconds=0.05)


def _ref(version: str):
    from mlops.contracts.models import ModelRef

    return ModelRef("stock-close", version, f"run-{version}", {})


@pytest.mark.slow
def test_holder_swaps_rolls_back_and_survives_bad_versions(trained, champion_holder) -> None:
    refs: dict = {"champion": _ref("1")}
    loads: list[str] = []
    fail = {"3"}
    holder = _holder(trained, champion_holder, refs, loads, fail)
    assert holder.poll_once() and holder.current.version == "1"
    assert not holder.poll_once()  # unchanged: nothing loaded again
    refs["champion"] = _ref("2")
    assert holder.poll_once() and holder.current.version == "2"
    refs["champion"] = _ref("1")
    assert holder.poll_once() and holder.current.version == "1"
    assert loads == ["1", "2"]  # the rollback reused the previous model
    refs["champion"] = _ref("3")  # cannot be loaded: keep serving 1
    assert not holder.poll_once() and holder.current.version == "1"
    assert holder.reload.failed_version == "3" and "broken artifact" in holder.reload.last_error
    assert holder.reload.failures_total == 1
    fail.clear()  # fixed (e.g. the artifact store is back): the next poll loads it
    assert holder.poll_once() and holder.current.version == "3"
    assert holder.reload.last_error is None
    refs["champion"] = None  # alias removed: keep serving what is loaded
    assert not holder.poll_once() and holder.current.version == "3"
    assert holder.registry.champion_version is None


@pytest.mark.slow
def test_holder_thread_polls_until_stopped(trained, champion_holder) -> None:
    refs: dict = {"champion": None}
    holder = _holder(trained, champion_holder, refs, [], set())
    holder.start()
    try:
        time.sleep(0.2)
        assert holder.current is None and holder.registry.reachable is True
        refs["champion"] = _ref("5")
        _wait(lambda: holder.current is not None, 10, "the poller to load version 5")
        assert holder.current.version == "5"
    finally:
        holder.stop()
    checks = holder.registry.checks_total
    time.sleep(0.2)
    assert holder.registry.checks_total == checks  # stopped


@pytest.mark.slow
def test_a_failed_version_is_forgotten_when_the_alias_moves_back(trained, champion_holder) -> None:
    from fastapi.testclient import TestClient

    from mlops.serving.app import create_app

    refs: dict = {"champion": _ref("1")}
    holder = _holder(trained, champion_holder, refs, [], {"3"})
    assert holder.poll_once()
    refs["champion"] = _ref("2")
    assert holder.poll_once()  # serving 2, with 1 kept for a rollback
    with TestClient(create_app(trained.settings(), holder)) as api:
        refs["champion"] = _ref("3")  # cannot be loaded: keep serving 2
        assert not holder.poll_once()
        failed = api.get("/readyz").json()["reload"]
        assert failed["failed_version"] == "3"
        assert failed["last_error"] == "version 3 cannot be loaded; the server log says why"
        refs["champion"] = _ref("2")  # back to the loaded version: no load, failure gone
        assert not holder.poll_once()
        ready = api.get("/readyz").json()
        assert ready["model"]["version"] == "2"
        assert ready["reload"]["failed_version"] is None
        assert ready["reload"]["last_error"] is None
        refs["champion"] = _ref("3")
        assert not holder.poll_once()
        refs["champion"] = _ref("1")  # to the kept previous version: rolled back, cleared
        assert holder.poll_once()
        ready = api.get("/readyz").json()
        assert ready["model"]["version"] == "1"
        assert (ready["reload"]["failed_version"], ready["reload"]["last_error"]) == (None, None)
        refs["champion"] = _ref("3")
        assert not holder.poll_once()
        refs["champion"] = None  # the alias removed: nothing fails to load any more
        assert not holder.poll_once()
        assert api.get("/readyz").json()["reload"]["failed_version"] is None
    assert holder.reload.failures_total == 3  # each failure was counted


@pytest.mark.slow
def test_reload_endpoint_and_a_stalled_body_on_the_real_server(
    trained: Trained, records, subprocess_env, tmp_path
) -> None:
    """With polling far off, POST /admin/reload makes a promotion answer at once, with no
    failed request; a sender that stalls mid-body gets 408 after SERVE_BODY_TIMEOUT_SECONDS."""
    import socket

    v1, v2 = trained.versions
    trained.set_champion(v1)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    admin = "reload-token-for-tests"
    env = subprocess_env(
        MLOPS_HOME=str(trained.home),
        SERVE_POLL_SECONDS="3600",
        SERVE_ADMIN_TOKEN=admin,
        SERVE_BODY_TIMEOUT_SECONDS="1",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    try:
        with _serve(env, port, tmp_path / "serve.log") as server:
            _wait(lambda: httpx.get(f"{base}/readyz").status_code == 200, 120, "ready", server)
            refused = httpx.post(f"{base}/admin/reload", headers={"Authorization": "Bearer x"})
            with ClientLoop(f"{base}/predict", records[0]) as loop:
                _wait(lambda: len(loop.answers) > 50, 60, "answers from version 1", server)
                trained.set_champion(v2)
                reloaded = httpx.post(
                    f"{base}/admin/reload",
                    headers={"Authorization": f"Bearer {admin}"},
                    timeout=60,
                )
                count = len(loop.answers)
                _wait(lambda: len(loop.answers) > count + 50, 60, "answers after it", server)
            after = loop.answers[count + 1 :]
            with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
                stalled.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2000\r\n\r\n[{"
                )
                received = b""
                while chunk := stalled.recv(4096):  # until the server closes it
                    received += chunk
                answer = received.decode()
    finally:
        trained.set_champion(v1)
    assert refused.status_code == 401
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["reloaded"] is True and reloaded.json()["model_version"] == v2
    # Answered before the reload call returned: v1; every request after it: v2.
    assert loop.failures == [] and {status for status, _, _ in loop.answers} == {200}
    assert {version for _, version, _ in after} == {v2}
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "did not arrive within 1 s" in answer
