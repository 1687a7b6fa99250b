"""The manifests in deployments/ and config-maps/: schema-valid, labelled, locked down."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from . import sync_configmaps
from .manifests import (
    DEPLOYMENTS,
    FINAL_EXIT_CODES,
    MODEL_CONFIGS,
    NAMESPACE,
    THREAD_ENV,
    UID,
    Doc,
    all_docs,
    containers,
    doc,
    docs,
    job_spec,
    manifest_files,
    pod_template,
    workloads,
)

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# Kinds newer than the oldest release the manifests support: validated from their release
# on (admission-policy.yaml; docs/kubernetes.md says what older clusters do instead).
INTRODUCED = {"ValidatingAdmissionPolicy": (1, 30), "ValidatingAdmissionPolicyBinding": (1, 30)}


def _ids(items: list[Doc]) -> list[str]:
    return [d.rel for d in items]


def test_manifests_exist() -> None:
    names = {p.name for p in manifest_files()}
    for expected in (
        "namespace.yaml",
        "minio.yaml",
        "postgres.yaml",
        "mlflow.yaml",
        "rbac.yaml",
        "admission-policy.yaml",
        "network-policies.yaml",
        "job-migrate.yaml",
        "job-data-prep.yaml",
        "job-train.yaml",
        "job-batch-infer.yaml",
        "job-trade.yaml",
        "job-monitor.yaml",
        "job-walk-forward-plan.yaml",
        "job-walk-forward.yaml",
        "job-walk-forward-finalize.yaml",
        "cronjob-daily.yaml",
        "cronjob-requests.yaml",
        "cronjob-train-weekly.yaml",
        "serve.yaml",
        "dashboard.yaml",
        "pipeline-config.yaml",
        "model-configs.yaml",
        "job-templates.yaml",
        "walk-forward.yaml",
    ):
        assert expected in names


# Schema validation.


def _kubernetes_version() -> str:
    from kubernetes_validate.utils import latest_version

    return latest_version()


def _supported_versions() -> list[str]:
    """Every Kubernetes minor release from 1.27 (CronJob timeZone, podFailurePolicy on by
    default) to the newest kubernetes-validate has schemas for."""
    from kubernetes_validate.utils import all_versions

    versions = {v for v in all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 27)}
    return sorted(versions, key=lambda v: tuple(map(int, v.split("."))))


def test_schemas_are_of_a_current_release() -> None:
    major, minor = (int(p) for p in _kubernetes_version().split(".")[:2])
    assert (major, minor) >= (1, 33), "update kubernetes-validate: its schemas are old"


def test_schemas_cover_every_supported_release() -> None:
    versions = _supported_versions()
    assert versions[0].startswith("1.27") and versions[-1] == _kubernetes_version()


def _as_schema_expects(body: dict, version: str) -> dict:
    """The OpenAPI schemas of 1.27 and 1.28 wrongly mark a pod failure policy rule's
    onPodConditions as required (the API server itself accepts a rule with onExitCodes
    alone, and refuses one with both; 1.29 fixed the schema): give those an empty list."""
    if tuple(map(int, version.split(".")[:2])) >= (1, 29) or body["kind"] not in ("Job", "CronJob"):
        return body
    body = copy.deepcopy(body)
    spec = body["spec"]["jobTemplate"]["spec"] if body["kind"] == "CronJob" else body["spec"]
    for rule in (spec.get("podFailurePolicy") or {}).get("rules", []):
        rule.setdefault("onPodConditions", [])
    return body


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_strictly(path) -> None:
    import kubernetes_validate

    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path.name} holds no object"
    for version, body in ((v, b) for v in _supported_versions() for b in documents):
        if tuple(map(int, version.split(".")[:2])) < INTRODUCED.get(body["kind"], (0, 0)):
            continue
        try:
            kubernetes_validate.validate(_as_schema_expects(body, version), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(
                f"{path.name}: {body['kind']}/{body['metadata'].get('name')} is invalid for "
                f"Kubernetes {version} at {where or '(root)'}: {exc.message}"
            )


@pytest.mark.parametrize("item", all_docs(), ids=_ids(all_docs()))
def test_labels_and_namespace(item: Doc) -> None:
    meta = item.body["metadata"]
    labels = meta.get("labels") or {}
    missing = [label for label in RECOMMENDED_LABELS if label not in labels]
    assert not missing, f"{item}: missing labels {missing}"
    assert labels["app.kubernetes.io/part-of"] == "mlops"
    assert labels["app.kubernetes.io/instance"] == "mlops"
    if item.kind not in CLUSTER_SCOPED:
        assert meta.get("namespace") == NAMESPACE, f"{item}: namespace must be {NAMESPACE}"
    if item.kind in {"Deployment", "StatefulSet", "Job", "CronJob"}:
        pod_labels = pod_template(item)["metadata"]["labels"]
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance"):
            assert pod_labels.get(label) == labels[label], f"{item}: pod label {label}"


def test_namespace_enforces_restricted_pod_security() -> None:
    labels = doc("Namespace", NAMESPACE).body["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# Every pod: resources and a locked-down security context.


@pytest.mark.parametrize("item", workloads(), ids=_ids(workloads()))
def test_pod_security(item: Doc) -> None:
    spec = pod_template(item)["spec"]
    pod = spec.get("securityContext") or {}
    assert pod.get("runAsNonRoot") is True, f"{item}: runAsNonRoot"
    assert pod.get("runAsUser") == UID, f"{item}: runAsUser {UID}"
    assert pod.get("runAsGroup") == UID, f"{item}: runAsGroup {UID}"
    assert pod.get("fsGroup") == UID, f"{item}: fsGroup {UID}"
    assert (pod.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{item}: seccomp"
    assert "automountServiceAccountToken" in spec, f"{item}: say whether a token is mounted"
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(item):
        where = f"{item} container {c['name']}"
        sc = c.get("securityContext") or {}
        assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
        assert sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert sc.get("privileged", False) is False, f"{where}: privileged"
        assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{where}: drop ALL"
        assert not (sc.get("capabilities") or {}).get("add"), f"{where}: adds capabilities"
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in (resources.get(kind) or {}), f"{where}: {kind}.{resource}"
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{where}: needs a writable /tmp (emptyDir)"
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"
        for volume in volumes.values():
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), f"{item}: emptyDir sizeLimit"
        assert (
            "command" not in c
            or not c["image"].startswith("mlops-")
            or (c["image"].startswith("mlops-mlflow:") and item.name == "mlops-mlflow-users")
        ), f"{where}: mlops images keep their ENTRYPOINT; set args only"


@pytest.mark.parametrize("item", workloads(), ids=_ids(workloads()))
def test_mlops_images_get_a_writable_home(item: Doc) -> None:
    for c in containers(item):
        if not c["image"].startswith("mlops-"):
            continue
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        assert "/home/mlops" in mounts, f"{item}: HOME (/home/mlops) must be an emptyDir"


# Jobs and CronJobs.


def _job_like() -> list[Doc]:
    return docs("Job") + docs("CronJob")


@pytest.mark.parametrize("item", _job_like(), ids=_ids(_job_like()))
def test_jobs_are_bounded(item: Doc) -> None:
    spec = job_spec(item)
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert isinstance(spec.get(key), int), f"{item}: {key} must be set"
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
    assert pod_template(item)["spec"]["restartPolicy"] in ("Never", "OnFailure")


@pytest.mark.parametrize("item", _job_like(), ids=_ids(_job_like()))
def test_every_job_has_a_pod_failure_policy(item: Doc) -> None:
    """No retry for what a retry cannot fix; disruptions do not count as failures."""
    spec = job_spec(item)
    assert pod_template(item)["spec"]["restartPolicy"] == "Never", "podFailurePolicy needs it"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }, f"{item}: an evicted or preempted pod is replaced without counting"
    (container,) = pod_template(item)["spec"]["containers"]  # init containers: retried
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert len(fail_job) == 1 and len(rules) == 2, item
    codes = fail_job[0]["onExitCodes"]
    assert codes["containerName"] == container["name"] and codes["operator"] == "In"
    retried = {7, 130, 137, 143}  # infrastructure, SIGINT, the OOM killer, SIGTERM
    assert not retried & set(codes["values"]), f"{item}: {codes['values']} must be retried"
    if container["image"].startswith("mlops-") and item.name != "mlops-mlflow-users":
        expected = [1, *FINAL_EXIT_CODES] if item.name == "mlops-daily" else FINAL_EXIT_CODES
        assert codes["values"] == expected, item
    else:  # the setup Jobs' scripts exit 2 for what is missing, 1 to be retried
        assert codes["values"] == [2], item


@pytest.mark.parametrize("item", workloads(), ids=_ids(workloads()))
def test_thread_pools_follow_the_cpu_limit(item: Doc) -> None:
    for c in containers(item):
        if not c["image"].startswith("mlops-") or c["image"].startswith("mlops-mlflow:"):
            continue
        env = {e["name"]: e for e in c.get("env", [])}
        for name in THREAD_ENV:
            ref = env[name]["valueFrom"]["resourceFieldRef"]
            assert ref == {"resource": "limits.cpu", "divisor": "1"}, f"{item}: {name}"
        assert "cpu" in c["resources"]["limits"]


@pytest.mark.parametrize("item", docs("CronJob"), ids=_ids(docs("CronJob")))
def test_cronjobs_never_overlap(item: Doc) -> None:
    spec = item.body["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec.get("startingDeadlineSeconds"), int)
    assert isinstance(spec.get("successfulJobsHistoryLimit"), int)
    assert isinstance(spec.get("failedJobsHistoryLimit"), int)
    assert spec.get("timeZone") == "America/New_York", "schedules follow New York's clock"
    assert len(spec["schedule"].split()) == 5


def test_daily_cronjob_runs_the_orchestrator_after_the_close_on_weekdays() -> None:
    daily = doc("CronJob", "mlops-daily")
    minute, hour, dom, month, dow = daily.body["spec"]["schedule"].split()
    assert (dom, month, dow) == ("*", "*", "1-5")
    assert (int(hour), int(minute)) >= (16, 15), "after the 16:00 close in New York"
    (c,) = containers(daily)
    assert c["args"] == ["daily", "--catch-up"]
    assert c["image"].startswith("mlops-orchestrator:")
    labels = pod_template(daily)["metadata"]["labels"]
    # It reads the retrain requests from Postgres and talks to the Kubernetes API (and
    # sends an alert when the day fails); it needs neither the store nor MLflow.
    clients = {k for k in labels if k.endswith("-client")}
    assert clients == {"mlops/postgres-client", "mlops/kube-api-client", "mlops/alert-client"}


def test_weekly_training_cronjob_runs_the_train_job_template() -> None:
    weekly = doc("CronJob", "mlops-train-weekly")
    dow = weekly.body["spec"]["schedule"].split()[4]
    assert dow in {"0", "6", "SAT", "SUN"}, "training on the weekend"
    train = doc("Job", "mlops-train")
    assert job_spec(weekly)["template"] == train.body["spec"]["template"]
    for key in ("backoffLimit", "activeDeadlineSeconds", "podFailurePolicy"):
        assert job_spec(weekly)[key] == train.body["spec"][key]


def test_data_prep_is_an_indexed_job_with_matching_shards() -> None:
    spec = doc("Job", "mlops-data-prep").body["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] >= 1 and 1 <= spec["parallelism"] <= spec["completions"]
    (c,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["DATA_PREP_SHARDS"] == str(spec["completions"]), (
        "DATA_PREP_SHARDS must equal completions: each index is one shard"
    )
    assert "JOB_COMPLETION_INDEX" not in env, "Kubernetes sets JOB_COMPLETION_INDEX itself"
    if spec["completions"] > 1:
        assert "--as-of" in c["args"], "with several shards every shard needs the same --as-of"


WALKFORWARD_OPTIONS = {
    "--from": "WALKFORWARD_FROM",
    "--to": "WALKFORWARD_TO",
    "--retrain-every": "WALKFORWARD_RETRAIN_EVERY",
    "--window": "WALKFORWARD_WINDOW",
    "--models": "WALKFORWARD_MODELS",
}


def test_walk_forward_is_an_indexed_job_of_one_point_per_index() -> None:
    spec = doc("Job", "mlops-walk-forward").body["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] >= 1 and 1 <= spec["parallelism"] <= spec["completions"]
    (c,) = spec["template"]["spec"]["containers"]
    assert c["args"][0] == "walk-forward" and c["image"].startswith("mlops-train:")
    assert c["args"][-2:] == ["--point", "$(JOB_COMPLETION_INDEX)"]
    env = {e["name"]: e for e in c["env"]}
    assert "JOB_COMPLETION_INDEX" not in env, "Kubernetes sets JOB_COMPLETION_INDEX itself"
    # Every option from the ConfigMap mlops-walk-forward, the same key in the environment.
    options = c["args"][1:-2]
    assert dict(zip(options[::2], options[1::2], strict=True)) == {
        option: f"$({key})" for option, key in WALKFORWARD_OPTIONS.items()
    }
    for key in WALKFORWARD_OPTIONS.values():
        ref = env[key]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": "mlops-walk-forward", "key": key}, key
        assert not ref.get("optional"), "a pod without an option must not start"


def test_walk_forward_points_train_as_the_train_job_does() -> None:
    """The same image, identities, resources, mounts and failure policy as training."""
    points = doc("Job", "mlops-walk-forward")
    train = doc("Job", "mlops-train")
    (c,), (t,) = containers(points), containers(train)
    for key in ("image", "imagePullPolicy", "envFrom", "resources", "securityContext"):
        assert c[key] == t[key], key
    assert c["volumeMounts"] == t["volumeMounts"]
    own = {e["name"] for e in c["env"]} - set(WALKFORWARD_OPTIONS.values())
    # Not the alerts' webhook: a walk-forward is an experiment, not the daily loop.
    alerting = [e for e in t["env"] if e["name"] != "ALERT_WEBHOOK_URL"]
    assert [e for e in c["env"] if e["name"] in own] == alerting
    for key in ("volumes", "securityContext", "serviceAccountName", "restartPolicy"):
        assert pod_template(points)["spec"][key] == pod_template(train)["spec"][key], key
    assert points.body["spec"]["podFailurePolicy"] == train.body["spec"]["podFailurePolicy"]


@pytest.mark.parametrize("step", ["plan", "finalize"])
def test_walk_forward_plan_and_finalize_run_the_points_pod_with_their_flag(step: str) -> None:
    """The plan and finalize Jobs: the Indexed Job's pod, with --plan or --finalize for
    --point, so all three read the same options into the same command."""
    points = doc("Job", "mlops-walk-forward")
    job = doc("Job", f"mlops-walk-forward-{step}")
    assert job.path == DEPLOYMENTS / f"job-walk-forward-{step}.yaml"
    spec = job.body["spec"]
    assert "completionMode" not in spec and "completions" not in spec
    template = copy.deepcopy(spec["template"])
    (c,) = template["spec"]["containers"]
    (p,) = containers(points)
    assert c["args"] == [*p["args"][:-2], f"--{step}"]
    c["args"] = p["args"]
    labels = template["metadata"]["labels"]
    assert labels == pod_template(points)["metadata"]["labels"]
    assert template == pod_template(points)
    assert spec["podFailurePolicy"] == points.body["spec"]["podFailurePolicy"]


def test_stage_jobs_are_one_per_stage() -> None:
    for stage in ("migrate", "data-prep", "train", "batch-infer", "trade", "monitor"):
        job = doc("Job", f"mlops-{stage}")
        assert job.path == DEPLOYMENTS / f"job-{stage}.yaml"
        (c,) = containers(job)
        assert c["args"][0] == stage
        assert c["image"].startswith(f"mlops-{stage}:")


# Deployments and StatefulSets: probes and persistence.


def _servers() -> list[Doc]:
    return docs("Deployment") + docs("StatefulSet")


@pytest.mark.parametrize("item", _servers(), ids=_ids(_servers()))
def test_servers_have_probes(item: Doc) -> None:
    for c in containers(item):
        assert c.get("readinessProbe"), f"{item}: readinessProbe"
        assert c.get("livenessProbe"), f"{item}: livenessProbe"


def test_serving_and_dashboard_probe_their_health_endpoints() -> None:
    (serve,) = containers(doc("Deployment", "mlops-serve"))
    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert serve["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert serve["ports"][0]["containerPort"] == 8080
    (dash,) = containers(doc("Deployment", "mlops-dashboard"))
    assert dash["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert dash["ports"][0]["containerPort"] == 8050


def test_state_is_persistent() -> None:
    postgres = doc("StatefulSet", "mlops-postgres").body["spec"]
    (claim,) = postgres["volumeClaimTemplates"]
    (c,) = postgres["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/postgresql/data"
    pgdata = {e["name"]: e.get("value") for e in c["env"]}["PGDATA"]
    assert pgdata.startswith("/var/lib/postgresql/data/"), "PGDATA in a subfolder of the volume"
    minio = doc("Deployment", "mlops-minio").body["spec"]["template"]["spec"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in minio["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["mlops-minio-data"]
    doc("PersistentVolumeClaim", "mlops-minio-data")


def test_postgres_init_creates_both_databases() -> None:
    script = doc("ConfigMap", "mlops-postgres-init").body["data"]["10-create-databases.sh"]
    for database in ("mlops", "mlflow"):
        assert re.search(rf"CREATE DATABASE {database} OWNER {database};", script)
    assert "PASSWORD :'" in script, "passwords as psql variables, never inline"
    assert "CREATE ROLE mlops LOGIN CREATEROLE" in script, "mlops migrate creates the roles"
    assert "REVOKE ALL ON DATABASE mlops FROM PUBLIC" in script


# ConfigMaps that copy repository files.


def test_model_configs_map_is_identical_to_the_packaged_catalog() -> None:
    data = doc("ConfigMap", "mlops-model-configs").body["data"]
    packaged = {p.name: p.read_text() for p in MODEL_CONFIGS.glob("*.yaml")}
    assert len(packaged) >= 3
    assert data == packaged, (
        "config-maps/model-configs.yaml differs from services/mlops/resources/models/; "
        "run: python tests/k8s/sync_configmaps.py"
    )


def test_job_templates_config_map_is_identical_to_the_stage_jobs() -> None:
    data = doc("ConfigMap", "mlops-job-templates").body["data"]
    assert set(data) == {f"job-{s}.yaml" for s in sync_configmaps.TEMPLATE_STAGES}
    for key, text in data.items():
        assert text == (DEPLOYMENTS / key).read_text(), (
            f"config-maps/job-templates.yaml: {key} differs from deployments/{key}; "
            "run: python tests/k8s/sync_configmaps.py"
        )


def test_generated_config_maps_are_exactly_what_the_script_writes() -> None:
    for path, text in sync_configmaps.render().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: run python tests/k8s/sync_configmaps.py"
        )
