"""The dashboard without a browser: the token check, the data it reads, its routes, and
an action posted straight to the Dash callback endpoint (refused without the token:
the check is on the server, not in the page). Named users, roles, the throttle and the
headers: test_security.py."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

import pandas as pd
import pytest

from mlops import access
from mlops.access import Principal, directory
from mlops.contracts import live_figures
from mlops.dashboard import actions, charts, data
from mlops.dashboard.app import create_app, metrics_rows
from mlops.dashboard.auth import NO_USERS, WRONG_CREDENTIALS, Credentials, Gate, Refused
from mlops.dashboard.registry import read_registry
from mlops.errors import ConfigError

from .helpers import action_result, audit_rows, post_action, render_page
from .seed import DAYS, MODELS, TOKEN, WINDOW, day_mape, expected_drift_days, window_mape


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_token_signs_in_from_the_field_bearer_or_basic_auth(make_settings, tmp_path):
    gate = Gate(make_settings(tmp_path, DASHBOARD_TOKEN=TOKEN))
    for given in (
        Credentials(password=f" {TOKEN} "),
        Credentials(authorization=f"Bearer {TOKEN}"),
        Credentials(authorization=_basic("alice", TOKEN)),
    ):
        # Whatever name is typed, the token is one admin: the audit says "token".
        assert gate.sign_in(given, "c") == Principal("token", "admin")
    assert gate.sign_in(Credentials(), "c") is None
    for wrong in (
        Credentials(password="nope"),
        Credentials(password=TOKEN[:-1]),
        Credentials(authorization=_basic("alice", "nope")),
    ):
        with pytest.raises(Refused) as refused:
            gate.sign_in(wrong, f"client-{wrong}")
        assert str(refused.value) == WRONG_CREDENTIALS and refused.value.status == 401
    for nothing in (Credentials(authorization="Bearer "), Credentials(authorization="Basic !!")):
        assert gate.sign_in(nothing, "c") is None
    assert not Gate(make_settings(tmp_path)).enabled


def test_the_token_comes_from_the_setting(make_settings, tmp_path):
    assert directory(make_settings(tmp_path)).mode == "none"
    assert directory(make_settings(tmp_path, DASHBOARD_TOKEN="  ")).mode == "none"
    assert directory(make_settings(tmp_path, DASHBOARD_TOKEN=TOKEN)).token == TOKEN
    settings = make_settings(tmp_path, DASHBOARD_TOKEN=TOKEN)
    assert TOKEN not in repr(settings)  # a SecretStr: never in logs
    with pytest.raises(ConfigError, match="DASHBOARD_TOKEN is still the template"):
        directory(make_settings(tmp_path, DASHBOARD_TOKEN="changeme"))


def test_the_figures_of_every_model_version(seeded):
    figures = data.load_figures(seeded.engine)
    mape = data.quality(figures.metrics, "mape")
    versions = {(r.model_name, r.model_version) for r in mape.itertuples()}
    assert versions == {(name, v) for name in MODELS for v in ("1", "2")}
    assert len(mape) == len(versions) * len(DAYS)
    assert (mape["naive"] == 0.0115).all() and (mape["window_days"] == 1).all()
    assert data.trigger_counts(figures.metrics) == {
        "trigger_mape": 0,
        "trigger_naive_ratio": 1,
        "trigger_drift": expected_drift_days(),
    }
    drift = data.drift(figures.metrics)
    assert list(drift.columns) == ["metric_date", "drift_share", "drift_threshold"]
    assert len(drift) == len(DAYS) and (drift["drift_threshold"] == 0.35).all()
    headline = charts.metric_over_time(figures.metrics, "wmape")
    assert [t.name for t in headline.data][-1] == "naive forecast"
    assert len(headline.data) == len(versions) + 1
    accounts = [label for label, _ in charts.equity_by_account(figures.equity)]
    assert accounts == ["alpaca PA1", "paper", "strategy red, paper"]
    paper = data.load_figures(seeded.engine, broker="paper").equity
    assert set(paper["broker"]) == {"paper"} and len(paper) == 2 * len(DAYS)
    rows = metrics_rows(figures.metrics)
    assert rows[0]["metric_date"] == DAYS[0].isoformat() and "mape" in rows[0]
    assert {r["window_days"] for r in rows} == {1, WINDOW}


def test_a_day_point_is_that_days_figure_and_the_window_is_labelled(seeded):
    """The quality chart's points are each session's own MAPE; the window chart's the
    trailing window's, its length in the title; neither averages the other."""
    metrics = data.load_figures(seeded.engine).metrics
    last = len(DAYS) - 1
    day = charts.metric_over_time(metrics, "mape")
    window = charts.metric_over_time(metrics, "mape", window=True)
    assert day.layout.title.text.startswith("MAPE of each session")
    assert window.layout.title.text.startswith(f"MAPE over the trailing {WINDOW}-session window")
    points = {t.name: list(t.y) for t in day.data}
    trailing = {t.name: list(t.y) for t in window.data}
    for name in MODELS:
        label = f"{name}:1"
        assert points[label] == pytest.approx([day_mape(name, "1", n) for n in range(len(DAYS))])
        assert trailing[label][-1] == pytest.approx(window_mape(name, "1", last))
        assert points[label][-1] != pytest.approx(trailing[label][-1])
    assert day.layout.yaxis.tickformat == ".2%"
    # The daily IC has no window figure: its window chart says so.
    ic_window = charts.metric_over_time(metrics, "ic", window=True)
    assert "no window figure for daily IC" in ic_window.layout.title.text


def test_challengers_are_compared_on_the_rows_both_scored(seeded):
    live = live_figures.read(seeded.engine)
    roles = {
        (name, v): role for name in MODELS for v, role in (("1", "champion"), ("2", "challenger"))
    }
    bars = charts.champion_vs_challengers(live, roles)
    assert f"latest {WINDOW}-session window" in bars.layout.title.text
    mine, champion, naive = (list(trace.y) for trace in bars.data)
    labels = list(bars.data[0].x)
    last = len(DAYS) - 1
    for name in MODELS:
        at = labels.index(f"{name}:2 challenger (same {5 * len(DAYS)} rows)")
        assert mine[at] == pytest.approx(window_mape(name, "2", last))
        assert champion[at] == pytest.approx(window_mape(name, "1", last))
        assert naive[at] == pytest.approx(0.0115)
    assert "difference -0.200% to +0.100% (95 %)" in bars.layout.annotations[0].text


def test_the_cli_the_api_and_the_page_show_the_same_live_figures(seeded):
    from conftest import run_in_process

    env = {"MLOPS_HOME": str(seeded.settings.mlops_home), "LOG_LEVEL": "WARNING"}
    out = seeded.settings.mlops_home / "models.json"
    listed = run_in_process(env, "models", "list", "--output", str(out))
    assert listed.returncode == 0, listed.stderr
    cli = {(r["name"], r["version"]): r["live"] for r in json.loads(out.read_text())}
    answer = create_app(seeded).server.test_client().get("/api/models")
    assert answer.status_code == 200
    api = {(r["name"], r["version"]): r["live"] for r in answer.get_json()}
    assert api == cli
    registry = read_registry(seeded.mlflow, live_figures.read(seeded.engine))
    page = {(r["model"], r["version"]): r for r in registry.rows}
    last = len(DAYS) - 1
    for name in MODELS:
        for version in ("1", "2"):
            shown, listed_live = page[(name, version)], cli[(name, version)]
            assert shown["live_day_mape"] == listed_live["session"]["mape"]
            assert shown["live_day_mape"] == pytest.approx(day_mape(name, version, last))
            assert shown["live_window_mape"] == listed_live["window"]["mape"]
            assert shown["live_window_mape"] == pytest.approx(window_mape(name, version, last))
            assert shown["live_window"] == f"{WINDOW} sessions to {DAYS[-1]}"
            assert shown["live_day"] == listed_live["session_date"] == DAYS[-1].isoformat()


def test_the_daily_ic_is_a_quality_chart_and_no_monitored_day():
    from datetime import date

    rows = [
        (date(2017, 6, 1), 20, "mape", 0.05),
        (date(2017, 6, 2), 1, "ic", 0.2),  # a session no monitor run was dated
        (date(2017, 6, 5), 20, "mape", 0.01),
        (date(2017, 6, 5), 1, "ic", -0.1),
        (date(2017, 6, 5), 1, "rank_ic", -0.2),
    ]
    metrics = pd.DataFrame(
        [(day, "stock-close", "1", window, metric, value) for day, window, metric, value in rows],
        columns=["metric_date", "model_name", "model_version", "window_days", "metric", "value"],
    )
    metrics["metric_date"] = pd.to_datetime(metrics["metric_date"])
    chart = charts.metric_over_time(metrics, "ic")
    assert chart.layout.title.text.startswith("daily IC of each session")
    (line,) = chart.data  # one version, no naive forecast for an IC
    assert list(line.y) == [0.2, -0.1]
    window = charts.metric_over_time(metrics, "mape", window=True)
    assert list(window.data[0].y) == [0.05, 0.01]


def test_an_action_refused_on_the_server_changes_nothing(seeded):
    """Posted to Dash's callback endpoint as a browser would, without the page."""
    client = create_app(seeded).server.test_client()
    name = "stock-close-pooled"
    pending = asdict_request("promote", name, "2", "posted")

    def post(password: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return action_result(post_action(client, pending, password=password, headers=headers))

    # The seeded context has no users and no token: every action is disabled.
    assert post(TOKEN)["children"] == NO_USERS
    client = create_app(_armed(seeded)).server.test_client()
    refused = post("wrong")
    assert (refused["children"], refused["className"]) == (WRONG_CREDENTIALS, "refused")
    assert str(seeded.mlflow.get_model_version_by_alias(name, "champion").version) == "1"
    assert audit_rows(seeded.engine, model_name=name, outcome="done") == []
    refusals = audit_rows(seeded.engine, model_name=name, outcome="refused")
    assert [r["reason"] for r in refusals] == [NO_USERS, WRONG_CREDENTIALS]
    # The bearer header is a token too; the action then runs (and is audited).
    done = post("", {"Authorization": f"Bearer {TOKEN}"})
    assert done["className"] == "done", done
    assert str(seeded.mlflow.get_model_version_by_alias(name, "champion").version) == "2"
    (row,) = audit_rows(seeded.engine, model_name=name, outcome="done")
    assert (row["action"], row["model_name"], row["reason"]) == ("promote", name, "posted")
    assert row["actor"] == "dashboard:token"


def test_refusals_of_the_actions_are_their_sentences(seeded):
    armed = _armed(seeded)
    gate, key = Gate(armed.settings), actions.Caller(Credentials(password=TOKEN), "c")
    cases = {
        actions.ActionRequest("promote", "stock-close", "", "r"): "Give the version to promote.",
        actions.ActionRequest("pause", "", "", ""): "Choose a model to pause.",
        actions.ActionRequest("archive", "stock-close-mlp", "1", "r"): "is the champion",
        actions.ActionRequest("promote", "stock-close", "3", "r"): "loses to the naive",
        actions.ActionRequest("promote", "nope", "1", "r"): "No registered model named 'nope'",
    }
    for request, sentence in cases.items():
        outcome = actions.perform(armed, gate, request, key)
        assert not outcome.ok and sentence in outcome.sentence, outcome
        # Each refusal is audited once, with its sentence (model_admin's own or the form's).
        (row,) = audit_rows(
            seeded.engine, model_name=request.model, action=request.action, outcome="refused",
            reason=outcome.sentence, model_version=request.version or None,
        )  # fmt: skip
        assert row["actor"] == "dashboard:token"
    halted = actions.perform(armed, gate, actions.ActionRequest("halt", reason="test"), key)
    # The dashboard holds no broker credentials: the next trade run cancels the orders.
    assert halted.ok and halted.sentence.startswith(
        "Trading is halted; this system's open orders at the broker are canceled by the next"
    )
    from mlops.trading.switch import status

    state = status(armed)
    assert state["halted"] is True and state["reason"] == "test"
    assert state["by"] == "dashboard:token"
    resumed = actions.perform(armed, gate, actions.ActionRequest("unhalt"), key).sentence
    assert resumed.startswith("Trading resumed: the halt of ") and "(test) is lifted" in resumed
    # One strategy: the dialog says whose; an unknown one is refused, nothing written.
    one = actions.ActionRequest("halt", reason="one", strategy="default")
    assert actions.question(one, "champion").startswith("Halt trading of strategy default")
    assert actions.question(actions.ActionRequest("halt"), "champion").startswith(
        "Halt trading of every strategy"
    )
    assert actions.perform(armed, gate, one, key).ok
    assert status(armed, "default")["halted"] is True
    from sqlalchemy import select

    from mlops.db.schema import trading_halts

    with armed.engine.connect() as conn:
        whose = conn.execute(select(trading_halts.c.strategy).order_by(trading_halts.c.id))
        assert whose.scalars().all()[-1] == "default"
    unknown = actions.ActionRequest("halt", strategy="nope")
    refused = actions.perform(armed, gate, unknown, key)
    assert not refused.ok and "nope" in refused.sentence, refused
    back = actions.ActionRequest("unhalt", strategy="default")
    assert actions.perform(armed, gate, back, key).ok
    assert status(armed, "default")["halted"] is False


def test_routes(seeded, tmp_path):
    client = create_app(seeded).server.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    equity = client.get("/api/equity", query_string={"broker": "alpaca"}).get_json()
    assert {r["broker"] for r in equity} == {"alpaca"} and len(equity) == len(DAYS)
    # One strategy's, or one account's curve alone (two strategies share the paper account).
    for where, book in (({"strategy": "red"}, ("red", "paper")), ({"account": "PA1"}, None)):
        found = client.get("/api/equity", query_string=where).get_json()
        assert len(found) == len(DAYS), where
        if book is not None:
            assert {(r["strategy"], r["account"]) for r in found} == {book}
        else:
            assert {r["account"] for r in found} == {"PA1"}
    board = client.get("/api/leaderboard").get_json()
    # Each book gains 0.1 % a session, buy-and-hold 0.2 %: equal returns, ranked by name.
    assert [(r["rank"], r["strategy"], r["account"]) for r in board] == [
        (1, "default", "PA1"),
        (2, "default", "paper"),
        (3, "red", "paper"),
    ]
    assert board[0]["total_return"] == pytest.approx(0.001 * (len(DAYS) - 1))
    assert board[0]["excess_return"] == pytest.approx(-0.001 * (len(DAYS) - 1))
    metrics = client.get("/api/metrics").get_json()
    assert metrics[-1]["metric_date"] == DAYS[-1].isoformat()
    seeded.store.put_bytes("reports/monitoring/2017-06-01/drift.html", b"<!doctype html>x")
    assert client.get("/reports/2017-06-01/drift.html").data == b"<!doctype html>x"
    # The path is normalised to /mlops.db, which is the page (Dash's catch-all), not the file.
    assert b"SQLite format" not in client.get("/reports/2017-06-01/../../mlops.db").data
    assert client.get("/reports/2017-06-01/secret.txt").status_code == 404
    assert client.get("/reports/1999-01-01/drift.html").status_code == 404
    assert client.get("/backtests/nope/chart").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "MLOps control plane" in page.text


def asdict_request(action: str, model: str, version: str, reason: str) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(actions.ActionRequest(action, model, version, reason))


def _armed(ctx: Any) -> Any:
    """The same context with DASHBOARD_TOKEN set."""
    from dataclasses import replace

    from pydantic import SecretStr

    settings = ctx.settings.model_copy(update={"dashboard_token": SecretStr(TOKEN)})
    return replace(ctx, settings=settings)


def test_the_command_refuses_a_placeholder_token(tmp_path, subprocess_env):
    import subprocess
    import sys

    env = subprocess_env(MLOPS_HOME=str(tmp_path), DASHBOARD_TOKEN="changeme")
    migrate = [sys.executable, "-m", "mlops.cli", "migrate"]
    subprocess.run(migrate, env=env, check=True, capture_output=True)
    done = subprocess.run(
        [sys.executable, "-m", "mlops.cli", "dashboard", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "DASHBOARD_TOKEN is still the template's placeholder value" in done.stderr


# Named users and roles, the throttle, the headers, what a page may show.

USERS = {
    "ada": ("admin", "ada-password-1"),
    "otto": ("operator", "otto-password-1"),
    "vera": ("viewer", "vera-password-1"),
}


def _with_users(ctx: Any, **update: Any) -> Any:
    """The same context with USERS in DASHBOARD_USERS (cheap pbkdf2 hashes: a test need
    not pay for scrypt) and the other settings given."""
    from dataclasses import replace

    from pydantic import SecretStr
    from werkzeug.security import generate_password_hash

    entries = "\n".join(
        f"{name}:{role}:{generate_password_hash(password, 'pbkdf2:sha256:1000')}"
        for name, (role, password) in USERS.items()
    )
    settings = ctx.settings.model_copy(update={"dashboard_users": SecretStr(entries), **update})
    return replace(ctx, settings=settings)


def _as(name: str, password: str | None = None) -> dict[str, str]:
    return {"Authorization": _basic(name, password or USERS[name][1])}


def test_a_viewer_cannot_act_and_the_audit_names_the_signed_in_user(seeded):
    client = create_app(_with_users(seeded)).server.test_client()
    name, champion = "stock-close", seeded.mlflow.get_model_version_by_alias
    promote = {"action": "promote", "model": name, "version": "2", "reason": "beats v1"}
    # A viewer: 403 from the API, the sentence on the page, nothing changed.
    answer = client.post("/api/actions", json=promote, headers=_as("vera"))
    assert answer.status_code == 403, answer.text
    assert answer.get_json()["sentence"] == (
        "Refused: vera is a viewer; promote needs the role operator or admin; nothing was changed."
    )
    page = action_result(post_action(client, promote, user="vera", password=USERS["vera"][1]))
    assert page["className"] == "refused" and "vera is a viewer" in page["children"]
    # An operator may not archive (admins only); nobody signed in may not act at all.
    archive = {"action": "archive", "model": name, "version": "3", "reason": "old"}
    assert client.post("/api/actions", json=archive, headers=_as("otto")).status_code == 403
    assert client.post("/api/actions", json=promote).status_code == 401
    assert str(champion(name, "champion").version) == "1"
    # The operator promotes from the page; the audit names them, not a typed name.
    done = action_result(post_action(client, promote, user="otto", password=USERS["otto"][1]))
    assert done["className"] == "done", done
    assert str(champion(name, "champion").version) == "2"
    (row,) = audit_rows(seeded.engine, model_name=name, model_version="2", outcome="done")
    assert (row["action"], row["actor"], row["reason"]) == ("promote", "dashboard:otto", "beats v1")
    refused = audit_rows(seeded.engine, model_name=name, outcome="refused", reason=page["children"])
    assert [r["actor"] for r in refused] == ["dashboard:vera", "dashboard:vera"]
    (archived,) = audit_rows(seeded.engine, model_name=name, action="archive", outcome="refused")
    assert archived["actor"] == "dashboard:otto" and "otto is an operator" in archived["reason"]


def test_wrong_credentials_are_throttled_per_client_and_audited(seeded):
    now = [1000.0]
    users = _with_users(seeded, dashboard_max_failures=3, dashboard_failure_window_seconds=60.0)
    client = create_app(users, Gate(users.settings, clock=lambda: now[0])).server.test_client()
    attacker, other = {"REMOTE_ADDR": "192.0.2.7"}, {"REMOTE_ADDR": "192.0.2.8"}
    halt, unhalt = {"action": "halt", "reason": "guessing"}, {"action": "unhalt"}

    def api(body: dict[str, Any], headers: dict[str, str], environ: dict[str, str]) -> Any:
        return client.post("/api/actions", json=body, headers=headers, environ_base=environ)

    for n in range(3):
        assert api(halt, _as("ada", f"guess-{n}"), attacker).status_code == 401
    # The fourth attempt is not even checked: the right password is refused too.
    throttled = api(halt, _as("ada"), attacker)
    assert throttled.status_code == 429 and 0 < int(throttled.headers["Retry-After"]) <= 61
    assert throttled.get_json()["sentence"].startswith("Refused: too many wrong sign-ins")
    page = post_action(client, halt, user="ada", password="x", client_address="192.0.2.7")
    assert page.status_code == 429  # the page's callback too
    from mlops.trading.switch import status

    assert status(users)["halted"] is False
    # Another address is not throttled.
    assert api(unhalt, _as("ada"), other).status_code == 200
    # Audited: each wrong password (who was claimed, from where), then the throttle once.
    # (Anonymous: a signed-in caller's refused halt elsewhere in this module is not one.)
    rows = audit_rows(seeded.engine, action="halt", outcome="refused", actor="dashboard:anonymous")
    assert [r["reason"] for r in rows] == [WRONG_CREDENTIALS] * 3 + [
        throttled.get_json()["sentence"]
    ]
    details = [json.loads(r["details"]) for r in rows]
    assert details[0] == {"client": "192.0.2.7", "claimed_user": "ada"}
    # Once the window has passed, the right password works again.
    now[0] += 61
    assert api(unhalt, _as("ada"), attacker).status_code == 200


def test_every_answer_refuses_to_be_framed(seeded):
    client = create_app(seeded).server.test_client()
    answers = [
        client.get("/"),
        client.get("/healthz"),
        client.get("/api/metrics"),
        client.get("/_dash-layout"),
        client.get("/backtests/nope/chart"),
        client.post("/api/actions", json={"action": "halt"}),
        post_action(client, {"action": "halt"}),
    ]
    for answer in answers:
        assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none'", answer
        assert answer.headers["X-Frame-Options"] == "DENY", answer


def test_another_sites_post_is_refused(seeded):
    users = _with_users(seeded)
    client = create_app(users).server.test_client()
    body = {"action": "unhalt"}
    evil = {**_as("ada"), "Origin": "https://evil.example", "Host": "localhost"}
    answer = client.post("/api/actions", json=body, headers=evil)
    assert answer.status_code == 403 and "another site" in answer.get_json()["sentence"]
    own = {**_as("ada"), "Origin": "http://localhost", "Host": "localhost"}
    assert client.post("/api/actions", json=body, headers=own).status_code == 200


def test_a_credentialed_uri_never_appears_in_a_page_and_errors_only_for_operators(seeded):
    from datetime import UTC, datetime

    from mlops.dashboard.app import HIDDEN_ERROR
    from mlops.db.schema import model_actions, stage_runs

    leaked = "http://mlops:hunter2-secret@mlflow:5000"
    with seeded.engine.begin() as conn:
        conn.execute(
            stage_runs.insert().values(
                run_id="leaky-run",
                stage="monitor",
                started_at=datetime(2099, 1, 1, tzinfo=UTC),  # the newest: on the page
                status="failed",
                error=f"The MLflow tracking server at {leaked} is not answering.",
            )
        )
        conn.execute(  # an audit reason quoting a URI: shown to all, its password to none
            model_actions.insert().values(
                created_at=datetime(2099, 1, 1, tzinfo=UTC),
                actor="cli:someone",
                action="pause",
                model_name="stock-close",
                reason="database postgresql://app:db-pass-9@db/mlops was slow",
                outcome="done",
            )
        )
    users = _with_users(seeded)
    app = create_app(users)
    client = app.server.test_client()
    operator = render_page(app, client, user="otto", password=USERS["otto"][1])
    assert operator.status_code == 200, operator.text
    assert "Signed in as otto (operator)." in operator.text
    assert "://***@mlflow:5000 is not answering." in operator.text.replace("\\u002f", "/")
    viewer = render_page(app, client, headers=_as("vera"))
    assert "Signed in as vera (viewer)." in viewer.text
    anonymous = render_page(app, client)
    for answer in (viewer, anonymous):
        assert "tracking server at" not in answer.text and HIDDEN_ERROR in answer.text
    # Nothing the server answers holds the password: pages, JSON, plain routes.
    for answer in (operator, viewer, anonymous, client.get("/"), client.get("/api/metrics")):
        assert "hunter2-secret" not in answer.text and "db-pass-9" not in answer.text
    assert "://***@db/mlops was slow" in anonymous.text.replace("\\u002f", "/")
    wrong = render_page(app, client, user="otto", password="nope")
    assert "the user name or password is wrong" in wrong.text and HIDDEN_ERROR in wrong.text
    (row,) = audit_rows(seeded.engine, action="sign-in", outcome="refused")
    assert json.loads(row["details"])["claimed_user"] == "otto"


def test_the_users_setting_is_checked_at_start(make_settings, tmp_path):
    from mlops.access import MIN_TOKEN_LENGTH, parse_users

    with pytest.raises(ConfigError, match=f"needs at least {MIN_TOKEN_LENGTH}"):
        directory(make_settings(tmp_path, DASHBOARD_TOKEN="short-token"))
    with pytest.raises(ConfigError, match="Set one of DASHBOARD_USERS and DASHBOARD_TOKEN"):
        directory(make_settings(tmp_path, DASHBOARD_TOKEN=TOKEN, DASHBOARD_USERS="a:admin:x"))
    for text, sentence in (
        ("alice:boss:scrypt:1:2:3$s$h", "the role 'boss'"),
        ("alice:admin:plaintext", "holds no password hash for user alice"),
        ("alice-admin", "entry 1 is not name:role:hash"),
        ('{"alice": "admin"}', "not a JSON object"),
        ("changeme", "placeholder"),
    ):
        with pytest.raises(ConfigError, match=sentence):
            directory(make_settings(tmp_path, DASHBOARD_USERS=text))
    users = parse_users('{"a.b@c": {"role": "viewer", "hash": "scrypt:1:2:3$s$h"}}')
    assert users == {"a.b@c": ("viewer", "scrypt:1:2:3$s$h")}
    users_file = tmp_path / "users"
    users_file.write_text("# who\nada:admin:pbkdf2:sha256:1000$s$h\n")
    found = directory(make_settings(tmp_path, DASHBOARD_USERS_FILE=str(users_file)))
    assert found.mode == "users" and set(found.users) == {"ada"}
    assert set(actions.ACTIONS) == access.ALL_ACTIONS  # every button has its roles


def test_redaction_of_credentials_in_uris():
    from mlops.errors import TrackingError
    from mlops.web_safety import redact_credentials

    assert redact_credentials("at http://u:p@h:5000/x and postgresql+psycopg2://a:b@db/m.") == (
        "at http://***@h:5000/x and postgresql+psycopg2://***@db/m."
    )
    assert redact_credentials("http://host:5000/a@b and mailto:x@y") == (
        "http://host:5000/a@b and mailto:x@y"
    )
    assert "s3cret" not in str(TrackingError("MLflow at https://me:s3cret@mlflow is down."))


def test_viewing_can_require_a_sign_in(seeded):
    client = create_app(_with_users(seeded, dashboard_anonymous_view=False)).server.test_client()
    assert client.get("/healthz").status_code == 200  # the probes stay open
    asked = client.get("/")
    assert asked.status_code == 401 and asked.headers["WWW-Authenticate"].startswith("Basic ")
    assert asked.headers["X-Frame-Options"] == "DENY"
    assert client.get("/api/metrics", headers=_as("vera", "nope")).status_code == 401
    assert client.get("/api/metrics", headers=_as("vera")).status_code == 200
    page = client.get("/", headers=_as("vera"))
    assert page.status_code == 200 and "MLOps control plane" in page.text
    (row,) = audit_rows(seeded.engine, action="view", outcome="refused")
    assert json.loads(row["details"])["claimed_user"] == "vera"


def _table_rows(answer: Any, element: str) -> list[list[str]]:
    """The cells of the table a section of a :func:`render_page` answer holds."""
    tree = json.loads(answer.text)["response"][element]["children"]
    _, body = tree["props"]["children"]
    return [
        [td["props"]["children"] for td in tr["props"]["children"]]
        for tr in body["props"]["children"]
    ]


def test_the_last_twenty_alerts_are_listed_and_a_failures_text_only_for_operators(seeded):
    from datetime import UTC, datetime, timedelta

    from mlops import alerts
    from mlops.dashboard import app as dashboard
    from mlops.db.schema import alerts as alert_rows

    start = datetime.now(UTC) - timedelta(minutes=1)
    halts = [
        {
            "created_at": start + timedelta(seconds=n),
            "kind": "trading halted",
            "text": f"halt {n} (by cli:ops)",
            "delivered": True,
        }
        for n in range(21)
    ]
    with seeded.engine.begin() as conn:
        conn.execute(alert_rows.insert(), halts)
    failure = (
        "mlops monitor for 2017-06-02 ended with exit 8: The MLflow tracking server at "
        "http://u:pw-77@mlflow:5000 is not answering"
    )
    assert alerts.record(seeded.settings, "mlops monitor failed", failure, False, "HTTP 500")
    app = create_app(_with_users(seeded))
    page = render_page(app, app.server.test_client(), user="otto", password=USERS["otto"][1])
    shown = _table_rows(page, "alerts")
    assert len(shown) == 20  # the newest 20 of 22, newest first
    assert shown[0][1:] == [
        "mlops monitor failed",
        "no",
        failure.replace("u:pw-77@", "***@"),
        "HTTP 500",
    ]
    assert [row[1:] for row in shown[1:]] == [
        ["trading halted", "yes", f"halt {n} (by cli:ops)", ""] for n in range(20, 1, -1)
    ]
    # Anonymous: a failure's text (an error sentence) and why it was not delivered hidden.
    anonymous = dashboard._alerts(data.latest_alerts(seeded.engine), None)
    first = [td.children for td in anonymous.children[1].children[0].children]
    hidden = dashboard.HIDDEN_ERROR
    assert first[1:] == ["mlops monitor failed", "no", hidden, hidden]


# The per-symbol and per-feature views; creating and deleting a model from the page.


def test_the_per_symbol_and_per_feature_views_show_what_monitoring_wrote(seeded):
    from mlops.contracts.models import champion
    from mlops.dashboard.app import render_sections, section

    from .seed import FEATURES, SYMBOLS, drift_p, symbol_mape

    client = create_app(seeded).server.test_client()
    last = len(DAYS) - 1
    # Other tests of this module move champions: the current ones are expected.
    now = {name: champion(seeded.mlflow, name, "champion").version for name in MODELS}
    answer = client.get("/api/models/stock-close-pooled/symbols").get_json()
    assert (answer["model_version"], answer["window_days"]) == (now["stock-close-pooled"], WINDOW)
    assert answer["label"] == f"{WINDOW}-session window to {DAYS[-1]}"
    for n, symbol in enumerate(SYMBOLS):  # the latest window's, as monitoring wrote them
        figures = answer["symbols"][symbol]
        expected = symbol_mape("stock-close-pooled", now["stock-close-pooled"], symbol, last)
        assert figures["mape"] == pytest.approx(expected)
        assert figures["directional_accuracy"] == pytest.approx(0.5 + 0.05 * n)
    other = "2" if now["stock-close-pooled"] == "1" else "1"
    asked = client.get(f"/api/models/stock-close-pooled/symbols?version={other}").get_json()
    assert asked["symbols"]["AAA"]["mape"] == pytest.approx(
        symbol_mape("stock-close-pooled", other, "AAA", last)
    )
    assert client.get("/api/models/nope/symbols").status_code == 404
    sections = render_sections(seeded, "mape")
    trading = now["stock-close"]
    bars = section(sections, "symbols-chart")
    assert f"stock-close:{trading} (champion) over the {WINDOW}-session window" in (
        bars.layout.title.text
    )
    assert list(bars.data[0].x) == list(SYMBOLS) and bars.layout.yaxis.tickformat == ".2%"
    assert list(bars.data[0].y) == pytest.approx(
        [symbol_mape("stock-close", trading, s, last) for s in SYMBOLS]
    )
    shown = str(section(sections, "symbols-table"))
    assert f"{symbol_mape('stock-close-mlp', now['stock-close-mlp'], 'CCC', last):.6g}" in shown
    assert f"{WINDOW} sessions to {DAYS[-1]}" in shown

    rows = client.get("/api/drift/features").get_json()
    assert len(rows) == len(DAYS) * len(FEATURES)
    for row in rows:
        n = DAYS.index(date.fromisoformat(row["metric_date"]))
        assert row["p_value"] == pytest.approx(drift_p(row["feature"], n))
        assert (row["model_name"], row["window_days"]) == ("stock-close", WINDOW)
    lines = section(sections, "feature-drift-chart")
    assert [t.name for t in lines.data] == sorted(FEATURES)
    first = [drift_p("range_pct", n) for n in range(last + 1)]
    assert list(lines.data[0].y) == pytest.approx(first)
    assert lines.layout.yaxis.type == "log" and "drifted" in lines.layout.title.text


def test_a_model_is_created_and_deleted_from_the_page_by_the_roles_that_may(seeded):
    from mlops.contracts.catalog import packaged_dir
    from mlops.contracts.keys import stored_config_key

    users = _with_users(seeded)
    client = create_app(users).server.test_client()
    name, key = "dash-made", stored_config_key("dash-made")
    config = (packaged_dir() / "stock-close-mlp.yaml").read_text()
    create = {"action": "create", "model": name, "config": config, "reason": "to try"}
    asked = actions.question(actions.ActionRequest("delete", name), "champion")
    assert asked == (
        f"Delete the whole model {name} (every version); this cannot be undone (the audit "
        "keeps its rows)?"
    )
    assert client.post("/api/actions", json=create, headers=_as("vera")).status_code == 403
    evil = {**_as("otto"), "Origin": "https://evil.example", "Host": "localhost"}
    assert client.post("/api/actions", json=create, headers=evil).status_code == 403
    wrong = {**create, "config": config.replace("normalization: zscore", "normalization: log1p", 1)}
    refused = client.post("/api/actions", json=wrong, headers=_as("otto"))
    assert refused.status_code == 409 and "portable export" in refused.get_json()["sentence"]
    assert not seeded.store.exists(key)
    done = action_result(post_action(client, create, user="otto", password=USERS["otto"][1]))
    assert done["className"] == "done" and done["children"] == f"Done: create {name}: to try"
    assert seeded.store.get_bytes(key).decode() == config
    (row,) = audit_rows(seeded.engine, action="create", outcome="done")
    assert (row["model_name"], row["actor"]) == (name, "dashboard:otto")

    delete = {"action": "delete", "model": name, "reason": "tried"}
    answer = client.post("/api/actions", json=delete, headers=_as("otto"))
    assert answer.status_code == 403 and "delete needs the role admin" in answer.text
    answer = client.post("/api/actions", json={**delete, "version": "3"}, headers=_as("ada"))
    assert answer.status_code == 409 and "has no version 3" in answer.text
    answer = client.post("/api/actions", json=delete, headers=_as("ada"))
    assert answer.status_code == 200, answer.text
    assert not seeded.store.exists(key)
    refusals = audit_rows(seeded.engine, model_name=name, outcome="refused")
    assert [(r["action"], r["model_version"], r["actor"]) for r in refusals] == [
        ("create", None, "dashboard:vera"),
        ("create", None, "dashboard:anonymous"),
        ("create", None, "dashboard:otto"),
        ("delete", None, "dashboard:otto"),
        ("delete", "3", "dashboard:ada"),
    ]
    assert [r["action"] for r in audit_rows(seeded.engine, model_name=name, outcome="done")] == [
        "create",
        "delete",
    ]
