"""Only the controller creates pods: the RBAC of each rendered overlay lets the orchestrator's
account alone create Jobs (the dashboard nothing at all), and the ValidatingAdmissionPolicy
limits what that account may create. Its CEL expressions are evaluated here with cel-python
(celpy), as the API server evaluates them: variables in order, then every validation, on
the Jobs the orchestrator really builds (allowed) and on Jobs a stolen token would build
(refused, each by the rule meant for it)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops import orchestration
from mlops.action_requests import Request
from mlops.contracts.strategies import StrategySpec
from mlops.pipeline import StagePart

from . import kustomize
from .manifests import DEPLOYMENTS, ROOT, doc

ORCHESTRATOR = "system:serviceaccount:mlops:mlops-orchestrator"
DASHBOARD = "system:serviceaccount:mlops:mlops-dashboard"
OVERLAYS = ("minikube", "registry")
JOBS = ("batch", "jobs")


@cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize.render(ROOT / "overlays" / overlay))


def _of(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _may(objects: tuple[dict[str, Any], ...], user: str, verb: str, group: str, resource: str):
    """Whether RBAC lets ``user`` (a service account) do ``verb`` on ``resource``."""
    _, _, namespace, account = user.split(":")
    roles = {(r["kind"], r["metadata"]["name"]): r for r in _of(objects, "Role")}
    roles |= {(r["kind"], r["metadata"]["name"]): r for r in _of(objects, "ClusterRole")}
    for binding in _of(objects, "RoleBinding") + _of(objects, "ClusterRoleBinding"):
        subjects = binding.get("subjects") or []
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == account
            and s.get("namespace", namespace) == namespace
            for s in subjects
        ):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for rule in role.get("rules") or []:
            if (
                {group, "*"} & set(rule.get("apiGroups", []))
                and {resource, "*"} & set(rule.get("resources", []))
                and {verb, "*"} & set(rule.get("verbs", []))
            ):
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_orchestrator_may_create_jobs_and_the_dashboard_may_do_nothing(overlay: str):
    objects = _rendered(overlay)
    accounts = {
        f"system:serviceaccount:mlops:{a['metadata']['name']}"
        for a in _of(objects, "ServiceAccount")
    }
    creators = {a for a in accounts if _may(objects, a, "create", *JOBS)}
    assert creators == {ORCHESTRATOR}
    for verb in ("create", "get", "patch", "update", "delete", "list"):
        for group, resource in (JOBS, ("batch", "cronjobs"), ("", "pods"), ("", "secrets")):
            assert not _may(objects, DASHBOARD, verb, group, resource), (verb, resource)
    assert not any(_may(objects, a, "patch", "batch", "cronjobs") for a in accounts)
    assert not any(_may(objects, a, "create", "", "pods") for a in accounts)
    # The policy and its binding are rendered with the rest.
    (policy,) = _of(objects, "ValidatingAdmissionPolicy")
    (binding,) = _of(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"


# The policy, evaluated.


class Policy:
    """A ValidatingAdmissionPolicy's matchConditions, variables and validations, compiled."""

    def __init__(self, body: dict[str, Any]) -> None:
        import celpy

        self.env = celpy.Environment()
        spec = body["spec"]
        self.conditions = [self._compile(c["expression"]) for c in spec["matchConditions"]]
        self.variables = [(v["name"], self._compile(v["expression"])) for v in spec["variables"]]
        self.validations = [
            (v["message"], self._compile(v["expression"])) for v in spec["validations"]
        ]

    def _compile(self, expression: str) -> Callable[[dict[str, Any]], Any]:
        program = self.env.program(self.env.compile(expression))
        return program.evaluate

    def refusals(self, obj: dict[str, Any], user: str = ORCHESTRATOR, resource=JOBS) -> list[str]:
        """The messages of the validations ``obj`` fails (an error counts as a failure, as
        failurePolicy Fail makes it); empty when it is admitted or not matched."""
        import celpy
        from celpy import celtypes

        request = {
            "userInfo": {"username": user},
            "resource": {"group": resource[0], "version": "v1", "resource": resource[1]},
            "operation": "CREATE",
        }
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(obj),
            "request": celpy.json_to_cel(request),
        }
        if not all(bool(condition(activation)) for condition in self.conditions):
            return []
        variables: dict[Any, Any] = {}
        for name, evaluate in self.variables:
            activation["variables"] = celtypes.MapType(variables)
            try:
                variables[celtypes.StringType(name)] = evaluate(activation)
            except celpy.CELEvalError as exc:  # evaluated lazily by the API server
                variables[celtypes.StringType(name)] = exc
        activation["variables"] = celtypes.MapType(variables)
        failed = []
        for message, evaluate in self.validations:
            try:
                result = evaluate(activation)
            except celpy.CELEvalError:
                result = False
            if not isinstance(result, celtypes.BoolType) or not result:
                failed.append(message)
        return failed


@cache
def _policy(overlay: str = "minikube") -> Policy:
    (body,) = _of(_rendered(overlay), "ValidatingAdmissionPolicy")
    return Policy(body)


def _templates(overlay: str) -> dict[str, dict[str, Any]]:
    """The Job templates the orchestrator of ``overlay`` reads (its ConfigMap)."""
    (config,) = [
        o
        for o in _of(_rendered(overlay), "ConfigMap")
        if o["metadata"]["name"] == "mlops-job-templates"
    ]
    return {
        key.removeprefix("job-").removesuffix(".yaml"): yaml.safe_load(text)
        for key, text in config["data"].items()
    }


def _request(kind: str, model: str | None = None) -> Request:
    return Request(3, kind, model, "dashboard:ada", "r", "kubernetes", "queued", datetime.now(UTC))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_job_the_orchestrator_builds_is_admitted(overlay: str, tmp_path) -> None:
    policy = _policy(overlay)
    day = datetime(2024, 1, 5).date()
    for stage, template in _templates(overlay).items():
        (tmp_path / f"job-{stage}.yaml").write_text(yaml.safe_dump(template))
    built = [
        orchestration.build_job(template, stage, day, "mlops")
        for stage, template in _templates(overlay).items()
    ]
    built += [
        orchestration.build_request_job(tmp_path, _request("retrain", "stock-close"), "mlops"),
        orchestration.build_request_job(tmp_path, _request("monitor"), "mlops"),
    ]
    assert len(built) == 7
    # A strategy with its own account: its trade Job mounts that Secret (mlops-alpaca-*).
    red = StrategySpec(
        name="red", credentials=Path("/etc/mlops/alpaca/red"), secret="mlops-alpaca-red"
    )
    part = StagePart("trade", "red")
    red_job = orchestration._part_job(tmp_path, part, day, "mlops", {"red": red}, False)
    mounted = [v.get("secret", {}).get("secretName") for v in _pod(red_job)["volumes"]]
    assert "mlops-alpaca-red" in mounted
    for job in [*built, red_job]:
        assert policy.refusals(job) == [], job["metadata"]["name"]
    # The same Secret in a Job that may not reach external APIs (train) is refused.
    stolen = _train_job()
    _pod(stolen)["volumes"].append({"name": "a", "secret": {"secretName": "mlops-alpaca-red"}})
    assert policy.refusals(stolen), "an account Secret outside a trade Job"


def _train_job() -> dict[str, Any]:
    return orchestration.build_request_job(DEPLOYMENTS, _request("retrain", "stock-close"), "mlops")


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    job = copy.deepcopy(_train_job())
    change(job)
    return job


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return _pod(job)["containers"][0]


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


# What a stolen token of the orchestrator would create, and the rule that refuses it.
ATTACKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "another image": (
        lambda j: _container(j).update(image="docker.io/attacker/miner:1"),
        "only the project's stage images",
    ),
    "a lookalike image": (
        lambda j: _container(j).update(image="mlops-train-evil:latest"),
        "only the project's stage images",
    ),
    "an init container of another image": (
        lambda j: _pod(j).update(initContainers=[{"name": "x", "image": "busybox:1"}]),
        "only the project's stage images",
    ),
    "a shell instead of mlops": (
        lambda j: _container(j).update(command=["python", "-c", "print(1)"]),
        "no command",
    ),
    "the orchestrator's own account": (
        lambda j: _pod(j).update(serviceAccountName="mlops-orchestrator"),
        "as the service account mlops-pipeline",
    ),
    "the default account": (
        lambda j: _pod(j).pop("serviceAccountName"),
        "as the service account mlops-pipeline",
    ),
    "the dashboard's Secret": (
        lambda j: _container(j)["env"].append(
            _secret_env("X", "mlops-secrets-dashboard", "DASHBOARD_TOKEN")
        ),
        "only the stage Secrets' keys",
    ),
    "the migrate Job's owner password": (
        lambda j: _container(j)["env"].append(
            _secret_env("X", "mlops-secrets-migrate", "POSTGRES_MLOPS_PASSWORD")
        ),
        "only the stage Secrets' keys",
    ),
    "a whole Secret in env": (
        lambda j: (
            _container(j)
            .setdefault("envFrom", [])
            .append({"secretRef": {"name": "mlops-secrets-train"}})
        ),
        "never a whole Secret",
    ),
    "a Secret volume of the MinIO root": (
        lambda j: _pod(j)["volumes"].append(
            {"name": "s", "secret": {"secretName": "mlops-secrets-minio"}}
        ),
        "only emptyDir, ConfigMap and stage Secret volumes",
    ),
    "a hostPath": (
        lambda j: _pod(j)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "only emptyDir, ConfigMap and stage Secret volumes",
    ),
    "the database's volume": (
        lambda j: _pod(j)["volumes"].append(
            {"name": "d", "persistentVolumeClaim": {"claimName": "data-mlops-postgres-0"}}
        ),
        "only emptyDir, ConfigMap and stage Secret volumes",
    ),
    "a projected token": (
        lambda j: _pod(j)["volumes"].append(
            {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
        ),
        "only emptyDir, ConfigMap and stage Secret volumes",
    ),
    "a pull secret of another identity": (
        lambda j: _pod(j).update(imagePullSecrets=[{"name": "mlops-secrets-orchestrator"}]),
        "pull images only with a stage Secret",
    ),
    "the host's network": (lambda j: _pod(j).update(hostNetwork=True), "no host namespace"),
    "the host's PIDs": (lambda j: _pod(j).update(hostPID=True), "no host namespace"),
    "a privileged container": (
        lambda j: _container(j)["securityContext"].update(privileged=True),
        "no privileged container",
    ),
    "privilege escalation": (
        lambda j: _container(j)["securityContext"].update(allowPrivilegeEscalation=True),
        "no privileged container",
    ),
    "the external egress label on training": (
        lambda j: j["spec"]["template"]["metadata"]["labels"].update(
            {"mlops/external-api-client": "true"}
        ),
        "Only the data-prep and trade Jobs may reach external APIs",
    ),
    "the Kubernetes API label": (
        lambda j: j["spec"]["template"]["metadata"]["labels"].update(
            {"mlops/kube-api-client": "true"}
        ),
        "no Job of the orchestrator the Kubernetes API",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_job_beyond_the_stage_jobs_is_refused_by_its_rule(attack: str) -> None:
    change, message = ATTACKS[attack]
    refused = _policy().refusals(_edit(change))
    assert len(refused) == 1 and message in refused[0], refused


def test_the_orchestrator_creates_nothing_but_jobs_and_others_are_not_matched() -> None:
    policy = _policy()
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": _pod(_train_job())}
    for obj, resource in ((config_map, ("", "configmaps")), (pod, ("", "pods"))):
        refused = policy.refusals(obj, resource=resource)
        assert refused == ["The orchestrator's service account may create Jobs only."]
    # The policy is about the orchestrator's account: another user's Job is not matched.
    attack = _edit(lambda j: _container(j).update(image="docker.io/attacker/miner:1"))
    assert policy.refusals(attack, user="system:serviceaccount:kube-system:job-controller") == []
    assert policy.refusals(attack, user="kubernetes-admin") == []


def test_the_registry_overlay_allows_its_registrys_images_only() -> None:
    registry = _policy("registry")
    local = _train_job()
    assert registry.refusals(local) != [], "mlops-train:latest is no image of the registry"
    pushed = copy.deepcopy(local)
    image = _templates("registry")["train"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.example.com/mlops/mlops-train:")
    _container(pushed)["image"] = image
    assert registry.refusals(pushed) == []
    digest = image.split(":")[0] + "@sha256:" + "a" * 64
    _container(pushed)["image"] = digest
    assert registry.refusals(pushed) == []


def test_the_policy_file_is_in_the_base_and_needs_kubernetes_1_30() -> None:
    policy = doc("ValidatingAdmissionPolicy", "mlops-orchestrator-creates-stage-jobs")
    assert policy.body["apiVersion"] == "admissionregistration.k8s.io/v1"
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "Older clusters" in text and "ValidatingAdmissionPolicy" in text
