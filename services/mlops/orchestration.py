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

Idempotent per day: a Job of that name that already succeeded is not recreated, one
still running is waited for, and one that failed stops the run unless ``rerun_failed``
(then it is deleted and created again).

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

from mlops import market_calendar
from mlops.errors import MlopsError
from mlops.pipeline import DAILY_STAGES, TRAIN_STAGE, RetrainPlan

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

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
REASON_ANNOTATION = "mlops/retrain-reason"

# Extra time on top of a Job's own activeDeadlineSeconds before we stop waiting for it.
WAIT_GRACE_SECONDS = 600
DEFAULT_WAIT_SECONDS = 6 * 3600
LOG_TAIL_LINES = 30
# Consecutive failed status reads tolerated while waiting for a Job.
MAX_READ_ERRORS = 5


class OrchestrationError(MlopsError):
    """A stage Job failed, timed out or could not be created; later stages did not run."""


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

        if isinstance(exc, ApiException):
            detail = f"HTTP {exc.status} {exc.reason}"
            if exc.status == 403:
                detail += " (the service account lacks the RBAC rights in deployments/rbac.yaml)"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return OrchestrationError(
            f"Kubernetes API call failed while {doing} in namespace {self.namespace}: {detail}."
        )

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
) -> list[StageRun]:
    """Run ``stages`` for ``as_of`` (default: today in New York) as Jobs, in order.

    Each stage's Job is created only after the previous one completed; the first failure
    (or time-out) raises ``OrchestrationError`` and nothing after it is created. Every
    template is loaded and checked before the first Job is created. Then ``retrain``
    (the pipeline's rule on the database) decides whether the day's train Job runs too.
    """
    day = as_of or market_today()
    if closed := market_calendar.closed_reason(day):
        log.info("%s: no stage Job is created for it.", closed)
        return []
    jobs, folder = _open(api_client, namespace, templates_dir)
    bodies = [
        (stage, build_job(load_template(folder, stage), stage, day, jobs.namespace))
        for stage in stages
    ]
    log.info("Daily run for %s in namespace %s: %s", day, jobs.namespace, " -> ".join(stages))
    results: list[StageRun] = []
    for index, (stage, body) in enumerate(bodies):
        later = ", ".join(stages[index + 1 :]) or "none"
        results.append(_run_job(jobs, stage, body, day, later, rerun_failed, poll_seconds, sleep))
    if retrain is None:
        return results
    plan = retrain(day)
    if not plan.retrain:
        log.info("No training for %s: %s.", day, plan.reason)
        return results
    body = _train_job(jobs, folder, day, plan.reason)
    results.append(
        _run_job(jobs, TRAIN_STAGE, body, day, "none", rerun_failed, poll_seconds, sleep)
    )
    return results


def _run_job(
    jobs: Jobs,
    stage: str,
    body: dict[str, Any],
    day: date,
    later: str,
    rerun_failed: bool,
    poll_seconds: float,
    sleep: Callable[[float], None],
) -> StageRun:
    """Start the stage's Job for the day (unless it already succeeded) and wait for it."""
    name = body["metadata"]["name"]
    action = _start(jobs, body, rerun_failed, poll_seconds, sleep)
    if action == "already-succeeded":
        log.info("Stage %s: Job %s already succeeded for %s; not rerun.", stage, name, day)
        return StageRun(stage, name, action, "succeeded")
    log.info("Stage %s: waiting for Job %s (%s).", stage, name, action)
    state = _wait(jobs, name, _wait_seconds(body), poll_seconds, sleep)
    if state.phase == "failed":
        tail = jobs.log_tail(name)
        if tail:
            log.error("Last log lines of Job %s:\n%s", name, tail.rstrip())
        why = ": ".join(p for p in (state.reason, state.message) if p) or "failed"
        raise OrchestrationError(
            f"Stage {stage} failed for {day}: Job {name} {why}. Stages not started: "
            f"{later}. See `kubectl -n {jobs.namespace} logs job/{name}`; rerun the day "
            "with `mlops daily --rerun-failed`."
        )
    log.info("Stage %s: Job %s succeeded.", stage, name)
    return StageRun(stage, name, action, "succeeded")


def _train_job(jobs: Jobs, folder: Path, day: date, reason: str) -> dict[str, Any]:
    """The day's retraining Job, ``mlops-train-retrain-<yyyymmdd>``, from ``job-train.yaml``."""
    annotations = {REASON_ANNOTATION: reason[:1000]} if reason else None
    return build_job(
        load_template(folder, TRAIN_STAGE),
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
