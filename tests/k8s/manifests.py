"""Reading the Kubernetes manifests, the Dockerfile and the scripts for the k8s tests."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
CONFIG_MAPS = ROOT / "config-maps"
DOCKERFILE = ROOT / "services" / "Dockerfile"
BUILD_SCRIPT = ROOT / "build_docker_images.sh"
FORWARD_SCRIPT = ROOT / "forward_ports.sh"
SECRETS_TEMPLATE = CONFIG_MAPS / "secrets.env.example"
MODEL_CONFIGS = ROOT / "services" / "mlops" / "resources" / "models"

NAMESPACE = "mlops"
# One Secret per identity: mlops-secrets-<identity> (create_secrets.sh makes them).
SECRET_PREFIX = "mlops-secrets-"
SECRETS_SCRIPT = ROOT / "create_secrets.sh"
PIPELINE_CONFIG = "mlops-pipeline-config"
UID = 10001

# Environment variables set on mlops containers that are not pipeline settings, and why.
NON_SETTING_ENV = {
    "PGUSER": "libpq reads the pod's database role from it; DATABASE_URL names none",
    "PGPASSWORD": "libpq reads the database password from it; DATABASE_URL has none",
    "MLFLOW_TRACKING_USERNAME": "the MLflow client's basic-auth user",
    "MLFLOW_TRACKING_PASSWORD": "the MLflow client's basic-auth password",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false: artifacts through the tracking server",
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false: artifacts through the tracking server",
    "DB_ROLE_PASSWORDS_DIR": "mlops migrate: the per-purpose roles' password files",
    "MLFLOW_DATABASE_URL": "mlops migrate: MLflow's database as its owner (backup's grants)",
    "MLFLOW_DATABASE_PASSWORD": "mlops migrate: the password of MLflow's database owner",
    "OMP_NUM_THREADS": "OpenMP threads (torch, BLAS, Arrow) = the CPU limit",
    "MKL_NUM_THREADS": "MKL threads = the CPU limit",
    "OPENBLAS_NUM_THREADS": "OpenBLAS threads = the CPU limit",
    "POD_NAMESPACE": "mlops daily / mlops requests process: the namespace to create Jobs in",
    "JOB_TEMPLATES_DIR": "mlops daily / mlops requests process: where job-<stage>.yaml are",
    "TRAINING_RUNNER": "retrain / monitoring requests: kubernetes (a Job) or local (a process)",
    "WALKFORWARD_FROM": "the walk-forward Jobs: --from, expanded into their args",
    "WALKFORWARD_TO": "the walk-forward Jobs: --to, expanded into their args",
    "WALKFORWARD_RETRAIN_EVERY": "the walk-forward Jobs: --retrain-every, expanded into args",
    "WALKFORWARD_WINDOW": "the walk-forward Jobs: --window, expanded into their args",
    "WALKFORWARD_MODELS": "the walk-forward Jobs: --models, expanded into their args",
    # A setting once the dashboard reads it (settings.dashboard_token); either way allowed.
}

POD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet", "ReplicaSet", "Pod"}


@dataclass(frozen=True)
class Doc:
    """One object of a manifest file."""

    path: Path
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def rel(self) -> str:
        return f"{self.path.relative_to(ROOT)}#{self.index} {self.kind}/{self.name}"

    def __str__(self) -> str:
        return self.rel


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# What a retry cannot fix: the mlops CLI's exit codes for a setting, the data, the model or
# registry, the broker, orders not placed (mlops.errors; 6-10, infrastructure, and 11,
# already running, are retried).
FINAL_EXIT_CODES = [2, 3, 4, 5, 12]


PERSISTENT = DEPLOYMENTS / "persistent"  # the namespace and MinIO's claim: applied once


def manifest_files() -> list[Path]:
    return (
        sorted(DEPLOYMENTS.glob("*.yaml"))
        + sorted(PERSISTENT.glob("*.yaml"))
        + sorted(CONFIG_MAPS.glob("*.yaml"))
    )


@cache
def docs_of(path: Path) -> tuple[Doc, ...]:
    bodies = [b for b in yaml.safe_load_all(path.read_text()) if b is not None]
    return tuple(Doc(path, i, b) for i, b in enumerate(bodies))


def all_docs() -> list[Doc]:
    return [doc for path in manifest_files() for doc in docs_of(path)]


def docs(kind: str) -> list[Doc]:
    return [doc for doc in all_docs() if doc.kind == kind]


def doc(kind: str, name: str) -> Doc:
    found = [d for d in docs(kind) if d.name == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_template(doc: Doc) -> dict[str, Any]:
    """The pod template (metadata + spec) of a workload."""
    spec = doc.body["spec"]
    if doc.kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]
    if doc.kind == "Pod":
        return {"metadata": doc.body["metadata"], "spec": spec}
    return spec["template"]


def job_spec(doc: Doc) -> dict[str, Any]:
    return doc.body["spec"]["jobTemplate"]["spec"] if doc.kind == "CronJob" else doc.body["spec"]


def workloads() -> list[Doc]:
    return [d for d in all_docs() if d.kind in POD_KINDS]


def containers(doc: Doc) -> list[dict[str, Any]]:
    spec = pod_template(doc)["spec"]
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def mlops_containers() -> Iterator[tuple[Doc, dict[str, Any]]]:
    """Containers running an mlops image other than the MLflow server."""
    for d in workloads():
        for c in containers(d):
            name = image_name(c["image"])
            if name.startswith("mlops-") and name != "mlops-mlflow":
                yield d, c


def image_name(image: str) -> str:
    """``repo/name:tag@digest`` -> ``repo/name``."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    if ":" in last:
        return without_digest[: -(len(last) - last.index(":"))]
    return without_digest


def image_tag(image: str) -> str:
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def build_script_images() -> list[str]:
    match = re.search(r"^ALL_IMAGES=\(([^)]*)\)", BUILD_SCRIPT.read_text(), re.M)
    assert match, "build_docker_images.sh must define ALL_IMAGES=(...)"
    return match.group(1).split()


@dataclass(frozen=True)
class Stage:
    name: str
    base: str
    lines: tuple[str, ...]

    def instruction(self, keyword: str) -> list[str]:
        return [line for line in self.lines if line.split(maxsplit=1)[0].upper() == keyword]


def dockerfile_stages() -> dict[str, Stage]:
    """Build stages by name, with their instructions (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages: dict[str, Stage] = {}
    current: tuple[str, str] | None = None
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.I)
        if match:
            if current:
                stages[current[1]] = Stage(current[1], current[0], tuple(lines))
            current, lines = (match.group(1), match.group(2)), []
        elif current:
            lines.append(line)
    if current:
        stages[current[1]] = Stage(current[1], current[0], tuple(lines))
    return stages


def secret_template_keys() -> tuple[set[str], set[str]]:
    """Keys of secrets.env.example: (set ones, optional ones commented out as ``# KEY=``)."""
    required, optional = set(), set()
    for line in SECRETS_TEMPLATE.read_text().splitlines():
        match = re.match(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            (optional if match.group(1) else required).add(match.group(2))
    return required, optional


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_key(env: dict[str, Any]) -> str | None:
    """The Secret key an env entry reads, if any."""
    return ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("key")


def secret_volume_items(doc: Doc) -> dict[str, str]:
    """Secret volumes of a workload: file path -> Secret key, over all its volumes."""
    items = {}
    for volume in pod_template(doc)["spec"].get("volumes", []):
        if "secret" in volume:
            for item in volume["secret"].get("items", []):
                items[item["path"]] = item["key"]
    return items


def secret_template_values() -> dict[str, str]:
    values = {}
    for line in SECRETS_TEMPLATE.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def settings_aliases() -> set[str]:
    from mlops.settings import Settings

    return {info.alias for info in Settings.model_fields.values() if info.alias}


def config_maps() -> dict[str, dict[str, str]]:
    """Every ConfigMap in deployments/ and config-maps/: name -> data."""
    return {d.name: dict(d.body.get("data") or {}) for d in docs("ConfigMap")}


def tool(name: str, env_var: str, *extra_candidates: Path) -> str | None:
    """A command-line tool: $env_var, next to this Python, the extra places, or PATH."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    candidates = [Path(sys.executable).parent / name, *extra_candidates]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)
