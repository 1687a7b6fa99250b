"""The dashboard's "retrain now" and "run monitoring now" on one machine: the page answers
at once with a queued request, a background runner does the work and records how it
ended (status, exit code, one sentence), and a second request for open work is refused.

The runner's command is replaced by a tiny Python program where only the request path is
under test; one test starts the real detached ``mlops requests run ID``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import clean_environ, run_in_process
from mlops import action_requests
from mlops.access import Principal
from mlops.dashboard.app import HIDDEN_ERROR, create_app, requests_table

from .helpers import audit_rows
from .seed import TOKEN

BEARER = {"Authorization": f"Bearer {TOKEN}"}
# A stand-in for `mlops`: writes the arguments it got, then ends as told by EXIT.
TINY = (
    "import os, sys; print('args', sys.argv[1:]); code = int(os.environ.get('EXIT', '0'));"
    "code and print('error: The newest dataset is stale.', file=sys.stderr); sys.exit(code)"
)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A migrated embedded home whose settings come from the environment (as a background
    runner started from here reads them), with the dashboard's token."""
    from mlops.context import open_context
    from mlops.db import migrate
    from mlops.db.engine import make_engine
    from mlops.settings import load_settings

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    monkeypatch.setenv("TRAINING_RUNNER", "local")
    engine = make_engine(load_settings().db_url)
    migrate.upgrade(engine)
    engine.dispose()
    context = open_context(load_settings())
    yield context
    context.engine.dispose()


def _runs_tiny(monkeypatch: pytest.MonkeyPatch, seen: list[str]) -> None:
    """The dashboard's launcher runs the request here, with TINY for `mlops`, after noting
    the request's status when it was handed over."""

    def launch(engine: Any, home: Path, request: action_requests.Request) -> None:
        found = action_requests.get(engine, request.id)
        assert found is not None
        seen.append(found.status)
        action_requests.run_local(engine, home, request.id, [sys.executable, "-c", TINY])

    monkeypatch.setattr(action_requests, "launch", launch)


def _post(client: Any, **body: str) -> Any:
    return client.post("/api/actions", json=body, headers=BEARER)


def test_a_request_is_queued_at_once_then_run_and_its_end_recorded(ctx, monkeypatch) -> None:
    seen: list[str] = []
    _runs_tiny(monkeypatch, seen)
    client = create_app(ctx).server.test_client()
    answer = _post(client, action="retrain", model="stock-close-mlp", reason="new data")
    assert answer.status_code == 200, answer.text
    assert answer.get_json()["sentence"] == (
        "Queued request 1 to retrain stock-close-mlp: it runs in the background; see "
        "Requests below."
    )
    assert seen == ["queued"], "handed over as a queued row"
    done = action_requests.get(ctx.engine, 1)
    assert done is not None
    assert (done.status, done.exit_code, done.actor, done.runner) == (
        "succeeded",
        0,
        "dashboard:token",
        "local",
    )
    assert done.result == "`mlops train --model stock-close-mlp` succeeded."
    log = action_requests.log_path(ctx.settings.mlops_home, 1).read_text()
    assert "args ['train', '--model', 'stock-close-mlp']" in log, "the fixed command only"
    (audit,) = audit_rows(ctx.engine, action="retrain")
    assert (audit["model_name"], audit["actor"], audit["reason"]) == (
        "stock-close-mlp",
        "dashboard:token",
        "new data",
    )
    assert json.loads(audit["details"]) == {"request": 1, "runner": "local"}
    # A failing command: failed, with its exit code and its last `error:` sentence.
    monkeypatch.setenv("EXIT", "3")
    assert _post(client, action="monitor").status_code == 200
    failed = action_requests.get(ctx.engine, 2)
    assert failed is not None
    assert (failed.status, failed.exit_code, failed.result) == (
        "failed",
        3,
        "The newest dataset is stale.",
    )
    (audit,) = audit_rows(ctx.engine, action="monitor")
    assert (audit["model_name"], audit["outcome"]) == ("*", "done")
    # The page's section: every request's status; why one failed only for an operator.
    anonymous = str(requests_table(ctx))
    assert "succeeded" in anonymous and "failed" in anonymous
    assert HIDDEN_ERROR in anonymous and "stale" not in anonymous
    assert "The newest dataset is stale." in str(requests_table(ctx, Principal("o", "operator")))


def test_the_same_work_is_refused_while_a_request_for_it_is_open(ctx, monkeypatch) -> None:
    monkeypatch.setattr(action_requests, "launch", lambda *args: None)  # never starts
    client = create_app(ctx).server.test_client()
    assert _post(client, action="retrain", model="stock-close").status_code == 200
    again = _post(client, action="retrain", model="stock-close", reason="twice")
    assert again.status_code == 409
    sentence = again.get_json()["sentence"]
    assert sentence.startswith(
        "Refused: a request to retrain stock-close is already queued (request 1 by "
        "dashboard:token at "
    ) and sentence.endswith("UTC); nothing new was queued.")
    (refused,) = audit_rows(ctx.engine, outcome="refused")
    assert (refused["action"], refused["model_name"], refused["reason"]) == (
        "retrain",
        "stock-close",
        sentence,
    )
    # Other work is not held up; once the request ends, the same work may be asked again.
    assert _post(client, action="retrain", model="stock-close-mlp").status_code == 200
    assert _post(client, action="monitor").status_code == 200
    assert _post(client, action="monitor").status_code == 409
    action_requests.finish(ctx.engine, 1, action_requests.SUCCEEDED, 0, "done")
    assert _post(client, action="retrain", model="stock-close").status_code == 200
    # A runner whose process is gone without recording its end does not hold the work.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    action_requests.note_process(ctx.engine, 3, gone.pid)
    assert _post(client, action="monitor").status_code == 200
    reaped = action_requests.get(ctx.engine, 3)
    assert reaped is not None and reaped.status == "failed"
    assert reaped.result is not None and "ended without recording" in reaped.result
    # Nothing queued for a model the catalog lacks.
    unknown = _post(client, action="retrain", model="nope")
    assert unknown.status_code == 409 and "No model named 'nope'" in unknown.get_json()["sentence"]
    assert [r.id for r in action_requests.recent(ctx.engine)] == [5, 4, 3, 2, 1]


def test_the_background_runner_is_a_detached_mlops_process(ctx) -> None:
    """The real thing: `mlops requests run ID` started detached runs `mlops monitor`,
    which fails on an empty home (no dataset, exit 3): the row says so."""
    request = action_requests.submit(
        ctx.engine, "monitor", None, actor="dashboard:x", reason="now", runner="local"
    )
    process = action_requests.launch(ctx.engine, ctx.settings.mlops_home, request)
    assert process.wait(timeout=300) == 3
    done = action_requests.get(ctx.engine, request.id)
    assert done is not None and done.pid == process.pid
    assert (done.status, done.exit_code) == ("failed", 3)
    assert done.result == "No dataset has been published: run `mlops data-prep` first."
    env = clean_environ({"MLOPS_HOME": str(ctx.settings.mlops_home)})
    listed = run_in_process(env, "requests", "list")
    assert listed.returncode == 0, listed.stderr
    assert [(r["id"], r["status"], r["exit_code"]) for r in json.loads(listed.stdout)] == [
        (request.id, "failed", 3)
    ]
    again = run_in_process(env, "requests", "run", str(request.id))
    assert again.returncode == 3, "a rerun changes nothing and says how it ended"
    assert json.loads(again.stdout)["finished_at"] == str(done.finished_at)
