"""The dashboard without a browser: the token check, the data it reads, its routes, and
an action posted straight to the Dash callback endpoint (refused without the token:
the check is on the server, not in the page). Named users, roles, the throttle and the
headers: test_security.py."""

from __future__ import annotations

import base64
from typing import Any

import pandas as pd
import pytest

from mlops.access import Principal, directory
from mlops.dashboard import actions, charts, data
from mlops.dashboard.app import create_app, metrics_rows
from mlops.dashboard.auth import NO_USERS, WRONG_CREDENTIALS, Credentials, Gate, Refused
from mlops.errors import ConfigError

from .helpers import action_result, audit_rows, post_action
from .seed import DAYS, MODELS, TOKEN, expected_drift_days


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
    assert (mape["naive"] == 0.0115).all()
    assert data.trigger_counts(figures.metrics) == {
        "trigger_mape": 0,
        "trigger_naive_ratio": 1,
        "trigger_drift": expected_drift_days(),
    }
    drift = data.drift(figures.metrics)
    assert list(drift.columns) == ["metric_date", "drift_share", "drift_threshold"]
    assert len(drift) == len(DAYS) and (drift["drift_threshold"] == 0.35).all()
    live = data.live_figures(figures.metrics, 5)
    days = DAYS[-5:]
    expected = [MODELS["stock-close"][0][0] + 0.001 * ((DAYS.index(d)) % 3) for d in days]
    assert live[("stock-close", "1")]["live_mape"] == pytest.approx(sum(expected) / 5)
    headline = charts.metric_over_time(figures.metrics, "wmape")
    assert [t.name for t in headline.data][-1] == "naive forecast"
    assert len(headline.data) == len(versions) + 1
    accounts = [label for label, _ in charts.equity_by_account(figures.equity)]
    assert accounts == ["alpaca PA1", "paper"]
    paper = data.load_figures(seeded.engine, broker="paper").equity
    assert set(paper["broker"]) == {"paper"} and len(paper) == len(DAYS)
    rows = metrics_rows(figures.metrics)
    assert rows[0]["metric_date"] == DAYS[0].isoformat() and "mape" in rows[0]


def test_the_daily_ic_is_a_quality_chart_and_no_monitored_day():
    from datetime import date

    rows = [
        (date(2017, 6, 1), "mape", 0.05),
        (date(2017, 6, 2), "ic", 0.2),  # a session no monitor run was dated
        (date(2017, 6, 5), "mape", 0.01),
        (date(2017, 6, 5), "ic", -0.1),
        (date(2017, 6, 5), "rank_ic", -0.2),
    ]
    metrics = pd.DataFrame(
        [(day, "stock-close", "1", metric, value) for day, metric, value in rows],
        columns=["metric_date", "model_name", "model_version", "metric", "value"],
    )
    metrics["metric_date"] = pd.to_datetime(metrics["metric_date"])
    # The live MAPE averages the last two monitored days, not the IC's sessions.
    live = data.live_figures(metrics, 2)
    assert live[("stock-close", "1")]["live_mape"] == pytest.approx(0.03)
    chart = charts.metric_over_time(metrics, "ic")
    assert chart.layout.title.text.startswith("daily IC over time")
    (line,) = chart.data  # one version, no naive forecast for an IC
    assert list(line.y) == [0.2, -0.1]
    bars = charts.champion_vs_challengers(metrics, "rank_ic", {("stock-close", "1"): "champion"}, 5)
    assert "mean daily Rank IC" in bars.layout.title.text
    assert list(bars.data[0].y) == [pytest.approx(-0.2)]


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
    assert halted == actions.Outcome(True, "Trading is halted.")
    from mlops.trading.switch import status

    assert status(armed)["halted"] is True and "test" in status(armed)["reason"]
    assert actions.perform(armed, gate, actions.ActionRequest("unhalt"), key).sentence == (
        "Trading resumed."
    )


def test_routes(seeded, tmp_path):
    client = create_app(seeded).server.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    equity = client.get("/api/equity", query_string={"broker": "alpaca"}).get_json()
    assert {r["broker"] for r in equity} == {"alpaca"} and len(equity) == len(DAYS)
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


def test_retrain_calls_the_orchestration_and_says_what_happened(seeded, monkeypatch):
    from mlops import orchestration

    calls = []

    def retrain_model(ctx, name, *, actor, reason=""):
        calls.append((ctx, name, actor))
        return orchestration.RetrainOutcome(
            model=name, runner="kubernetes", job=f"mlops-train-{name}-20170601", created=True
        )

    monkeypatch.setattr(orchestration, "retrain_model", retrain_model)
    armed = _armed(seeded)
    gate, key = Gate(armed.settings), actions.Caller(Credentials(password=TOKEN), "c")
    outcome = actions.perform(armed, gate, actions.ActionRequest("retrain", "stock-close-mlp"), key)
    assert outcome == actions.Outcome(
        True,
        "Retrain of stock-close-mlp: Created training Job mlops-train-stock-close-mlp-20170601 "
        "for stock-close-mlp.",
    )
    assert calls == [(armed, "stock-close-mlp", "dashboard:token")]

    def broken(ctx, name, *, actor, reason=""):
        raise RuntimeError("boom")

    monkeypatch.setattr(orchestration, "retrain_model", broken)
    request = actions.ActionRequest("retrain", "stock-close-mlp")
    failed = actions.perform(armed, gate, request, key)
    assert not failed.ok and "failed unexpectedly (RuntimeError)" in failed.sentence
    # Without users or a token the orchestration is never called.
    refused = actions.perform(seeded, Gate(seeded.settings), request, key)
    assert not refused.ok and len(calls) == 1
