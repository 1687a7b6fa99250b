"""What a kubelet gives a pod, for the tests that run the manifests' pods here: the
Secret as a user fills it in, each container's environment, a Job's pods, the platform's
databases and buckets, and a kubeconfig for a fake API server.

Shared by tests/k8s/test_manifest_run.py (pods as local processes) and
tests/docker/test_images.py (pods as containers).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from .manifests import config_maps, containers, doc, secret_template_keys

NAMESPACE = "mlops"


def filled_secret() -> dict[str, str]:
    """The Secret as a user would fill in the template's required keys (none optional)."""
    required, _ = secret_template_keys()
    values = {key: f"test-{key.lower().replace('_', '-')}" for key in required}
    values.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return values


def container_env(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """The container's environment from its envFrom and env, as the kubelet resolves it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps()[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            assert "$(" not in item["value"], "no $(VAR) expansion here"
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[item["name"]] = config_maps()[key["name"]][key["key"]]
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]["key"]
            if key in secret:
                env[item["name"]] = secret[key]
            else:
                assert ref["secretKeyRef"].get("optional"), f"Secret has no {key}"
        elif "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "metadata.namespace"
            env[item["name"]] = NAMESPACE
        else:
            pytest.fail(f"unsupported env source {ref}")
    return {key: str(value) for key, value in env.items()}


def run_job_pods(
    job: dict[str, Any],
    name: str,
    run_pod: Callable[[dict[str, Any], str, dict[str, str]], subprocess.CompletedProcess],
) -> tuple[int, str]:
    """All pods of a Job (an Indexed one: one per index, ``parallelism`` at a time).

    ``run_pod(template, pod_name, extra_env)`` runs one pod; returns the worst exit code
    and the pods' output, each line block prefixed with its pod.
    """
    spec = job["spec"] if "template" in job["spec"] else job["spec"]["jobTemplate"]["spec"]
    indexed = spec.get("completionMode") == "Indexed"

    def one(index: int) -> subprocess.CompletedProcess:
        extra = {"JOB_COMPLETION_INDEX": str(index)} if indexed else {}
        return run_pod(spec["template"], f"{name}-{index}", extra)

    with ThreadPoolExecutor(max_workers=spec.get("parallelism", 1)) as pool:
        results = list(pool.map(one, range(spec.get("completions", 1))))
    code = max(r.returncode for r in results)
    log = "".join(f"[{name}-{i}] {r.stdout}{r.stderr}" for i, r in enumerate(results))
    return code, log


def init_postgres(
    postgres_server: Any, secret: dict[str, str], workdir: Path, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """Run the ConfigMap's init script as the postgres image would, on a clean slate."""
    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in ("mlops", "mlflow"):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
    admin.dispose()
    (c,) = containers(doc("StatefulSet", "mlops-postgres"))
    user = {e["name"]: e for e in c["env"]}["POSTGRES_USER"]["value"]
    script = workdir / "10-create-databases.sh"
    script.write_text(doc("ConfigMap", "mlops-postgres-init").body["data"][script.name])
    return subprocess.run(
        ["sh", str(script)],
        env={
            **env,
            "PATH": f"{postgres_server.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "PGHOST": postgres_server.host,
            "PGPORT": str(postgres_server.port),
            "POSTGRES_USER": user,
            "POSTGRES_MLOPS_PASSWORD": secret["POSTGRES_MLOPS_PASSWORD"],
            "POSTGRES_MLFLOW_PASSWORD": secret["POSTGRES_MLFLOW_PASSWORD"],
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_buckets(s3_endpoint: str, buckets: list[str]) -> None:
    """The buckets the MinIO Job would create (its `mc` image cannot run here)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)


def write_kubeconfig(path: Path, url: str) -> Path:
    """A kubeconfig pointing at a (fake) API server."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": url}}],
                "users": [{"name": "orchestrator", "user": {"token": "local"}}],
                "contexts": [
                    {"name": "local", "context": {"cluster": "local", "user": "orchestrator"}}
                ],
                "current-context": "local",
            }
        )
    )
    return path
