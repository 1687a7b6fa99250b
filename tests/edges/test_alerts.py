"""Alerts (``ALERT_WEBHOOK_URL``): a Slack-compatible POST that never fails the stage.

A local receiver takes them, answers 500, or hangs; the secret path of the URL never
reaches the output. Every alert sent or attempted is a row of ``alerts`` (the dashboard
lists them: tests/dashboard/test_server.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import run_in_process
from mlops import alerts
from mlops.db.schema import alerts as alert_rows
from mlops.runs import alert_failure
from trading.helpers import make_ctx, rows

SECRET_PATH = "/services/T0000/B0000/XXsecretXXtoken"


class Receiver:
    """A webhook receiver on loopback: ``mode`` is ok (200), 500, or hang (no answer
    until the test ends)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.posts: list[dict] = []
        self.paths: list[str] = []
        self.release = threading.Event()
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    receiver.posts.append(json.loads(body))
                    receiver.paths.append(self.path)
                    receiver.arrived.notify_all()
                if receiver.mode == "hang":
                    receiver.release.wait(30)
                    return
                status = 500 if receiver.mode == "500" else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    def wait_for_posts(self, count: int) -> int:
        """How many POSTs arrived, once ``count`` did (a hung request may still be read
        after its client gave up) or 10 s passed."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.posts) >= count, timeout=10)
            return len(self.posts)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request) -> Iterator[Receiver]:
    with Receiver(request.param) as server:
        yield server


@pytest.fixture(autouse=True)
def short_waits(monkeypatch) -> None:
    monkeypatch.setattr(alerts, "FIRST_WAIT_SECONDS", 0.01)


def alert_env(subprocess_env, tmp_path, receiver: Receiver) -> dict[str, str]:
    # Only the receiver that never answers meets the timeout; the others answer at once,
    # within a time no loaded machine reaches.
    return subprocess_env(
        MLOPS_HOME=str(tmp_path),
        ALERT_WEBHOOK_URL=receiver.url,
        ALERT_TIMEOUT_SECONDS="0.3" if receiver.mode == "hang" else "20",
        ALERT_MAX_ATTEMPTS="2",
    )


@pytest.mark.parametrize("receiver", ["ok"], indirect=True)
def test_a_failed_stage_and_a_halt_reach_the_webhook(
    make_settings, tmp_path, subprocess_env, receiver
):
    ctx = make_ctx(make_settings, tmp_path)  # a migrated database, no dataset
    env = alert_env(subprocess_env, tmp_path, receiver)
    failed = run_in_process(env, "trade", "--as-of", "2017-06-01")
    assert failed.returncode == 3
    halted = run_in_process(env, "trading", "halt", "--reason", "earnings")
    assert halted.returncode == 0
    texts = [p["text"] for p in receiver.posts]
    assert texts[0].startswith(
        "[mlops] mlops trade failed: mlops trade for 2017-06-01 ended with exit 3: "
        "No dataset has been published for 2017-06-01"
    )
    assert texts[1].startswith("[mlops] trading halted: Trading is halted: 0 open orders")
    assert texts[1].endswith(": earnings)") and "(by cli:" in texts[1]
    assert receiver.paths == [SECRET_PATH, SECRET_PATH] and len(texts) == 2
    recorded = [(r["kind"], r["delivered"], r["detail"]) for r in rows(ctx, alert_rows)]
    assert recorded == [("mlops trade failed", True, None), ("trading halted", True, None)]
    assert [f"[mlops] {r['kind']}: {r['text']}" for r in rows(ctx, alert_rows)] == texts


@pytest.mark.parametrize("receiver", ["500", "hang"], indirect=True)
def test_a_receiver_that_fails_or_hangs_does_not_fail_the_stage(
    make_settings, tmp_path, subprocess_env, receiver
):
    ctx = make_ctx(make_settings, tmp_path)
    env = alert_env(subprocess_env, tmp_path, receiver)
    failed = run_in_process(env, "trade", "--as-of", "2017-06-01")
    assert failed.returncode == 3  # the stage's own exit code, not the alert's
    assert failed.stderr.strip().splitlines()[-1].startswith("error: No dataset has been published")
    halted = run_in_process(env, "trading", "halt")
    assert halted.returncode == 0 and json.loads(halted.stdout)["halted"] is True
    assert receiver.wait_for_posts(4) == 4  # two alerts, each tried twice (ALERT_MAX_ATTEMPTS)
    port = receiver.server.server_address[1]
    why = "HTTP 500" if receiver.mode == "500" else "no answer within ALERT_TIMEOUT_SECONDS=0.3 s"
    for done in (failed, halted):
        warning = next(line for line in done.stderr.splitlines() if "not delivered" in line)
        assert f"not delivered to http://127.0.0.1:{port}/[redacted] ({why}" in warning
    output = failed.stdout + failed.stderr + halted.stdout + halted.stderr
    assert "XXsecretXXtoken" not in output
    # Recorded all the same: not delivered, and why (redacted like the log).
    recorded = [(r["kind"], r["delivered"], r["detail"]) for r in rows(ctx, alert_rows)]
    assert recorded == [("mlops trade failed", False, why), ("trading halted", False, why)]
    assert "XXsecretXXtoken" not in str(rows(ctx, alert_rows))


@pytest.mark.parametrize("receiver", ["ok"], indirect=True)
def test_orders_not_placed_is_its_own_alert_and_a_database_down_is_a_warning(
    make_settings, tmp_path, receiver, caplog
):
    from mlops.trading.broker import OrdersNotPlacedError

    ctx = make_ctx(make_settings, tmp_path, ALERT_WEBHOOK_URL=receiver.url)
    why = OrdersNotPlacedError("1 of 1 orders decided for 2017-06-01 on alpaca were not placed")
    alert_failure(ctx.settings, "trade", date(2017, 6, 1), why)
    assert receiver.posts[-1]["text"] == (
        "[mlops] orders not placed: mlops trade for 2017-06-01 ended with exit 12: 1 of 1 "
        "orders decided for 2017-06-01 on alpaca were not placed"
    )
    assert [(r["kind"], r["delivered"]) for r in rows(ctx, alert_rows)] == [
        ("orders not placed", True)
    ]
    # A database that cannot take the record: the alert is still delivered, and the
    # record's failure is one warning, not the caller's error.
    gone = make_settings(
        tmp_path / "gone", ALERT_WEBHOOK_URL=receiver.url, DATABASE_URL="sqlite:////proc/no/db"
    )
    with caplog.at_level("WARNING"):
        assert alerts.send(gone, "trading halted", "by cli:ops")
    assert "Alert 'trading halted' not recorded in the database" in caplog.text


def test_the_webhook_url_is_checked_and_never_shown(make_settings, tmp_path):
    from mlops.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, ALERT_WEBHOOK_URL="hooks.example.com" + SECRET_PATH)
    assert "ALERT_WEBHOOK_URL is invalid" in str(caught.value)
    assert "XXsecretXXtoken" not in str(caught.value)
    url = "https://user:pw@hooks.example.com" + SECRET_PATH + "?token=abc"
    assert alerts.where(url) == "https://hooks.example.com/[redacted]"
    said = alerts.redact(f"Max retries exceeded with url: {SECRET_PATH}?token=abc", url)
    assert "XXsecretXXtoken" not in said and "abc" not in said
    assert not alerts.send(make_settings(tmp_path), "nothing", "no webhook set")
