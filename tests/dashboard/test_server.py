"""The dashboard without a browser: the token check, the data it reads, its routes, and
an action posted straight to the Dash callback endpoint (refused without the token:
the check is on the server, not in the page)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from mlops.dashboard import actions, charts, data
from mlops.dashboard.app import create_app, metrics_rows
from mlops.dashboard.auth import (
    NO_TOKEN,
    WRONG_TOKEN,
    Credentials,
    Refused,
    authorize,
    configured_token,
)
from mlops.db.schema import model_actions
from mlops.errors import ConfigError

from .seed import DAYS, MODELS, TOKEN, expected_drift_days


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_authorize_accepts_the_token_from_the_field_bearer_or_basic_auth():
    assert authorize(TOKEN, Credentials(field_token=f" {TOKEN} ")) == ""
    assert authorize(TOKEN, Credentials(authorization=f"Bearer {TOKEN}")) == ""
    assert authorize(TOKEN, Credentials(authorization=_basic("alice", TOKEN))) == "alice"
    for wrong in (
        Credentials(),
        Credentials(field_token="nope"),
        Credentials(field_token=TOKEN[:-1]),
        Credentials(authorization="Bearer "),
        Credentials(authorization=_basic("alice", "nope")),
        Credentials(authorization="Basic !!not-base64"),
    ):
        with pytest.raises(Refused, match="missing or wrong"):
            authorize(TOKEN, wrong)
    with pytest.raises(Refused) as refused:
        authorize(None, Credentials(field_token=TOKEN))
    assert str(refused.value) == NO_TOKEN


def test_the_token_comes_from_the_setting(make_settings, tmp_path):
    assert configured_token(make_settings(tmp_path)) is None
    assert configured_token(make_settings(tmp_path, DASHBOARD_TOKEN="  ")) is None
    assert configured_token(make_settings(tmp_path, DASHBOARD_TOKEN="abc")) == "abc"
    settings = make_settings(tmp_path, DASHBOARD_TOKEN="abc")
    assert "abc" not in repr(settings)  # a SecretStr: never in logs
    with pytest.raises(ConfigError, match="DASHBOARD_TOKEN is still the template"):
        configured_token(make_settings(tmp_path, DASHBOARD_TOKEN="changeme"))


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

    def post(token: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        body = {
            "output": "..action-result.children...action-result.className...refresh.data..",
            "outputs": [
                {"id": "action-result", "property": "children"},
                {"id": "action-result", "property": "className"},
                {"id": "refresh", "property": "data"},
            ],
            "inputs": [{"id": "confirm", "property": "submit_n_clicks", "value": 1}],
            "changedPropIds": ["confirm.submit_n_clicks"],
            "state": [
                {"id": "pending", "property": "data", "value": pending},
                {"id": "token", "property": "value", "value": token},
                {"id": "refresh", "property": "data", "value": 0},
            ],
        }
        answer = client.post("/_dash-update-component", json=body, headers=headers or {})
        assert answer.status_code == 200, answer.text
        return json.loads(answer.text)["response"]["action-result"]

    # The seeded context has no DASHBOARD_TOKEN: every action is disabled.
    assert post(TOKEN)["children"] == NO_TOKEN
    client = create_app(_armed(seeded)).server.test_client()
    refused = post("wrong")
    assert (refused["children"], refused["className"]) == (WRONG_TOKEN, "refused")
    assert str(seeded.mlflow.get_model_version_by_alias(name, "champion").version) == "1"
    with seeded.engine.connect() as conn:
        assert conn.execute(select(model_actions)).all() == []
    # The bearer header is a token too; the action then runs (and is audited).
    done = post("", {"Authorization": f"Bearer {TOKEN}"})
    assert done["className"] == "done", done
    assert str(seeded.mlflow.get_model_version_by_alias(name, "champion").version) == "2"
    with seeded.engine.connect() as conn:
        (row,) = conn.execute(select(model_actions)).mappings()
    assert (row["action"], row["model_name"], row["reason"]) == ("promote", name, "posted")
    assert row["actor"].startswith("dashboard:")


def test_refusals_of_the_actions_are_their_sentences(seeded):
    armed = _armed(seeded)
    key = Credentials(field_token=TOKEN)
    cases = {
        actions.ActionRequest("promote", "stock-close", "", "r"): "Give the version to promote.",
        actions.ActionRequest("pause", "", "", ""): "Choose a model to pause.",
        actions.ActionRequest("archive", "stock-close-mlp", "1", "r"): "is the champion",
        actions.ActionRequest("promote", "stock-close", "3", "r"): "loses to the naive",
        actions.ActionRequest("promote", "nope", "1", "r"): "No registered model named 'nope'",
    }
    for request, sentence in cases.items():
        outcome = actions.perform(armed, request, key)
        assert not outcome.ok and sentence in outcome.sentence, outcome
    halted = actions.perform(armed, actions.ActionRequest("halt", reason="test"), key)
    # The dashboard holds no broker credentials: the next trade run cancels the orders.
    assert halted.ok and halted.sentence.startswith(
        "Trading is halted; this system's open orders at the broker are canceled by the next"
    )
    from mlops.trading.switch import status

    state = status(armed)
    assert state["halted"] is True and state["reason"] == "test"
    assert state["by"].startswith("dashboard:")
    resumed = actions.perform(armed, actions.ActionRequest("unhalt"), key).sentence
    assert resumed.startswith("Trading resumed: the halt of ") and "(test) is lifted" in resumed


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
    armed, key = _armed(seeded), Credentials(field_token=TOKEN)
    outcome = actions.perform(armed, actions.ActionRequest("retrain", "stock-close-mlp"), key)
    assert outcome == actions.Outcome(
        True,
        "Retrain of stock-close-mlp: Created training Job mlops-train-stock-close-mlp-20170601 "
        "for stock-close-mlp.",
    )
    assert [(ctx, name) for ctx, name, _ in calls] == [(armed, "stock-close-mlp")]
    assert calls[0][2].startswith("dashboard:")

    def broken(ctx, name, *, actor, reason=""):
        raise RuntimeError("boom")

    monkeypatch.setattr(orchestration, "retrain_model", broken)
    failed = actions.perform(armed, actions.ActionRequest("retrain", "stock-close-mlp"), key)
    assert not failed.ok and "failed unexpectedly (RuntimeError)" in failed.sentence
    # Without the token the orchestration is never called.
    refused = actions.perform(seeded, actions.ActionRequest("retrain", "stock-close-mlp"), key)
    assert not refused.ok and len(calls) == 1
