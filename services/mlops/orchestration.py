"""The daily pipeline on Kubernetes: stage Jobs created in order, one day at a time.

``mlops daily`` (the orchestrator CronJob) runs the stages of ``mlops.pipeline`` as
Kubernetes Jobs, one after the other, and stops at the first one that fails, so no stage
ever runs on a half-finished day. Then it applies the pipeline's retrain rule to the
database (open retrain requests, the last training) and, when it says so, creates the
day's train Job (``trigger_retraining``) and waits for it.

Where the Jobs come from: each stage Job is built from its template, the very manifest a
user applies by hand (``deployments/job-<stage>.yaml``). The cluster gets those files as
the ConfigMap ``mlops-job-templates`` (``config-maps/job-templates.yaml``, kept identical
to the manifests by a test), mounted into the orchestrator at ``/etc/mlops/jobs``; from a
laptop, ``--templates-dir deployments`` reads the manifests directly. For each stage the
template gets a per-day name (``mlops-trade-20240105``), ``--as-of <day>`` (replacing a
day the manifest names for runs by hand) and labels naming the day; image, resources,
security context and settings stay exactly as in the manifest.

The trade stage runs once per strategy (``mlops.pipeline.stage_parts``; the strategies
file, ``STRATEGIES_FILE``, mounted into the orchestrator): one Job per strategy
(``mlops-trade-<strategy>-20240105``; the default strategy's keeps the stage's name) with
``--strategy <name>``, all of the day's trade Jobs side by side. A strategy with its own
account's Secret (``secret`` and ``credentials`` in the file) gets that Secret mounted at
its ``credentials`` folder and not the shared Alpaca keys of ``mlops-secrets``: each trade
Job holds its own account's keys only. A strategy that fails does not stop the others;
the stages after trade wait for all of them.

Idempotent per day: a Job of that name that already succeeded is not recreated, one
still running is waited for, and one that failed stops the run unless ``rerun_failed``
(then it is deleted and created again).

What the day trains: when the retrain rule says so, one Job, ``mlops train --all`` (every
catalog model that is not paused; ``mlops.pipeline.SCHEDULED_TRAIN_ARGS``), not one Job
per model: the orchestrator needs no MLflow access to know which models are paused (the
train Job reads the registry anyway), the day keeps one idempotent training Job, and the
models train one after the other within the train Job's resources.

Work on demand (the dashboard's "retrain now" and "run monitoring now", ``mlops models
retrain NAME`` in a pod) is a row of ``action_requests`` (:mod:`mlops.action_requests`):
whoever asks only records it, and only this controller creates pods. ``mlops requests
process`` (the CronJob ``mlops-requests``, every minute, as the orchestrator) turns each
queued request into a Job from a fixed template (:func:`build_request_job`: the stage's
manifest ``job-train.yaml`` or ``job-monitor.yaml`` with the request's fixed command) and
records how that Job ends (:func:`process_requests`). On a laptop ``mlops models retrain``
trains in process, and the dashboard starts a background ``mlops requests run ID``. "In
the cluster" is the environment variable ``TRAINING_RUNNER`` (``kubernetes`` or
``local``) when set, else whether ``KUBERNETES_SERVICE_HOST`` is (Kubernetes sets it in
every pod).

Only the ``kubernetes`` package is needed (extra ``k8s``); it is imported when used.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlops import action_requests, market_calendar
from mlops.action_requests import RETRAIN, Request
from mlops.contracts.strategies import KEY_FILES, StrategySpec
from mlops.errors import ConfigError, MlopsError
from mlops.pipeline import (
    DAILY_STAGES,
    SCHEDULED_TRAIN_ARGS,
    TRADE_STAGE,
    TRAIN_STAGE,
    RetrainPlan,
    StagePart,
    stage_parts,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from sqlalchemy import Engine

    from mlops.context import Context

log = logging.getLogger(__name__)

# Environment of the orchestrator pod (not pipeline settings: the stage Jobs get those
# from the ConfigMap themselves).
TEMPLATES_DIR_ENV = "JOB_TEMPLATES_DIR"
NAMESPACE_ENV = "POD_NAMESPACE"
DEFAULT_TEMPLATES_DIR = Path("/etc/mlops/jobs")
DEFAULT_NAMESPACE = "mlops"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MARKET_TIMEZONE = "America/New_York"

# Labels and annotations the orchestrator puts on the Jobs it creates.
RUN_DATE_LABEL = "mlops/run-date"
TRIGGER_LABEL = "mlops/triggered-by"
STAGE_LABEL = "mlops/stage"
STRATEGY_LABEL = "mlops/strategy"
REASON_ANNOTATION = "mlops/retrain-reason"
MODEL_LABEL = "mlops/model"

# Where `mlops models retrain` trains (see the module doc).
TRAINING_RUNNER_ENV = "TRAINING_RUNNER"
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
RUNNERS = ("kubernetes", "local")
REQUEST_LABEL = "mlops/request"
REQUEST_ANNOTATION = "mlops/requested-by"
# The controller of requests for work (`mlops requests process`).
REQUESTS_CRONJOB = "mlops-requests"
# The audit rows of the day's scheduled training name no one model: all but the paused.
ALL_MODELS = "*"

# Extra time on top of a Job's own activeDeadlineSeconds before we stop waiting for it.
WAIT_GRACE_SECONDS = 600
DEFAULT_WAIT_SECONDS = 6 * 3600
LOG_TAIL_LINES = 30
# Consecutive failed status reads tolerated while waiting for a Job.
MAX_READ_ERRORS = 5


class OrchestrationError(MlopsError):
    """A stage Job failed, timed out or could not be created; later stages did not run."""

    # The API server's HTTP status when it answered (a refusal: 4xx), else None.
    status: int | None = None


@dataclass(frozen=True)
class StageRun:
    """What the orchestrator did for one stage of one day."""

    stage: str
    job: str
    action: str  # created | already-succeeded | waited-for-running | recreated
    outcome: str  # succeeded


@dataclass(frozen=True)
class RetrainTrigger:
    """The train Job asked for (``created`` is False when the day already had one)."""

    job: str
    created: bool


@dataclass(frozen=True)
class _JobState:
    phase: str  # running | succeeded | failed
    reason: str = ""
    message: str = ""


# Building Jobs from templates.


def template_path(templates_dir: Path, stage: str) -> Path:
    return Path(templates_dir) / f"job-{stage}.yaml"


def load_template(templates_dir: Path, stage: str) -> dict[str, Any]:
    """The stage's Job manifest, checked to be a Job whose one container runs ``stage``."""
    path = template_path(templates_dir, stage)
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except FileNotFoundError:
        raise OrchestrationError(
            f"No Job template for stage {stage!r}: {path} does not exist "
            f"(is the ConfigMap mlops-job-templates mounted at {templates_dir}?)."
        ) from None
    except yaml.YAMLError as exc:
        raise OrchestrationError(f"Job template {path} is not valid YAML: {exc}.") from None
    if len(documents) != 1 or documents[0].get("kind") != "Job":
        raise OrchestrationError(f"Job template {path} must hold exactly one Job.")
    job = documents[0]
    containers = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    if len(containers) != 1:
        raise OrchestrationError(f"Job template {path} must have exactly one container.")
    args = containers[0].get("args") or []
    if not args or args[0] != stage:
        raise OrchestrationError(
            f"Job template {path} must run `mlops {stage}` (its args start with {args[:1]})."
        )
    return job


MISSED_DAY_FLAG = "--missed-day"
# The volume of a strategy's own account Secret in its trade Job.
CREDENTIALS_VOLUME = "account-credentials"


def job_name(template: dict[str, Any], as_of: date, infix: str = "") -> str:
    base = template["metadata"]["name"]
    middle = f"-{infix}" if infix else ""
    return f"{base}{middle}-{as_of:%Y%m%d}"


def build_job(
    template: dict[str, Any],
    stage: str,
    as_of: date,
    namespace: str,
    *,
    trigger: str = "daily",
    infix: str = "",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Job for ``stage`` on ``as_of``: the template, named and labelled for that day."""
    job = copy.deepcopy(template)
    meta = job.setdefault("metadata", {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generateName", "selfLink"):
        meta.pop(key, None)
    job.pop("status", None)
    meta["name"] = job_name(template, as_of, infix)
    meta["namespace"] = namespace
    day_labels = {
        RUN_DATE_LABEL: as_of.isoformat(),
        TRIGGER_LABEL: trigger,
        STAGE_LABEL: stage,
    }
    meta["labels"] = {**(meta.get("labels") or {}), **day_labels}
    if annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    pod_meta = job["spec"]["template"].setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **day_labels}
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = with_as_of(container["args"], as_of)
    return job


def with_as_of(args: Sequence[str], as_of: date) -> list[str]:
    """``args`` with ``--as-of`` set to ``as_of``: a day the template names is replaced."""
    result: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--as-of":
            skip = True
        elif not arg.startswith("--as-of="):
            result.append(arg)
    return [*result, "--as-of", as_of.isoformat()]


# Talking to the cluster.


def kube_client() -> ApiClient:
    """An API client: in-cluster credentials in a pod, else the kubeconfig (KUBECONFIG)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration, persist_config=False)
        except (config.ConfigException, OSError, TypeError) as exc:
            raise OrchestrationError(
                "Kubernetes is not reachable: this is not a pod with a service account "
                f"and no kubeconfig could be loaded ({exc})."
            ) from None
    return client.ApiClient(configuration)


def resolve_namespace(namespace: str | None = None) -> str:
    """The given namespace, else POD_NAMESPACE, else the pod's own, else the kubeconfig's."""
    if namespace:
        return namespace
    if os.environ.get(NAMESPACE_ENV):
        return os.environ[NAMESPACE_ENV]
    try:
        own = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        own = ""
    if own:
        return own
    try:
        from kubernetes import config

        _, context = config.list_kube_config_contexts()
        return context.get("context", {}).get("namespace") or DEFAULT_NAMESPACE
    except Exception:
        return DEFAULT_NAMESPACE


def resolve_templates_dir(templates_dir: Path | str | None = None) -> Path:
    if templates_dir:
        return Path(templates_dir)
    return Path(os.environ.get(TEMPLATES_DIR_ENV) or DEFAULT_TEMPLATES_DIR)


def market_today(now: datetime | None = None) -> date:
    """Today's date in New York (the CronJob runs after the close); UTC without tzdata."""
    now = now or datetime.now(UTC)
    try:
        from zoneinfo import ZoneInfo

        return now.astimezone(ZoneInfo(MARKET_TIMEZONE)).date()
    except (ImportError, KeyError, OSError, ValueError):
        log.warning("Time zone %s is unknown here; using today's date in UTC.", MARKET_TIMEZONE)
        return now.astimezone(UTC).date()


class Jobs:
    """The few Kubernetes calls the orchestrator makes, with errors turned into sentences."""

    def __init__(self, api_client: ApiClient, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def _fail(self, doing: str, exc: Exception) -> OrchestrationError:
        from kubernetes.client.exceptions import ApiException

        status = None
        if isinstance(exc, ApiException):
            status = exc.status
            detail = f"HTTP {exc.status} {exc.reason}"
            if exc.status == 403:
                detail += " (the service account lacks the RBAC rights in deployments/rbac.yaml)"
            said = _api_message(exc.body)
            if said:  # e.g. the admission policy's denial
                detail += f": {said}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        error = OrchestrationError(
            f"Kubernetes API call failed while {doing} in namespace {self.namespace}: {detail}."
        )
        error.status = status
        return error

    def get(self, name: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.batch.read_namespaced_job_status(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._fail(f"reading Job {name}", exc) from None
        except Exception as exc:
            raise self._fail(f"reading Job {name}", exc) from None

    def create(self, body: dict[str, Any]) -> bool:
        """Create the Job; False when one of that name appeared meanwhile."""
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        try:
            self.batch.create_namespaced_job(self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise self._fail(f"creating Job {name}", exc) from None
        except Exception as exc:
            raise self._fail(f"creating Job {name}", exc) from None
        return True

    def delete(self, name: str, *, timeout: float, poll: float, sleep: Callable) -> None:
        """Delete the Job (its pods go in the background) and wait until it is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise self._fail(f"deleting Job {name}", exc) from None
        except Exception as exc:
            raise self._fail(f"deleting Job {name}", exc) from None
        deadline = time.monotonic() + timeout
        while self.get(name) is not None:
            if time.monotonic() > deadline:
                raise OrchestrationError(f"Job {name} was not deleted within {timeout:.0f}s.")
            sleep(poll)

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last log lines of the Job's newest pod; empty when there is none (best effort)."""
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"job-name={name}"
            ).items
            if not pods:
                return ""
            newest = max(
                pods,
                key=lambda p: p.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC),
            )
            return self.core.read_namespaced_pod_log(
                newest.metadata.name, self.namespace, tail_lines=lines
            )
        except Exception as exc:
            log.debug("No logs for Job %s: %s", name, exc)
            return ""

    def exit_code(self, name: str) -> int | None:
        """The exit code of the Job's newest pod that ended; None when none is known."""
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"job-name={name}"
            ).items
        except Exception as exc:
            log.debug("No pods for Job %s: %s", name, exc)
            return None
        newest = datetime.min.replace(tzinfo=UTC)
        code = None
        for pod in pods:
            for status in getattr(pod.status, "container_statuses", None) or []:
                ended = getattr(status.state, "terminated", None)
                when = ended and (ended.finished_at or pod.metadata.creation_timestamp)
                if ended is not None and when is not None and when >= newest:
                    newest, code = when, int(ended.exit_code)
        return code


def _api_message(body: Any) -> str:
    """The ``message`` of an API server's Status answer, when there is one."""
    import json

    try:
        found = json.loads(body or "").get("message", "")
    except (ValueError, AttributeError, TypeError):
        return ""
    return str(found)[:500]


def job_state(job: Any) -> _JobState:
    """Running, succeeded or failed, from the Job's conditions."""
    conditions = getattr(getattr(job, "status", None), "conditions", None) or []
    for condition in conditions:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return _JobState("succeeded")
        if condition.type in ("Failed", "FailureTarget"):
            return _JobState("failed", condition.reason or "", condition.message or "")
    return _JobState("running")


def _wait_seconds(body: dict[str, Any]) -> float:
    deadline = body.get("spec", {}).get("activeDeadlineSeconds")
    return float(deadline) + WAIT_GRACE_SECONDS if deadline else float(DEFAULT_WAIT_SECONDS)


def _wait(
    jobs: Jobs, name: str, timeout: float, poll: float, sleep: Callable[[float], None]
) -> _JobState:
    deadline = time.monotonic() + timeout
    errors = 0
    while True:
        try:
            job = jobs.get(name)
        except OrchestrationError as exc:
            # A long wait outlives API server restarts and network blips: keep polling.
            errors += 1
            if errors > MAX_READ_ERRORS or time.monotonic() > deadline:
                raise
            log.warning("Reading Job %s failed (%d of %d): %s", name, errors, MAX_READ_ERRORS, exc)
            sleep(poll)
            continue
        errors = 0
        if job is None:
            raise OrchestrationError(f"Job {name} disappeared while it was being waited for.")
        state = job_state(job)
        if state.phase != "running":
            return state
        if time.monotonic() > deadline:
            raise OrchestrationError(
                f"Job {name} did not finish within {timeout:.0f}s; later stages were not started."
            )
        sleep(poll)


# The daily loop and the retraining trigger.


def _open(
    api_client: ApiClient | None, namespace: str | None, templates_dir: Path | str | None
) -> tuple[Jobs, Path]:
    ns = resolve_namespace(namespace)
    return Jobs(api_client or kube_client(), ns), resolve_templates_dir(templates_dir)


def run_daily(
    as_of: date | None = None,
    *,
    api_client: ApiClient | None = None,
    namespace: str | None = None,
    templates_dir: Path | str | None = None,
    stages: Sequence[str] = DAILY_STAGES,
    rerun_failed: bool = False,
    poll_seconds: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    retrain: Callable[[date], RetrainPlan] | None = None,
    on_training: Callable[[str, str], None] | None = None,
    missed_day: bool = False,
    strategies: Sequence[StrategySpec] | None = None,
) -> list[StageRun]:
    """Run ``stages`` for ``as_of`` (default: today in New York) as Jobs, in order (the
    trade stage once per strategy of ``strategies``, side by side; None: once).

    Each stage's Job is created only after the previous one completed; the first failure
    (or time-out) raises ``OrchestrationError`` and nothing after it is created. Every
    template is loaded and checked before the first Job is created. Then ``retrain``
    (the pipeline's rule on the database) decides whether the day's train Job runs too;
    ``on_training(job, reason)`` is called once that Job is created (the audit row).
    A ``missed_day`` (a past session a catch-up runs) has its trade Job told so
    (``mlops trade --missed-day``: a broker with a clock does not trade it, and says so).
    """
    day = as_of or market_today()
    if market_calendar.closed_day(day, "no stage Job is created for it"):
        return []
    jobs, folder = _open(api_client, namespace, templates_dir)
    specs = {s.name: s for s in strategies or []}
    bodies = [
        (part, _part_job(folder, part, day, jobs.namespace, specs, missed_day))
        for part in stage_parts(strategies, stages)
    ]
    log.info("Daily run for %s in namespace %s: %s", day, jobs.namespace, " -> ".join(stages))
    results: list[StageRun] = []
    for index, stage in enumerate(stages):
        later = ", ".join(stages[index + 1 :]) or "none"
        group = [body for part, body in bodies if part.stage == stage]
        run = _run_side_by_side if len(group) > 1 else _run_job
        results.extend(run(jobs, stage, group, day, later, rerun_failed, poll_seconds, sleep))
    if retrain is None:
        return results
    plan = retrain(day)
    if not plan.retrain:
        log.info("No training for %s: %s.", day, plan.reason)
        return results
    body = _train_job(jobs, folder, day, plan.reason)
    started = (lambda job: on_training(job, plan.reason)) if on_training else None
    results.extend(
        _run_job(jobs, TRAIN_STAGE, [body], day, "none", rerun_failed, poll_seconds, sleep, started)
    )
    return results


def _part_job(
    folder: Path,
    part: StagePart,
    day: date,
    namespace: str,
    specs: dict[str, StrategySpec],
    missed_day: bool,
) -> dict[str, Any]:
    """The Job of one part of the day: its stage's template for the day, with the part's
    options, and for a strategy with its own account its Secret instead of the shared keys."""
    body = build_job(
        load_template(folder, part.stage), part.stage, day, namespace, infix=part.infix
    )
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [*container["args"], *part.args]
    if missed_day and part.stage == TRADE_STAGE:
        container["args"] = [*container["args"], MISSED_DAY_FLAG]
    spec = specs.get(part.strategy or "")
    if spec is not None:
        _own_account(body, spec)
    return body


def _own_account(body: dict[str, Any], spec: StrategySpec) -> None:
    """Label the Job with its strategy; with its own Secret, mount that Secret at its
    credentials folder and drop the shared Alpaca keys from the environment."""
    for meta in (body["metadata"], body["spec"]["template"]["metadata"]):
        meta["labels"] = {**meta.get("labels", {}), STRATEGY_LABEL: spec.name}
    if spec.secret is None or spec.credentials is None:
        return
    pod = body["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["env"] = [e for e in container.get("env", []) if e.get("name") not in KEY_FILES]
    pod["volumes"] = [
        *(pod.get("volumes") or []),
        {
            "name": CREDENTIALS_VOLUME,
            "secret": {
                "secretName": spec.secret,
                "items": [{"key": key, "path": key} for key in KEY_FILES],
                "defaultMode": 0o440,
            },
        },
    ]
    container["volumeMounts"] = [
        *(container.get("volumeMounts") or []),
        {"name": CREDENTIALS_VOLUME, "mountPath": str(spec.credentials), "readOnly": True},
    ]


def run_catch_up(days: Sequence[date], **daily: Any) -> list[StageRun]:
    """:func:`run_daily` for each of ``days`` in order (``mlops daily --catch-up``), every
    day but the last a missed one; a day fails the run with what was done and the days
    not started, as one sentence."""
    results: list[StageRun] = []
    for index, day in enumerate(days):
        try:
            results.extend(run_daily(day, missed_day=index < len(days) - 1, **daily))
        except OrchestrationError as exc:
            rest = ", ".join(d.isoformat() for d in days[index + 1 :]) or "none"
            done = ", ".join(d.isoformat() for d in days[:index]) or "none"
            raise OrchestrationError(
                f"{exc} Catch-up stopped at {day}: days completed {done}; not started {rest}."
            ) from None
    return results


def _run_job(
    jobs: Jobs,
    stage: str,
    bodies: list[dict[str, Any]],
    day: date,
    later: str,
    rerun_failed: bool,
    poll_seconds: float,
    sleep: Callable[[float], None],
    started: Callable[[str], None] | None = None,
) -> list[StageRun]:
    """Start the stage's Job for the day (unless it already succeeded) and wait for it."""
    (body,) = bodies
    name = body["metadata"]["name"]
    action = _start(jobs, body, rerun_failed, poll_seconds, sleep)
    if started is not None and action in ("created", "recreated"):
        started(name)
    failed = _finish(jobs, stage, name, body, action, day, poll_seconds, sleep)
    if failed:
        raise OrchestrationError(
            f"Stage {stage} failed for {day}: {failed}. Stages not started: {later}. See "
            f"`kubectl -n {jobs.namespace} logs job/{name}`; rerun the day with "
            "`mlops daily --rerun-failed`."
        )
    return [StageRun(stage, name, action, "succeeded")]


def _run_side_by_side(
    jobs: Jobs,
    stage: str,
    bodies: list[dict[str, Any]],
    day: date,
    later: str,
    rerun_failed: bool,
    poll_seconds: float,
    sleep: Callable[[float], None],
) -> list[StageRun]:
    """The stage's Jobs of the day (one per strategy) all started, then each waited for:
    one failing does not stop the others; the stage fails when any did."""
    names = [body["metadata"]["name"] for body in bodies]
    actions = [_start(jobs, body, rerun_failed, poll_seconds, sleep) for body in bodies]
    failures = [
        why
        for name, body, action in zip(names, bodies, actions, strict=True)
        if (why := _finish(jobs, stage, name, body, action, day, poll_seconds, sleep))
    ]
    if failures:
        raise OrchestrationError(
            f"Stage {stage} failed for {day}: {len(failures)} of its {len(bodies)} Jobs "
            f"failed ({'; '.join(failures)}), the others succeeded. Stages not started: "
            f"{later}. See `kubectl -n {jobs.namespace} logs job/<name>`; rerun the day "
            "with `mlops daily --rerun-failed`."
        )
    return [
        StageRun(stage, name, action, "succeeded")
        for name, action in zip(names, actions, strict=True)
    ]


def _finish(
    jobs: Jobs,
    stage: str,
    name: str,
    body: dict[str, Any],
    action: str,
    day: date,
    poll_seconds: float,
    sleep: Callable[[float], None],
) -> str:
    """Wait for a started Job; why it failed ("" when it succeeded)."""
    if action == "already-succeeded":
        log.info("Stage %s: Job %s already succeeded for %s; not rerun.", stage, name, day)
        return ""
    log.info("Stage %s: waiting for Job %s (%s).", stage, name, action)
    state = _wait(jobs, name, _wait_seconds(body), poll_seconds, sleep)
    if state.phase == "failed":
        tail = jobs.log_tail(name)
        if tail:
            log.error("Last log lines of Job %s:\n%s", name, tail.rstrip())
        why = ": ".join(p for p in (state.reason, state.message) if p) or "failed"
        return f"Job {name} {why}"
    log.info("Stage %s: Job %s succeeded.", stage, name)
    return ""


def _train_job(jobs: Jobs, folder: Path, day: date, reason: str) -> dict[str, Any]:
    """The day's retraining Job, ``mlops-train-retrain-<yyyymmdd>``, from ``job-train.yaml``:
    ``mlops train --all`` (every catalog model not paused), whatever the template's args.
    """
    annotations = {REASON_ANNOTATION: reason[:1000]} if reason else None
    template = copy.deepcopy(load_template(folder, TRAIN_STAGE))
    template["spec"]["template"]["spec"]["containers"][0]["args"] = list(SCHEDULED_TRAIN_ARGS)
    return build_job(
        template,
        TRAIN_STAGE,
        day,
        jobs.namespace,
        trigger="retrain",
        infix="retrain",
        annotations=annotations,
    )


def _start(
    jobs: Jobs,
    body: dict[str, Any],
    rerun_failed: bool,
    poll_seconds: float,
    sleep: Callable[[float], None],
) -> str:
    """Make sure the day's Job exists; returns what was done."""
    name = body["metadata"]["name"]
    existing = jobs.get(name)
    if existing is None:
        if jobs.create(body):
            return "created"
        existing = jobs.get(name)  # created by someone else just now
        if existing is None:
            raise OrchestrationError(f"Job {name} could not be created nor found.")
    state = job_state(existing)
    if state.phase == "succeeded":
        return "already-succeeded"
    if state.phase == "running":
        return "waited-for-running"
    if not rerun_failed:
        raise OrchestrationError(
            f"Job {name} already failed for this day ({state.reason or 'failed'}); "
            f"rerun with `mlops daily --rerun-failed` or delete it "
            f"(`kubectl -n {jobs.namespace} delete job {name}`)."
        )
    log.warning("Job %s failed earlier (%s); deleting it to run it again.", name, state.reason)
    jobs.delete(name, timeout=120, poll=min(poll_seconds, 2.0), sleep=sleep)
    if not jobs.create(body):
        raise OrchestrationError(f"Job {name} reappeared before it could be recreated.")
    return "recreated"


def trigger_retraining(
    as_of: date | None = None,
    reason: str = "",
    *,
    api_client: ApiClient | None = None,
    namespace: str | None = None,
    templates_dir: Path | str | None = None,
) -> RetrainTrigger:
    """Create the train Job for ``as_of`` (at most one a day) and return without waiting."""
    day = as_of or market_today()
    jobs, folder = _open(api_client, namespace, templates_dir)
    body = _train_job(jobs, folder, day, reason)
    name = body["metadata"]["name"]
    if jobs.get(name) is not None or not jobs.create(body):
        log.info("Retraining for %s already requested: Job %s exists.", day, name)
        return RetrainTrigger(name, created=False)
    log.info("Retraining requested for %s: created Job %s (%s).", day, name, reason or "-")
    return RetrainTrigger(name, created=True)


# Training one model on demand, and the requests for work.


@dataclass(frozen=True)
class RetrainOutcome:
    """What ``retrain_model`` did: a request queued for the cluster's controller, or a
    training here."""

    model: str
    runner: str  # kubernetes | local
    request: int | None = None
    version: str | None = None
    promoted: bool | None = None
    reason: str = ""

    def sentence(self) -> str:
        if self.runner == "local":
            verdict = "promoted" if self.promoted else f"not promoted: {self.reason}"
            return f"Trained {self.model} version {self.version} ({verdict})."
        return (
            f"Queued request {self.request} to retrain {self.model}: the controller "
            f"(CronJob {REQUESTS_CRONJOB}) starts its Job within a minute; `mlops requests "
            "list` shows its status."
        )


def training_runner(environ: dict[str, str] | None = None) -> str:
    """``kubernetes`` or ``local``: TRAINING_RUNNER, else whether this is a pod."""
    env = os.environ if environ is None else environ
    chosen = (env.get(TRAINING_RUNNER_ENV) or "").strip().lower()
    if chosen:
        if chosen not in RUNNERS:
            raise ConfigError(
                f"{TRAINING_RUNNER_ENV}={chosen!r} is not one of {', '.join(RUNNERS)}."
            )
        return chosen
    return "kubernetes" if env.get(IN_CLUSTER_ENV) else "local"


def retrain_model(
    ctx: Context,
    name: str,
    *,
    actor: str,
    as_of: date | None = None,
    reason: str = "",
    runner: str | None = None,
) -> RetrainOutcome:
    """Train the catalog model ``name`` now, paused or not (a pause only stops scheduled
    training): in the cluster a request the controller turns into a Job (this process
    creates no pod), else the training here; one audit row.
    """
    from mlops.contracts.catalog import spec
    from mlops.model_admin import Action, record

    spec(ctx.settings, ctx.store, name)  # one sentence for a name the catalog lacks
    where = runner or training_runner()
    if where == "kubernetes":
        if as_of is not None:
            raise ConfigError(
                "--as-of is for a training here: in the cluster a requested training trains "
                "on the newest dataset (run the train Job by hand for another day)."
            )
        request = request_work(ctx, RETRAIN, name, actor=actor, reason=reason, runner=where)
        return RetrainOutcome(name, where, request=request.id)
    outcome = _retrain_here(ctx, name, as_of)
    details: dict[str, Any] = {
        "runner": where,
        "promoted": outcome.promoted,
        "decision": outcome.reason,
    }
    if as_of is not None:
        details["as_of"] = as_of.isoformat()
    why = reason or "retrain on demand"
    record(ctx.engine, Action("retrain", name, outcome.version, actor, why, details))
    return outcome


def _retrain_here(ctx: Context, name: str, as_of: date | None) -> RetrainOutcome:
    from mlops.runs import run_stage
    from mlops.training.stage import run

    result = run_stage(ctx, TRAIN_STAGE, run, as_of, lease=name, model=name)
    return RetrainOutcome(
        name,
        "local",
        version=result.model_version,
        promoted=result.promoted,
        reason=result.reason,
    )


def record_scheduled_training(engine: Engine, job: str, reason: str) -> None:
    """The audit row of the day's scheduled training (every catalog model not paused)."""
    from mlops.model_admin import Action, record

    details = {"job": job, "command": " ".join(SCHEDULED_TRAIN_ARGS)}
    record(engine, Action("retrain", ALL_MODELS, None, "orchestrator", reason, details))


Launcher = Callable[["Engine", Path, Request], Any]


def request_work(
    ctx: Context,
    kind: str,
    model: str | None = None,
    *,
    actor: str,
    reason: str = "",
    runner: str | None = None,
    launcher: Launcher | None = None,
) -> Request:
    """Ask for ``kind`` (retrain ``model``, or monitor) without doing it: a queued row
    and its audit row; on one machine its background runner is started too (``launcher``,
    by default :func:`mlops.action_requests.launch`). A duplicate of an open request is
    refused with its sentence (:class:`~mlops.action_requests.DuplicateRequest`)."""
    from mlops.contracts.catalog import spec
    from mlops.model_admin import Action, record

    if kind == RETRAIN:
        spec(ctx.settings, ctx.store, model or "")  # one sentence for a name the catalog lacks
    where = runner or training_runner()
    why = reason or f"{action_requests.describe(kind, model)} on demand"
    request = action_requests.submit(ctx.engine, kind, model, actor=actor, reason=why, runner=where)
    details = {"request": request.id, "runner": where}
    record(ctx.engine, Action(kind, model or ALL_MODELS, None, actor, why, details))
    if where == "local":
        try:
            (launcher or action_requests.launch)(ctx.engine, ctx.settings.mlops_home, request)
        except OSError as exc:
            sentence = f"The background runner could not be started: {exc}."
            action_requests.finish(ctx.engine, request.id, action_requests.FAILED, None, sentence)
            raise OrchestrationError(f"Request {request.id}: {sentence}") from None
    return request


# The controller: queued requests become Jobs from a fixed template.


def request_job_name(request: Request) -> str:
    """``mlops-request-<id>-<kind>``: one Job per request, whatever is asked again."""
    return f"mlops-request-{request.id}-{request.kind}"


def build_request_job(templates_dir: Path, request: Request, namespace: str) -> dict[str, Any]:
    """The Job of ``request``: the manifest of its stage (``job-train.yaml`` or
    ``job-monitor.yaml``) as it is (image, service account, Secrets, resources, security),
    named for the request, running the request's fixed command and nothing else."""
    args = action_requests.command(request.kind, request.model_name)
    stage = action_requests.STAGES[request.kind]
    job = copy.deepcopy(load_template(templates_dir, stage))
    meta = job.setdefault("metadata", {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generateName", "selfLink"):
        meta.pop(key, None)
    job.pop("status", None)
    labels = {TRIGGER_LABEL: "request", STAGE_LABEL: stage, REQUEST_LABEL: str(request.id)}
    if request.model_name:
        labels[MODEL_LABEL] = request.model_name
    meta.update(name=request_job_name(request), namespace=namespace)
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        REQUEST_ANNOTATION: f"{request.actor}: {request.reason}"[:1000],
    }
    pod_meta = job["spec"]["template"].setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    job["spec"]["template"]["spec"]["containers"][0]["args"] = args
    return job


def process_requests(
    engine: Engine,
    *,
    api_client: ApiClient | None = None,
    namespace: str | None = None,
    templates_dir: Path | str | None = None,
) -> list[Request]:
    """One pass of the controller over the open ``kubernetes`` requests, oldest first: a
    running one's Job is read and its end recorded; a queued one gets its Job. A request
    that cannot get its Job (a template missing, the API refusing) fails with that
    sentence; the pass goes on with the next. Returns the requests as they are now."""
    open_now = action_requests.open_requests(engine, action_requests.KUBERNETES)
    if not open_now:
        return []
    jobs, folder = _open(api_client, namespace, templates_dir)
    unreachable: list[str] = []
    for request in open_now:
        try:
            if request.status == action_requests.RUNNING:
                _follow(engine, jobs, request)
            else:
                _start_request(engine, jobs, folder, request)
        except OrchestrationError as exc:  # the API did not answer: the next pass retries
            log.warning("Request %d left as it is for the next pass: %s", request.id, exc)
            unreachable.append(f"request {request.id}: {exc}")
    if unreachable:
        raise OrchestrationError(
            f"{len(unreachable)} request(s) left as they were for the next pass; "
            + " ".join(unreachable)
        )
    return [r for r in (action_requests.get(engine, q.id) for q in open_now) if r is not None]


def _start_request(engine: Engine, jobs: Jobs, folder: Path, request: Request) -> None:
    """Its Job, created; a request the template or the API server refuses (a 4xx answer,
    e.g. the admission policy's) fails with that sentence. No answer at all: raised."""
    try:
        body = build_request_job(folder, request, jobs.namespace)
    except MlopsError as exc:  # a template missing or broken, a malformed name
        action_requests.finish(engine, request.id, action_requests.FAILED, None, str(exc))
        return
    try:
        created = jobs.create(body)
    except OrchestrationError as exc:
        if exc.status is None or exc.status >= 500:
            raise
        action_requests.finish(engine, request.id, action_requests.FAILED, None, str(exc))
        return
    name = body["metadata"]["name"]
    action_requests.claim(engine, request.id, job=name)
    log.info("Request %d: Job %s %s.", request.id, name, "created" if created else "found")


def _follow(engine: Engine, jobs: Jobs, request: Request) -> None:
    name = request.job or request_job_name(request)
    found = jobs.get(name)
    if found is None:
        sentence = f"Job {name} is gone (deleted before it finished)."
        action_requests.finish(engine, request.id, action_requests.FAILED, None, sentence)
        return
    state = job_state(found)
    if state.phase == "running":
        return
    if state.phase == "succeeded":
        shown = "mlops " + " ".join(action_requests.command(request.kind, request.model_name))
        sentence = f"`{shown}` succeeded (Job {name})."
        action_requests.finish(engine, request.id, action_requests.SUCCEEDED, 0, sentence)
        return
    code = jobs.exit_code(name)
    why = action_requests.error_line(jobs.log_tail(name)) or ": ".join(
        p for p in (state.reason, state.message) if p
    )
    sentence = f"Job {name} failed: {why or 'see its log'}"
    action_requests.finish(engine, request.id, action_requests.FAILED, code, sentence)
