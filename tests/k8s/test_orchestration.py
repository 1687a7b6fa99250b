"""``mlops daily`` and the retraining trigger against a fake Kubernetes API on loopback.

The real ``kubernetes`` client talks HTTP to ``fake_kube.FakeKube``; the Job templates
are the real manifests in deployments/.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from conftest import run_in_process
from mlops import orchestration
from mlops.contracts.strategies import StrategySpec
from mlops.orchestration import (
    OrchestrationError,
    build_job,
    load_template,
    market_today,
    run_daily,
    trigger_retraining,
    with_as_of,
)
from mlops.pipeline import DAILY_STAGES, RetrainPlan

from .fake_kube import FakeKube
from .manifests import DEPLOYMENTS, ROOT

DAY = date(2024, 1, 5)
NS = "mlops"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube(polls_to_finish=2).start()
    try:
        yield fake
    finally:
        fake.stop()
    assert not fake.unexpected, f"calls the fake API does not implement: {fake.unexpected}"


def _daily(kube: FakeKube, **kwargs):
    kwargs.setdefault("templates_dir", DEPLOYMENTS)
    return run_daily(
        DAY,
        api_client=kube.api_client(),
        namespace=NS,
        poll_seconds=0.01,
        **kwargs,
    )


def _name(stage: str) -> str:
    return f"mlops-{stage}-20240105"


def _job(stage: str) -> dict:
    return build_job(load_template(DEPLOYMENTS, stage), stage, DAY, NS)


def test_runs_the_daily_stages_in_order_each_after_the_last_completed(kube: FakeKube) -> None:
    runs = _daily(kube)
    assert [r.stage for r in runs] == list(DAILY_STAGES)
    assert all(r.action == "created" and r.outcome == "succeeded" for r in runs)
    expected = []
    for stage in DAILY_STAGES:
        expected += [("create", _name(stage)), ("complete", _name(stage))]
    assert kube.events == expected
    assert kube.authorization == {"Bearer test-token"}


def test_the_trade_stage_is_one_job_per_strategy_side_by_side_each_with_its_own_secret(
    kube: FakeKube,
) -> None:
    import kubernetes_validate

    red = StrategySpec(
        name="red", credentials=Path("/etc/mlops/alpaca/red"), secret="mlops-alpaca-red"
    )
    names = {s: f"mlops-trade-{s}-20240105" for s in ("red", "blue")}
    kube.outcomes[names["red"]] = "Failed"
    with pytest.raises(OrchestrationError) as raised:
        _daily(kube, strategies=[red, StrategySpec(name="blue")])
    # Both Jobs started before either ended; red failing did not stop blue, but monitor
    # waits for a day whose every strategy traded.
    events = kube.events
    assert events.index(("create", names["blue"])) < events.index(("failed", names["red"]))
    assert ("complete", names["blue"]) in events and _name("monitor") not in kube.created()
    assert str(raised.value).startswith(
        f"Stage trade failed for 2024-01-05: 1 of its 2 Jobs failed (Job {names['red']} "
        "BackoffLimitExceeded: Job has reached the specified backoff limit), the others "
        "succeeded. Stages not started: monitor."
    )
    jobs = {s: kube.jobs[(NS, name)] for s, name in names.items()}
    for strategy, job in jobs.items():
        kubernetes_validate.validate(job, "1.30", strict=True)
        assert job["metadata"]["labels"]["mlops/strategy"] == strategy
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["trade", "--as-of", "2024-01-05", "--strategy", strategy]
    pods = {s: job["spec"]["template"]["spec"] for s, job in jobs.items()}
    env = {s: {e["name"] for e in pod["containers"][0]["env"]} for s, pod in pods.items()}
    # Red holds its own account's Secret, mounted where its credentials are, and not the
    # shared keys; blue (no Secret of its own) trades the environment's account.
    assert not {"ALPACA_API_KEY", "ALPACA_SECRET_KEY"} & env["red"]
    assert {"ALPACA_API_KEY", "ALPACA_SECRET_KEY"} <= env["blue"]
    secrets = {
        s: [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        for s, pod in pods.items()
    }
    assert secrets == {"red": ["mlops-alpaca-red"], "blue": []}
    mounts = {m["mountPath"]: m for m in pods["red"]["containers"][0]["volumeMounts"]}
    assert mounts["/etc/mlops/alpaca/red"]["readOnly"] is True


def test_each_job_is_its_manifest_named_and_dated_for_the_day(kube: FakeKube) -> None:
    _daily(kube)
    for stage in DAILY_STAGES:
        template = yaml.safe_load((DEPLOYMENTS / f"job-{stage}.yaml").read_text())
        job = kube.jobs[(NS, _name(stage))]
        meta = job["metadata"]
        assert meta["namespace"] == NS
        assert meta["labels"]["mlops/run-date"] == "2024-01-05"
        assert meta["labels"]["mlops/stage"] == stage
        assert meta["labels"]["mlops/triggered-by"] == "daily"
        assert job["spec"]["template"]["metadata"]["labels"]["mlops/run-date"] == "2024-01-05"
        for key, value in template["metadata"]["labels"].items():
            assert meta["labels"][key] == value
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [stage, "--as-of", "2024-01-05"]
        (original,) = template["spec"]["template"]["spec"]["containers"]
        for key in ("image", "env", "envFrom", "resources", "securityContext", "volumeMounts"):
            assert container.get(key) == original.get(key), f"{stage}: {key} changed"
        spec = {k: v for k, v in job["spec"].items() if k != "template"}
        assert spec == {k: v for k, v in template["spec"].items() if k != "template"}
    data_prep = kube.jobs[(NS, _name("data-prep"))]["spec"]
    assert data_prep["completionMode"] == "Indexed"


def test_stops_at_the_first_failure_with_a_clear_error(
    kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    kube.outcomes["batch-infer"] = "Failed"
    with (
        caplog.at_level(logging.INFO, logger="mlops.orchestration"),
        pytest.raises(OrchestrationError) as raised,
    ):
        _daily(kube)
    message = str(raised.value)
    assert "Stage batch-infer failed for 2024-01-05" in message
    assert _name("batch-infer") in message and "BackoffLimitExceeded" in message
    assert "Stages not started: trade, monitor" in message
    assert f"kubectl -n {NS} logs job/{_name('batch-infer')}" in message
    assert kube.created() == [_name("data-prep"), _name("batch-infer")]
    assert "error: stage failed in mlops-batch-infer-20240105-x7k2p" in caplog.text


def test_a_rerun_of_the_day_skips_the_stages_that_succeeded(kube: FakeKube) -> None:
    kube.add_job(_job("data-prep"), "Complete")
    kube.add_job(_job("batch-infer"), "Complete")
    runs = _daily(kube)
    assert [r.action for r in runs] == [
        "already-succeeded",
        "already-succeeded",
        "created",
        "created",
    ]
    assert kube.created() == [_name("trade"), _name("monitor")]


def test_a_running_job_of_the_day_is_waited_for_not_recreated(kube: FakeKube) -> None:
    kube.add_job(_job("data-prep"))  # no status yet: still running
    runs = _daily(kube)
    assert runs[0].action == "waited-for-running"
    assert _name("data-prep") not in kube.created()
    assert ("complete", _name("data-prep")) in kube.events


def test_a_failed_job_of_the_day_stops_the_run_unless_asked_to_rerun(kube: FakeKube) -> None:
    kube.add_job(_job("data-prep"), "Failed")
    with pytest.raises(OrchestrationError, match="already failed for this day"):
        _daily(kube)
    assert kube.created() == []
    runs = _daily(kube, rerun_failed=True)
    assert runs[0].action == "recreated"
    assert kube.events[:3] == [
        ("delete", _name("data-prep")),
        ("create", _name("data-prep")),
        ("complete", _name("data-prep")),
    ]
    assert len(kube.created()) == 4


def test_a_job_that_never_finishes_times_out(kube: FakeKube, monkeypatch) -> None:
    kube.outcomes["data-prep"] = "Running"
    monkeypatch.setattr(orchestration, "_wait_seconds", lambda body: 0.3)
    with pytest.raises(OrchestrationError, match="did not finish within"):
        _daily(kube)
    assert kube.created() == [_name("data-prep")]


def test_a_few_failed_status_reads_while_waiting_are_retried(kube: FakeKube, monkeypatch) -> None:
    real_create = orchestration.Jobs.create

    def create_then_blip(self, body):
        created = real_create(self, body)
        kube.failing_reads = orchestration.MAX_READ_ERRORS
        return created

    monkeypatch.setattr(orchestration.Jobs, "create", create_then_blip)
    runs = _daily(kube)
    assert [r.outcome for r in runs] == ["succeeded"] * 4

    kube2 = FakeKube().start()
    try:
        monkeypatch.setattr(
            orchestration.Jobs,
            "create",
            lambda self, body: (real_create(self, body), setattr(kube2, "failing_reads", 99))[0],
        )
        with pytest.raises(OrchestrationError, match="HTTP 500"):
            _daily(kube2)
        assert kube2.created() == [_name("data-prep")]
    finally:
        kube2.stop()


def test_every_template_is_checked_before_any_job_is_created(
    kube: FakeKube, tmp_path: Path
) -> None:
    for stage in ("data-prep", "batch-infer", "trade"):
        (tmp_path / f"job-{stage}.yaml").write_text((DEPLOYMENTS / f"job-{stage}.yaml").read_text())
    with pytest.raises(OrchestrationError, match="No Job template for stage 'monitor'"):
        _daily(kube, templates_dir=tmp_path)
    assert kube.requests == []


def test_a_template_must_run_its_own_stage(tmp_path: Path) -> None:
    text = (
        (DEPLOYMENTS / "job-trade.yaml").read_text().replace('args: ["trade"]', 'args: ["monitor"]')
    )
    (tmp_path / "job-trade.yaml").write_text(text)
    with pytest.raises(OrchestrationError, match="must run `mlops trade`"):
        load_template(tmp_path, "trade")


def test_an_unreachable_api_is_one_sentence(closed_port: int) -> None:
    from kubernetes import client

    configuration = client.Configuration(host=f"http://127.0.0.1:{closed_port}")
    configuration.retries = False
    with pytest.raises(OrchestrationError, match="Kubernetes API call failed while reading Job"):
        run_daily(
            DAY,
            api_client=client.ApiClient(configuration),
            namespace=NS,
            templates_dir=DEPLOYMENTS,
            poll_seconds=0.01,
        )


def test_retraining_trigger_creates_one_train_job_a_day(kube: FakeKube) -> None:
    first = trigger_retraining(
        DAY,
        "MAPE 3.4% above 3.0%",
        api_client=kube.api_client(),
        namespace=NS,
        templates_dir=DEPLOYMENTS,
    )
    assert first.created and first.job == "mlops-train-retrain-20240105"
    job = kube.jobs[(NS, first.job)]
    assert job["metadata"]["labels"]["mlops/triggered-by"] == "retrain"
    assert job["metadata"]["annotations"]["mlops/retrain-reason"] == "MAPE 3.4% above 3.0%"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["train", "--all", "--as-of", "2024-01-05"]
    assert container["image"].startswith("mlops-train:")
    second = trigger_retraining(
        DAY, "again", api_client=kube.api_client(), namespace=NS, templates_dir=DEPLOYMENTS
    )
    assert not second.created and second.job == first.job
    assert kube.created() == [first.job]


def test_job_names_are_valid_and_unique_per_day() -> None:
    names = [_name(stage) for stage in DAILY_STAGES] + ["mlops-train-retrain-20240105"]
    built = [build_job(load_template(DEPLOYMENTS, s), s, DAY, NS) for s in DAILY_STAGES]
    built.append(build_job(load_template(DEPLOYMENTS, "train"), "train", DAY, NS, infix="retrain"))
    assert [job["metadata"]["name"] for job in built] == names
    for name in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert len(set(names)) == len(names)


def test_as_of_replaces_a_day_the_template_names() -> None:
    assert with_as_of(["data-prep", "--as-of", "2017-12-29"], DAY) == [
        "data-prep",
        "--as-of",
        "2024-01-05",
    ]
    assert with_as_of(["trade", "--as-of=2017-12-29", "--output", "x"], DAY) == [
        "trade",
        "--output",
        "x",
        "--as-of",
        "2024-01-05",
    ]


def test_the_day_is_new_yorks() -> None:
    assert market_today(datetime(2024, 1, 5, 22, 30, tzinfo=UTC)) == date(2024, 1, 5)
    assert market_today(datetime(2024, 1, 6, 2, 0, tzinfo=UTC)) == date(2024, 1, 5)
    assert market_today(datetime(2024, 7, 5, 21, 30, tzinfo=UTC)) == date(2024, 7, 5)


def test_namespace_comes_from_the_pod(monkeypatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "elsewhere")
    assert orchestration.resolve_namespace() == "elsewhere"
    assert orchestration.resolve_namespace("given") == "given"


# The CLI, as the CronJob runs it (kubeconfig instead of the in-cluster service account).


def _kubeconfig(tmp_path: Path, kube: FakeKube) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "fake", "user": {"token": "cli-token"}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "fake", "namespace": NS},
                    }
                ],
                "current-context": "fake",
            }
        )
    )
    return path


def _migrated_home(tmp_path: Path) -> Path:
    """An embedded home with a current schema: `mlops daily` reads retrain requests there."""
    from mlops.db import migrate
    from mlops.db.engine import make_engine
    from mlops.settings import load_settings

    home = tmp_path / "home"
    engine = make_engine(load_settings(MLOPS_HOME=str(home)).db_url)
    migrate.upgrade(engine)
    engine.dispose()
    return home


def _in_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``mlops ARGS`` in this process, with ``env`` and no pod of its own, as a new process
    started with ``env`` would run it. The ``kubernetes`` client reads KUBECONFIG once, when
    it is imported (already done here), so its default kubeconfig is set to what that
    process would read."""
    from kubernetes.config import kube_config

    with pytest.MonkeyPatch.context() as mp:
        for key in ("KUBERNETES_SERVICE_HOST", "POD_NAMESPACE"):
            mp.delenv(key, raising=False)
        mp.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", env["KUBECONFIG"])
        return run_in_process(env, *args, cwd=ROOT)


def _cli(tmp_path: Path, kube: FakeKube, *args: str) -> subprocess.CompletedProcess:
    env = {
        "KUBECONFIG": str(_kubeconfig(tmp_path, kube)),
        "LOG_FORMAT": "json",
        "MLOPS_HOME": str(_migrated_home(tmp_path)),
    }
    return _in_process(
        env, "daily", "--templates-dir", str(DEPLOYMENTS), "--poll-seconds", "0.01", *args
    )


def test_cli_runs_the_day_and_prints_what_it_did(tmp_path, kube) -> None:
    result = _cli(tmp_path, kube, "--as-of", "2024-01-05")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout[result.stdout.index("[") :])
    assert [r["job"] for r in runs] == [_name(s) for s in DAILY_STAGES]
    assert kube.authorization == {"Bearer cli-token"}
    # Rerunning the day creates nothing.
    again = _cli(tmp_path, kube, "--as-of", "2024-01-05")
    assert again.returncode == 0, again.stderr
    assert len(kube.created()) == 4


def test_cli_failure_exits_non_zero_with_one_sentence(tmp_path, kube) -> None:
    kube.outcomes["trade"] = "Failed"
    result = _cli(tmp_path, kube, "--as-of", "2024-01-05")
    assert result.returncode == 1
    assert "error: Stage trade failed for 2024-01-05" in result.stderr
    assert kube.created() == [_name("data-prep"), _name("batch-infer"), _name("trade")]


def test_after_the_stages_the_retrain_rule_decides_the_training_job(kube: FakeKube) -> None:
    asked: list[date] = []

    def retrain(day: date) -> RetrainPlan:
        asked.append(day)
        return RetrainPlan(True, "drift share 0.9 above 0.6", 1, None)

    runs = _daily(kube, retrain=retrain)
    assert asked == [DAY]
    assert [r.stage for r in runs] == [*DAILY_STAGES, "train"]
    assert runs[-1].job == "mlops-train-retrain-20240105"
    assert kube.events[-2:] == [
        ("create", "mlops-train-retrain-20240105"),
        ("complete", "mlops-train-retrain-20240105"),
    ]
    job = kube.jobs[(NS, "mlops-train-retrain-20240105")]
    annotations = job["metadata"]["annotations"]
    assert annotations[orchestration.REASON_ANNOTATION] == "drift share 0.9 above 0.6"


def test_no_training_job_when_the_rule_says_no(kube: FakeKube) -> None:
    runs = _daily(kube, retrain=lambda day: RetrainPlan(False, "no open retrain request", 0, None))
    assert [r.stage for r in runs] == list(DAILY_STAGES)
    assert kube.created() == [_name(s) for s in DAILY_STAGES]


def test_a_failed_stage_skips_the_retrain_rule(kube: FakeKube) -> None:
    kube.outcomes["monitor"] = "Failed"
    asked: list[date] = []
    with pytest.raises(orchestration.OrchestrationError, match="Stage monitor failed"):
        _daily(kube, retrain=lambda day: asked.append(day) or RetrainPlan(True, "x", 1, None))
    assert asked == []


def test_cli_trains_when_a_retrain_request_is_open(tmp_path, kube) -> None:
    from sqlalchemy import insert

    from mlops.db.engine import make_engine
    from mlops.db.schema import retrain_requests
    from mlops.settings import load_settings

    home = _migrated_home(tmp_path)
    engine = make_engine(load_settings(MLOPS_HOME=str(home)).db_url)
    with engine.begin() as conn:
        conn.execute(
            insert(retrain_requests).values(
                requested_date=date(2024, 1, 4),
                model_version="1",
                reason="MAPE 0.05 above 0.03",
                status="open",
                created_at=datetime.now(UTC),
            )
        )
    engine.dispose()
    result = _cli(tmp_path, kube, "--as-of", "2024-01-05")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout[result.stdout.index("[") :])
    assert [r["job"] for r in runs] == [
        *(_name(s) for s in DAILY_STAGES),
        "mlops-train-retrain-20240105",
    ]
    (row,) = _audit(engine)
    assert (row["action"], row["model_name"], row["actor"]) == ("retrain", "*", "orchestrator")
    assert row["reason"] == "MAPE 0.05 above 0.03"
    assert json.loads(row["details"])["job"] == "mlops-train-retrain-20240105"


def test_the_days_training_trains_every_model_not_paused_and_is_audited_once(
    kube: FakeKube,
) -> None:
    started: list[tuple[str, str]] = []

    def plan(day: date) -> RetrainPlan:
        return RetrainPlan(True, "drift", 1, None)

    def audit(job: str, reason: str) -> None:
        started.append((job, reason))

    _daily(kube, retrain=plan, on_training=audit)
    job = kube.jobs[(NS, "mlops-train-retrain-20240105")]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    # One Job for all models: `train --all` skips the paused ones (the orchestrator has no
    # MLflow access to know them), whatever the template's own args.
    assert container["args"] == ["train", "--all", "--as-of", "2024-01-05"]
    assert started == [("mlops-train-retrain-20240105", "drift")]
    _daily(kube, retrain=plan, on_training=audit)  # the day again: nothing new to audit
    assert len(started) == 1


# Training one model on demand (`mlops models retrain`, the dashboard), and the requests
# for work the controller turns into Jobs.


@pytest.fixture
def ctx(tmp_path: Path):
    from mlops.context import open_context
    from mlops.settings import load_settings

    home = _migrated_home(tmp_path)
    context = open_context(load_settings(MLOPS_HOME=str(home)))
    yield context
    context.engine.dispose()


def _audit(engine) -> list[dict]:
    from sqlalchemy import select

    from mlops.db.schema import model_actions

    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(model_actions)).mappings()]


def test_retrain_in_the_cluster_queues_a_request_and_creates_no_pod(kube: FakeKube, ctx) -> None:
    from mlops import action_requests

    outcome = orchestration.retrain_model(
        ctx, "stock-close-mlp", actor="dashboard:alice", reason="new features", runner="kubernetes"
    )
    assert outcome.runner == "kubernetes" and outcome.request == 1
    assert outcome.sentence().startswith("Queued request 1 to retrain stock-close-mlp")
    assert kube.requests == [], "whoever asks talks to no Kubernetes API"
    (request,) = action_requests.recent(ctx.engine)
    assert (request.kind, request.model_name, request.status, request.runner) == (
        "retrain",
        "stock-close-mlp",
        "queued",
        "kubernetes",
    )
    (row,) = _audit(ctx.engine)
    assert (row["action"], row["model_name"], row["actor"], row["reason"]) == (
        "retrain",
        "stock-close-mlp",
        "dashboard:alice",
        "new features",
    )
    assert json.loads(row["details"]) == {"request": 1, "runner": "kubernetes"}
    with pytest.raises(action_requests.DuplicateRequest, match=r"already queued \(request 1 by"):
        orchestration.retrain_model(ctx, "stock-close-mlp", actor="cli:x", runner="kubernetes")
    from mlops.errors import ConfigError

    with pytest.raises(ConfigError, match="No model named 'nope' in the catalog"):
        orchestration.retrain_model(ctx, "nope", actor="cli:x", runner="kubernetes")
    with pytest.raises(ConfigError, match="--as-of is for a training here"):
        orchestration.retrain_model(ctx, "stock-close", actor="x", as_of=DAY, runner="kubernetes")
    assert len(action_requests.recent(ctx.engine)) == 1 and len(_audit(ctx.engine)) == 1


def _request(kind: str, model: str | None = None, request_id: int = 7):
    from mlops.action_requests import Request

    return Request(
        request_id, kind, model, "dashboard:ada", "why", "kubernetes", "queued", datetime.now(UTC)
    )


def test_a_request_becomes_a_job_from_its_fixed_template() -> None:
    from mlops.errors import ConfigError

    for kind, model, stage, args in (
        ("retrain", "stock-close-mlp", "train", ["train", "--model", "stock-close-mlp"]),
        ("monitor", None, "monitor", ["monitor"]),
    ):
        job = orchestration.build_request_job(DEPLOYMENTS, _request(kind, model), NS)
        template = load_template(DEPLOYMENTS, stage)
        assert job["metadata"]["name"] == f"mlops-request-7-{kind}"
        assert job["metadata"]["namespace"] == NS
        labels = job["metadata"]["labels"]
        assert labels["mlops/request"] == "7" and labels["mlops/triggered-by"] == "request"
        pod, expected = job["spec"]["template"]["spec"], template["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == args, "the command is the kind's, nothing else"
        # Everything else is the manifest's: image, identity, Secrets, volumes, limits.
        assert {**container, "args": None} == {**expected["containers"][0], "args": None}
        assert {k: v for k, v in pod.items() if k != "containers"} == {
            k: v for k, v in expected.items() if k != "containers"
        }
        assert job["spec"]["podFailurePolicy"] == template["spec"]["podFailurePolicy"]
    for bad in ("--all", "x; rm -rf /", "A", ""):
        with pytest.raises(ConfigError, match="is no model name"):
            orchestration.build_request_job(DEPLOYMENTS, _request("retrain", bad), NS)


def test_the_controller_starts_queued_requests_and_records_how_their_jobs_end(
    kube: FakeKube, ctx
) -> None:
    from mlops import action_requests

    kube.outcomes["monitor"] = "Failed"
    kube.exit_codes["monitor"] = 3
    kube.logs["mlops-request-2-monitor"] = "info: ...\nerror: No dataset for 2024-01-05.\n"
    for kind, model in (("retrain", "stock-close"), ("monitor", None)):
        orchestration.request_work(ctx, kind, model, actor="dashboard:ada", runner="kubernetes")
    local = orchestration.request_work(
        ctx, "retrain", "stock-close-mlp", actor="x", runner="local", launcher=lambda *a: None
    )

    def process() -> dict[int, action_requests.Request]:
        done = orchestration.process_requests(
            ctx.engine, api_client=kube.api_client(), namespace=NS, templates_dir=DEPLOYMENTS
        )
        return {r.id: r for r in done}

    first = process()
    assert kube.created() == ["mlops-request-1-retrain", "mlops-request-2-monitor"]
    assert {i: (r.status, r.job) for i, r in first.items()} == {
        1: ("running", "mlops-request-1-retrain"),
        2: ("running", "mlops-request-2-monitor"),
    }, "a local request is not the controller's"
    for _ in range(kube.polls_to_finish):
        process()
    ended = {r.id: r for r in action_requests.recent(ctx.engine)}
    assert (ended[1].status, ended[1].exit_code) == ("succeeded", 0)
    assert ended[1].result == (
        "`mlops train --model stock-close` succeeded (Job mlops-request-1-retrain)."
    )
    assert (ended[2].status, ended[2].exit_code) == ("failed", 3)
    assert ended[2].result == "Job mlops-request-2-monitor failed: No dataset for 2024-01-05."
    assert ended[local.id].status == "queued"
    assert process() == {}, "nothing open: no API call"
    assert kube.created() == ["mlops-request-1-retrain", "mlops-request-2-monitor"]
    # A Job deleted before it finished fails its request; the same work may be asked again.
    again = orchestration.request_work(ctx, "monitor", actor="x", runner="kubernetes")
    process()
    del kube.jobs[(NS, f"mlops-request-{again.id}-monitor")]
    process()
    gone = action_requests.get(ctx.engine, again.id)
    assert gone is not None and gone.status == "failed" and "is gone" in (gone.result or "")


def test_a_request_the_api_refuses_fails_and_one_it_cannot_reach_waits(
    kube: FakeKube, ctx, closed_port: int
) -> None:
    from kubernetes import client

    from mlops import action_requests

    denial = "ValidatingAdmissionPolicy 'mlops-orchestrator-creates-stage-jobs' denied request"
    kube.refused["mlops-request-1-retrain"] = denial
    refused = orchestration.request_work(
        ctx, "retrain", "stock-close", actor="x", runner="kubernetes"
    )
    orchestration.process_requests(
        ctx.engine, api_client=kube.api_client(), namespace=NS, templates_dir=DEPLOYMENTS
    )
    ended = action_requests.get(ctx.engine, refused.id)
    assert ended is not None and ended.status == "failed"
    assert "HTTP 422" in (ended.result or "") and denial in (ended.result or "")
    # No answer at all: the request stays queued for the next pass, which says so.
    waiting = orchestration.request_work(ctx, "monitor", actor="x", runner="kubernetes")
    configuration = client.Configuration(host=f"http://127.0.0.1:{closed_port}")
    configuration.retries = False
    with pytest.raises(OrchestrationError, match=r"1 request\(s\) left as they were"):
        orchestration.process_requests(
            ctx.engine,
            api_client=client.ApiClient(configuration),
            namespace=NS,
            templates_dir=DEPLOYMENTS,
        )
    still = action_requests.get(ctx.engine, waiting.id)
    assert still is not None and still.status == "queued"


def test_where_retraining_runs() -> None:
    from mlops.errors import ConfigError

    runner = orchestration.training_runner
    assert runner({}) == "local"
    assert runner({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "kubernetes"
    assert runner({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TRAINING_RUNNER": "local"}) == "local"
    assert runner({"TRAINING_RUNNER": "kubernetes"}) == "kubernetes"
    with pytest.raises(ConfigError, match="TRAINING_RUNNER='k8s' is not one of"):
        runner({"TRAINING_RUNNER": "k8s"})


def test_cli_retrain_in_the_cluster_queues_a_request_the_controller_runs(tmp_path, kube) -> None:
    from sqlalchemy import create_engine

    home = _migrated_home(tmp_path)
    env = {
        "KUBECONFIG": str(_kubeconfig(tmp_path, kube)),
        "MLOPS_HOME": str(home),
        "TRAINING_RUNNER": "kubernetes",
        "LOG_LEVEL": "WARNING",
    }
    result = _in_process(env, "models", "retrain", "stock-close-pooled", "--reason", "try it")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)  # the outcome as JSON; its sentence on stderr too
    assert answer["sentence"] == result.stderr.strip()
    assert answer["sentence"].startswith("Queued request 1 to retrain stock-close-pooled")
    assert kube.requests == []
    processed = _in_process(env, "requests", "process", "--templates-dir", str(DEPLOYMENTS))
    assert processed.returncode == 0, processed.stderr
    (running,) = json.loads(processed.stdout)
    assert (running["status"], running["job"]) == ("running", "mlops-request-1-retrain")
    listed = json.loads(_in_process(env, "requests", "list").stdout)
    assert [(r["id"], r["status"]) for r in listed] == [(1, "running")]
    from mlops.settings import load_settings

    engine = create_engine(load_settings(MLOPS_HOME=str(home)).db_url)
    (row,) = _audit(engine)
    engine.dispose()
    assert row["actor"].startswith("cli:") and row["reason"] == "try it"


def _completed(home: Path, *days: date) -> None:
    """Stage runs saying each day's pipeline completed (its last stage succeeded)."""
    from mlops.db.engine import make_engine
    from mlops.db.schema import stage_runs
    from mlops.settings import load_settings

    engine = make_engine(load_settings(MLOPS_HOME=str(home)).db_url)

    now = datetime.now(UTC)
    with engine.begin() as conn:
        for n, day in enumerate(days):
            conn.execute(
                stage_runs.insert().values(
                    run_id=f"done-{n}",
                    stage=DAILY_STAGES[-1],
                    run_date=day,
                    status="succeeded",
                    started_at=now,
                    finished_at=now,
                )
            )
    engine.dispose()


def test_catch_up_runs_every_missed_session_in_order(tmp_path, kube) -> None:
    """Last complete day Wed 2024-01-03; the CronJob missed Thu and Fri; Monday 8th is run
    with --catch-up: Thu, Fri, Mon in order (the weekend is no session), each day's Jobs
    after the last; a rerun creates nothing."""
    _completed(_migrated_home(tmp_path), date(2024, 1, 2), date(2024, 1, 3))
    result = _cli(tmp_path, kube, "--as-of", "2024-01-08", "--catch-up")
    assert result.returncode == 0, result.stderr
    days = ("20240104", "20240105", "20240108")
    expected = [f"mlops-{stage}-{day}" for day in days for stage in DAILY_STAGES]
    assert kube.created() == expected
    runs = json.loads(result.stdout[result.stdout.index("[") :])
    assert [r["job"] for r in runs] == expected
    # The past sessions' trade Jobs are told they trade a missed day; today's is not.
    for day, missed in (("20240104", True), ("20240105", True), ("20240108", False)):
        args = kube.jobs[(NS, f"mlops-trade-{day}")]["spec"]["template"]["spec"]["containers"]
        assert ("--missed-day" in args[0]["args"]) is missed
    again = _cli(tmp_path, kube, "--as-of", "2024-01-08", "--catch-up")
    assert again.returncode == 0, again.stderr
    assert kube.created() == expected


def test_catch_up_stops_at_a_failed_day_and_names_the_days_left(tmp_path, kube) -> None:
    _completed(_migrated_home(tmp_path), date(2024, 1, 3))
    kube.outcomes["trade"] = "Failed"
    result = _cli(tmp_path, kube, "--as-of", "2024-01-08", "--catch-up")
    assert result.returncode == 1
    assert "Stage trade failed for 2024-01-04" in result.stderr
    assert "days completed none; not started 2024-01-05, 2024-01-08." in result.stderr
    assert kube.created()[-1] == "mlops-trade-20240104"


def test_catch_up_refuses_more_missed_sessions_than_its_limit(tmp_path, kube) -> None:
    _completed(_migrated_home(tmp_path), date(2023, 12, 1))
    result = _cli(tmp_path, kube, "--as-of", "2024-01-08", "--catch-up")
    assert result.returncode == 2
    assert "24 sessions were missed since the last complete day 2023-12-01" in result.stderr
    assert "DAILY_CATCH_UP_MAX_SESSIONS=10" in result.stderr
    assert kube.created() == []
