"""Model management on a real MLflow server: promote, refuse, force, roll back, archive,
pause and resume, each with its audit row; and `mlops models` as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import insert

from conftest import run_in_process
from mlops import model_admin
from mlops.contracts.models import (
    CHALLENGER_ALIAS,
    CHAMPION_STACK_TAG,
    champion_stack,
    is_paused,
    registered_tags,
    version_ref,
)
from mlops.errors import ConfigError, ModelError

from .conftest import Registry

ACTOR = "cli:tester"


def _promote(r: Registry, version: str, **kwargs) -> model_admin.Action:
    kwargs.setdefault("reason", "beats the naive")
    return model_admin.promote(
        r.client, r.engine, r.name, version, alias="champion", actor=ACTOR, **kwargs
    )


def test_promote_moves_the_alias_keeps_the_reason_and_audits(registry: Registry) -> None:
    v1 = registry.register(0.010, 0.012, dm_p_value_naive=0.03)
    action = _promote(registry, v1, reason="first champion")
    assert registry.alias() == v1
    tags = version_ref(registry.client, registry.name, v1).tags
    assert tags[model_admin.PROMOTION_REASON_TAG] == "first champion"
    assert tags[model_admin.PROMOTED_BY_TAG] == ACTOR
    assert champion_stack(registry.client, registry.name) == [v1]
    (row,) = registry.actions()
    assert (row["action"], row["model_name"], row["model_version"]) == (
        "promote",
        registry.name,
        v1,
    )
    assert (row["actor"], row["reason"]) == (ACTOR, "first champion")
    details = json.loads(row["details"])
    assert details["previous"] is None and details["forced"] is False
    assert details["holdout_mape"] == pytest.approx(0.010)
    assert details["dm_p_value_naive"] == pytest.approx(0.03)
    assert action.model_version == v1


def test_a_version_that_loses_to_the_naive_is_refused_unless_forced(registry: Registry) -> None:
    v1 = registry.register(0.010, 0.012)
    _promote(registry, v1)
    loser = registry.register(0.013, 0.012)
    with pytest.raises(ModelError, match=r"loses to the naive forecast.*--force"):
        _promote(registry, loser)
    assert registry.alias() == v1
    assert [a["action"] for a in registry.actions()] == ["promote"]
    _promote(registry, loser, force=True, reason="judged on the live window")
    assert registry.alias() == loser
    last = registry.actions()[-1]
    assert json.loads(last["details"])["forced"] is True
    assert json.loads(last["details"])["previous"] == v1


def test_a_classifier_is_promoted_on_its_gates_metric_log_loss(registry: Registry) -> None:
    """A direction classifier's version names its gate's figure (``promotion_metric``):
    a manual promotion compares its log loss with the base rate's, not MAPE.
    """
    # MAPE figures that would pass, a log loss that loses to the base rate: refused.
    loser = registry.register(0.010, 0.012, holdout_log_loss=0.70, baseline_holdout_log_loss=0.69)
    winner = registry.register(0.013, 0.012, holdout_log_loss=0.68, baseline_holdout_log_loss=0.69)
    for version in (loser, winner):
        registry.client.set_model_version_tag(
            registry.name, version, model_admin.PROMOTION_METRIC_TAG, "log_loss"
        )
    with pytest.raises(
        ModelError, match=r"loses to the naive forecast on its holdout \(log loss 0.700000 vs"
    ):
        _promote(registry, loser)
    _promote(registry, winner)  # its MAPE loses, its log loss wins: promoted
    assert registry.alias() == winner


def test_significance_is_required_when_promotion_max_p_value_is_set(registry: Registry) -> None:
    doubtful = registry.register(0.010, 0.012, dm_p_value_naive=0.4)
    with pytest.raises(ModelError, match=r"not significantly better.*p 0\.4000 decides"):
        _promote(registry, doubtful, max_p_value=0.05)
    assert registry.alias() is None
    _promote(registry, doubtful, max_p_value=0.5)
    assert registry.alias() == doubtful


def test_perform_applies_the_settings_promotion_rule_for_cli_and_dashboard_alike(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        model_admin.alerts, "send", lambda _settings, kind, text: sent.append((kind, text))
    )
    doubtful = registry.register(0.010, 0.012, dm_p_value_naive=0.4)
    strict = registry.settings.model_copy(update={"promotion_max_p_value": 0.05})
    with pytest.raises(ModelError, match=r"not significantly better.*PROMOTION_MAX_P_VALUE 0\.05"):
        model_admin.perform(
            registry.client, registry.engine, strict, "promote", registry.name, doubtful,
            reason="looks fine", actor=ACTOR,
        )  # fmt: skip
    assert registry.alias() is None and registry.actions() == []
    done = model_admin.perform(
        registry.client, registry.engine, registry.settings, "promote", registry.name, doubtful,
        reason="no significance rule", actor=ACTOR,
    )  # fmt: skip
    assert (done.action, registry.alias()) == ("promote", doubtful)
    # A champion moved by hand is an alert (the refused promotion above was none).
    assert sent == [
        (
            "promotion",
            f"{registry.name} version {doubtful} is the new champion (promote by {ACTOR}: "
            "no significance rule)",
        )
    ]
    with pytest.raises(ConfigError, match="Unknown model action 'delete'"):
        model_admin.perform(
            registry.client, registry.engine, registry.settings, "delete", registry.name,
            reason="", actor=ACTOR,
        )  # fmt: skip


def _live_window(registry: Registry, version: str, p_value: float) -> None:
    from mlops.db.schema import monitoring_metrics

    with registry.engine.begin() as conn:
        conn.execute(
            insert(monitoring_metrics),
            [
                {
                    "metric_date": date(2017, 6, 28),
                    "model_name": registry.name,
                    "model_version": version,
                    "symbol": "ALL",
                    "metric": metric,
                    "value": value,
                    "window_days": 20,
                    "created_at": datetime.now(UTC),
                }
                for metric, value in (("dm_p_naive", p_value), ("mape", 0.011))
            ],
        )


def test_the_holdout_p_value_decides_and_the_live_one_is_information(
    registry: Registry,
) -> None:
    """Not the smaller of two looks: a live p of 0.02 does not rescue a holdout p of 0.4."""
    champion = registry.register(0.011, 0.012, dm_p_value_naive=0.01)
    _promote(registry, champion, max_p_value=0.05)
    challenger = registry.register(0.010, 0.012, dm_p_value_naive=0.4)
    _live_window(registry, challenger, 0.02)
    with pytest.raises(ModelError) as refused:
        _promote(registry, challenger, max_p_value=0.05, reason="20 live days in shadow")
    said = str(refused.value)
    assert "holdout MAPE 1.000% vs naive 1.200%, p 0.4000 decides" in said
    assert f"champion v{champion} holdout MAPE 1.100%" in said
    assert "live 20-session window to 2017-06-28" in said and "p 0.0200 (information only)" in said
    assert registry.alias() == champion

    # A version without a holdout test is judged on its live window, and says so.
    unseen = registry.register(0.010, 0.012)
    _live_window(registry, unseen, 0.02)
    done = _promote(registry, unseen, max_p_value=0.05, reason="20 live days in shadow")
    assert registry.alias() == unseen
    assert "p 0.0200 decides" in done.sentence()
    details = json.loads(registry.actions()[-1]["details"])
    assert details["p_value_decides"] == "live" and details["forced"] is False
    assert details["live"]["window"]["dm_p_naive"] == pytest.approx(0.02)
    assert details["live"]["window_date"] == "2017-06-28"


def test_rollback_returns_to_the_previous_champion_and_keeps_the_history(
    registry: Registry,
) -> None:
    v1 = registry.register(0.010, 0.012)
    v2 = registry.register(0.009, 0.012)
    _promote(registry, v1)
    _promote(registry, v2)
    assert champion_stack(registry.client, registry.name) == [v1, v2]
    model_admin.rollback(
        registry.client,
        registry.engine,
        registry.name,
        alias="champion",
        reason="bad week",
        actor=ACTOR,
    )
    assert registry.alias() == v1
    assert registered_tags(registry.client, registry.name)[CHAMPION_STACK_TAG] == v1
    actions = registry.actions()
    assert [(a["action"], a["model_version"]) for a in actions] == [
        ("promote", v1),
        ("promote", v2),
        ("rollback", v1),
    ]
    assert json.loads(actions[-1]["details"]) == {"from": v2}
    # v2 is still registered, and nothing older than v1 to go back to.
    assert version_ref(registry.client, registry.name, v2) is not None
    with pytest.raises(ConfigError, match="no earlier champion"):
        model_admin.rollback(
            registry.client,
            registry.engine,
            registry.name,
            alias="champion",
            reason="",
            actor=ACTOR,
        )
    assert len(registry.actions()) == 3


def _tags(r: Registry, version: str) -> dict[str, str]:
    return version_ref(r.client, r.name, version).tags


def test_tags_follow_manual_promotions_and_rollbacks(registry: Registry) -> None:
    """Issue 19: the MLflow UI never shows "rejected" on the serving champion, nor a
    promoted-by on a version rolled back from."""
    v1 = registry.register(0.010, 0.012)
    v2 = registry.register(0.013, 0.012)  # loses to the naive: forced
    for version in (v1, v2):  # training's gate rejected both
        registry.client.set_model_version_tag(registry.name, version, "promotion", "rejected")
        registry.client.set_model_version_tag(
            registry.name, version, "promotion_reason", "does not beat the naive forecast"
        )
    _promote(registry, v1, reason="judged on the live window")
    assert {k: v for k, v in _tags(registry, v1).items() if "promot" in k} == {
        "promotion": "promoted",
        "promotion_reason": "manual promotion: judged on the live window",
        model_admin.PROMOTION_REASON_TAG: "judged on the live window",
        model_admin.PROMOTED_BY_TAG: ACTOR,
    }
    _promote(registry, v2, reason="needed now", force=True)
    tags = _tags(registry, v2)
    assert (tags["promotion"], tags["promotion_reason"]) == (
        "promoted",
        "manual forced promotion: needed now",
    )
    # v1 was promoted by hand before this code tagged promotions: it says "rejected".
    registry.client.set_model_version_tag(registry.name, v1, "promotion", "rejected")
    model_admin.rollback(
        registry.client, registry.engine, registry.name,
        alias="champion", reason="bad week", actor="dashboard:ann",
    )  # fmt: skip
    assert registry.alias() == v1
    back = _tags(registry, v2)
    assert back["promotion"] == "rolled_back"
    assert back["promotion_reason"] == f"rolled back to version {v1} by dashboard:ann: bad week"
    assert model_admin.PROMOTED_BY_TAG not in back
    assert model_admin.PROMOTION_REASON_TAG not in back
    restored = _tags(registry, v1)
    assert restored["promotion"] == "promoted"
    assert restored["promotion_reason"] == f"restored by a rollback from version {v2}: bad week"


def test_archive_never_the_champion_and_an_archived_version_is_not_promoted(
    registry: Registry,
) -> None:
    v1 = registry.register(0.010, 0.012)
    v2 = registry.register(0.011, 0.012)
    _promote(registry, v1)
    registry.client.set_registered_model_alias(registry.name, CHALLENGER_ALIAS, v2)

    def archive(version: str) -> model_admin.Action:
        return model_admin.archive(
            registry.client,
            registry.engine,
            registry.name,
            version,
            alias="champion",
            reason="superseded",
            actor=ACTOR,
        )

    with pytest.raises(ConfigError, match="is the champion"):
        archive(v1)
    archive(v2)
    assert version_ref(registry.client, registry.name, v2).tags["mlops_status"] == "archived"
    assert registry.alias(CHALLENGER_ALIAS) is None, "an archived version is no challenger"
    with pytest.raises(ConfigError, match="archived; it cannot be promoted"):
        _promote(registry, v2, force=True)
    with pytest.raises(ConfigError, match="already archived"):
        archive(v2)
    assert [a["action"] for a in registry.actions()] == ["promote", "archive"]


def test_rollback_skips_an_archived_champion(registry: Registry) -> None:
    v1, v2, v3 = (registry.register(0.010 - i / 1000, 0.012) for i in range(3))
    for version in (v1, v2, v3):
        _promote(registry, version)
    registry.client.set_model_version_tag(registry.name, v2, "mlops_status", "archived")
    model_admin.rollback(
        registry.client,
        registry.engine,
        registry.name,
        alias="champion",
        reason="",
        actor=ACTOR,
    )
    assert registry.alias() == v1


def test_pause_and_resume_change_what_scheduled_training_trains(
    registry: Registry, catalog_dir
) -> None:
    from mlops.pipeline import scheduled_models
    from mlops.settings import load_settings

    other = f"{registry.name}-b"
    folder = catalog_dir(registry.name, other)
    settings = load_settings(**{**_env(registry), "MODEL_CONFIGS_DIR": str(folder)})
    registry.register(0.010, 0.012)
    assert scheduled_models(registry.client, settings, None) == [registry.name, other]

    def paused(value: bool, reason: str = "") -> model_admin.Action:
        return model_admin.set_paused(
            registry.client, registry.engine, registry.name, value, reason=reason, actor=ACTOR
        )

    paused(True, "config under review")
    assert is_paused(registry.client, registry.name)
    assert scheduled_models(registry.client, settings, None) == [other]
    with pytest.raises(ConfigError, match="already paused"):
        paused(True)
    paused(False)
    assert scheduled_models(registry.client, settings, None) == [registry.name, other]
    with pytest.raises(ConfigError, match="already active"):
        paused(False)
    assert [(a["action"], a["reason"]) for a in registry.actions()] == [
        ("pause", "config under review"),
        ("resume", "resume"),
    ]


def test_actions_on_an_unknown_model_or_version_are_one_sentence(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="No registered model named"):
        _promote(registry, "1")
    registry.register(0.010, 0.012)
    with pytest.raises(ConfigError, match="has no version 7"):
        _promote(registry, "7")
    with pytest.raises(ConfigError, match="needs a reason"):
        _promote(registry, "1", reason="  ")
    assert registry.actions() == []


# `mlops models` as a user runs it.


def _env(r: Registry) -> dict[str, str]:
    return {
        "MLOPS_HOME": str(r.settings.mlops_home),
        "MLFLOW_TRACKING_URI": r.settings.tracking_uri,
        "MLFLOW_EXPERIMENT": r.settings.mlflow_experiment,
        "MODEL_NAME": r.name,
    }


def _cli(r: Registry, catalog: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """``mlops models ARGS`` as a user runs it, in this process (no interpreter start and
    MLflow import per call)."""
    env = {**_env(r), "MODEL_CONFIGS_DIR": catalog, "LOG_LEVEL": "WARNING", **extra}
    return run_in_process(env, "models", *args)


def test_the_cli_acts_refuses_and_lists(registry: Registry, catalog_dir, tmp_path):
    from mlops.db.schema import monitoring_metrics

    folder = str(catalog_dir(registry.name, f"{registry.name}-new"))
    v1 = registry.register(0.010, 0.012, dm_p_value_naive=0.02)
    v2 = registry.register(0.013, 0.012, dm_p_value_naive=0.7, dm_p_value_champion=0.9)

    done = _cli(registry, folder, "promote", registry.name, v1, "--reason", "ok")
    assert done.returncode == 0, done.stderr
    # stdout: the audit row as JSON; stderr: its sentence.
    result = json.loads(done.stdout)
    assert result["sentence"] == (
        f"promote {registry.name} version {v1}: ok "
        "(holdout MAPE 1.000% vs naive 1.200%, p 0.0200 decides)"
    )
    assert (result["action"], result["model_version"], result["outcome"]) == ("promote", v1, "done")
    assert result["actor"] == model_admin.default_actor("cli")
    assert done.stderr.strip() == result["sentence"]
    refused = _cli(registry, folder, "promote", registry.name, v2, "--reason", "x")
    assert refused.returncode == ModelError.exit_code and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "loses to the naive forecast" in refused.stderr
    registry.client.set_registered_model_alias(registry.name, CHALLENGER_ALIAS, v2)
    paused = _cli(registry, folder, "pause", registry.name, "--reason", "hold")
    assert paused.returncode == 0, paused.stderr
    archived = _cli(registry, folder, "archive", registry.name, v1)
    assert archived.returncode == ConfigError.exit_code and "is the champion" in archived.stderr

    now = datetime.now(UTC)
    rows = [  # (day, window_days, metric, value): two monitored days, each day's own figures
        *[
            (day, 20, metric, figure)
            for day, value in ((date(2017, 6, 1), 0.02), (date(2017, 6, 2), 0.015))
            for metric, figure in (("mape", value), ("naive_mape", 0.014), ("dm_p_naive", 0.3))
        ],
        (date(2017, 6, 1), 1, "mape", 0.031),
        (date(2017, 6, 2), 1, "mape", 0.026),  # the day's own MAPE, not the window's
        (date(2017, 6, 2), 1, "naive_mape", 0.012),
        (date(2017, 6, 2), 1, "ic", 0.25),
    ]
    with registry.engine.begin() as conn:
        conn.execute(
            insert(monitoring_metrics),
            [
                {
                    "metric_date": day,
                    "model_name": registry.name,
                    "model_version": v1,
                    "symbol": "ALL",
                    "metric": metric,
                    "value": value,
                    "window_days": window,
                    "created_at": now,
                }
                for day, window, metric, value in rows
            ],
        )
    out = tmp_path / "models.json"
    listed = _cli(registry, folder, "list", "--output", str(out))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == json.loads(out.read_text())  # JSON on stdout
    rows = {(r["name"], r["version"]): r for r in json.loads(out.read_text())}
    first, second = rows[(registry.name, v1)], rows[(registry.name, v2)]
    assert (first["status"], first["aliases"], first["paused"]) == ("champion", ["champion"], True)
    assert (second["status"], second["aliases"]) == ("challenger", [CHALLENGER_ALIAS])
    assert first["dataset_version"] == "2017-05-31-abc"
    assert first["train_window"] == "2015-01-02..2017-01-31"
    assert first["holdout"]["holdout_mape"] == pytest.approx(0.010)
    assert first["holdout"]["baseline_holdout_mape"] == pytest.approx(0.012)
    assert "dm_p_value_champion" not in first["holdout"]
    assert second["holdout"]["dm_p_value_champion"] == pytest.approx(0.9)
    live = first["live"]
    assert (live["session_date"], live["window_date"], live["window_days"]) == (
        "2017-06-02",
        "2017-06-02",
        20,
    )
    assert live["session"] == {"mape": 0.026, "naive_mape": 0.012, "ic": 0.25}
    assert live["window"] == {"mape": 0.015, "naive_mape": 0.014, "dm_p_naive": 0.3}
    assert second["live"] == {}
    never = rows[(f"{registry.name}-new", None)]
    assert never["status"] == "not trained"
    lines = _cli(registry, folder, "list", "--table").stdout.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "VERSION", "STATUS"]
    line = next(x for x in lines if x.startswith(f"{registry.name} ") and f" {v1} " in x)
    assert "champion" in line and "paused" in line
    assert " 2.600% " in line and " 1.500% " in line and " 20 to 2017-06-02 " in line
    assert "DAY MAPE" in lines[0] and "WINDOW MAPE" in lines[0] and " 0.250 " in line
    assert [a["action"] for a in registry.actions()] == ["promote", "pause"]
    # Every refusal is audited too, with its sentence.
    refusals = registry.actions("refused")
    assert [(a["action"], a["model_version"]) for a in refusals] == [
        ("promote", v2),
        ("archive", v1),
    ]
    assert "loses to the naive forecast" in refusals[0]["reason"]
    assert "is the champion" in refusals[1]["reason"]


def test_the_list_says_when_the_champion_is_archived() -> None:
    archived = {"mlops_status": "archived"}
    assert model_admin.version_status(["champion"], archived, "champion") == "champion (archived)"
    assert model_admin.version_status(["champion"], {}, "champion") == "champion"
    assert model_admin.version_status([], archived, "champion") == "archived"


def test_named_users_act_on_the_cli_under_their_own_name(
    registry: Registry, catalog_dir, monkeypatch
) -> None:
    """With DASHBOARD_USERS, `mlops models` acts as MLOPS_USER signed in with
    MLOPS_PASSWORD, if their role may; every refusal is audited; `mlops users hash`
    makes the entries."""
    import io

    from pydantic import SecretStr

    from mlops.access import directory

    folder = str(catalog_dir(registry.name))
    v1 = registry.register(0.010, 0.012)
    entries = []
    for name, role in (("otto", "operator"), ("vera", "viewer")):
        monkeypatch.setattr("sys.stdin", io.StringIO(f"{name}-password-1\n"))
        made = run_in_process({}, "users", "hash", name, "--role", role)
        assert made.returncode == 0, made.stderr
        assert f"{name}-password-1" not in made.stdout
        entries.append(json.loads(made.stdout)["entry"])
    users = {"DASHBOARD_USERS": ",".join(entries)}
    users_secret = SecretStr(users["DASHBOARD_USERS"])
    parsed = directory(registry.settings.model_copy(update={"dashboard_users": users_secret}))
    assert {n: role for n, (role, _) in parsed.users.items()} == {
        "otto": "operator",
        "vera": "viewer",
    }
    assert parsed.authenticate("otto", "otto-password-1") is not None
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    weak = run_in_process({}, "users", "hash", "eve", "--role", "admin")
    assert weak.returncode == ConfigError.exit_code and "at least 12" in weak.stderr

    def promote(**extra: str) -> subprocess.CompletedProcess:
        return _cli(registry, folder, "promote", registry.name, v1, "--reason", "r", **extra)

    nobody = promote(**users)
    assert nobody.returncode == ConfigError.exit_code and "set MLOPS_USER" in nobody.stderr
    viewer = promote(**users, MLOPS_USER="vera", MLOPS_PASSWORD="vera-password-1")
    assert viewer.returncode == ConfigError.exit_code, viewer.stderr
    assert "vera is a viewer; promote needs the role operator or admin" in viewer.stderr
    wrong = promote(**users, MLOPS_USER="otto", MLOPS_PASSWORD="vera-password-1")
    assert wrong.returncode == ConfigError.exit_code and "wrong" in wrong.stderr
    assert registry.alias() is None and registry.actions() == []
    done = promote(**users, MLOPS_USER="otto", MLOPS_PASSWORD="otto-password-1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["actor"] == "cli:otto" and registry.alias() == v1
    assert [a["actor"] for a in registry.actions()] == ["cli:otto"]
    refusals = registry.actions("refused")
    assert [a["actor"] for a in refusals] == ["cli:anonymous", "cli:vera", "cli:anonymous"]
    assert json.loads(refusals[2]["details"]) == {"claimed_user": "otto"}
