"""What a kubelet gives a pod, for the tests that run the manifests' pods here: the
Secret as a user fills it in, each container's environment and Secret files, a Job's
pods, the platform's databases, roles, buckets and object-store users, and a kubeconfig
for a fake API server.

Shared by tests/k8s/test_manifest_run.py (pods as local processes) and
tests/docker/test_images.py (pods as containers).
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from .manifests import config_maps, containers, doc, pod_template, secret_template_keys

NAMESPACE = "mlops"


def filled_secret() -> dict[str, str]:
    """The Secret as a user would fill in the template's required keys (none optional)."""
    required, _ = secret_template_keys()
    return {key: f"test-{key.lower().replace('_', '-')}" for key in required}


def cpu_limit(container: dict[str, Any]) -> int:
    """``limits.cpu`` as the Downward API gives it with divisor 1: cores, rounded up."""
    value = str(container["resources"]["limits"]["cpu"])
    cores = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
    return math.ceil(cores)


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
        elif "resourceFieldRef" in ref:
            field = ref["resourceFieldRef"]
            assert field["resource"] == "limits.cpu" and str(field.get("divisor")) == "1"
            env[item["name"]] = str(cpu_limit(container))
        else:
            pytest.fail(f"unsupported env source {ref}")
    return {key: str(value) for key, value in env.items()}


def expand(value: str, variables: dict[str, str]) -> str:
    """``value`` with ``$(VAR)`` replaced as the kubelet does in a container's command and
    args: by the variable's value when the container has it, else left as it is; ``$$``
    is a literal ``$``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if value.startswith("$(", i) and (end := value.find(")", i + 2)) != -1:
            name = value[i + 2 : end]
            out.append(variables.get(name, value[i : end + 1]))
            i = end + 1
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def secret_files(volume: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """A Secret volume's files (relative path -> content), as the kubelet writes them."""
    spec = volume["secret"]
    items = spec.get("items") or [{"key": k, "path": k} for k in secret]
    files = {}
    for item in items:
        if item["key"] in secret:
            files[item["path"]] = secret[item["key"]]
        else:
            assert spec.get("optional") or item.get("optional"), f"Secret has no {item['key']}"
    return files


def write_volume(
    volume: dict[str, Any], folder: Path, secret: dict[str, str], rewrite: Callable[[str], str]
) -> None:
    """A ConfigMap or Secret volume as files in ``folder`` (endpoints rewritten)."""
    if "configMap" in volume:
        data = config_maps()[volume["configMap"]["name"]]
        items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        files = {item["path"]: data[item["key"]] for item in items}
        mode = 0o644
    else:
        files = secret_files(volume, secret)
        mode = 0o444
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rewrite(content))
        path.chmod(mode)


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


def drop_database_roles(postgres_server: Any, names: Iterable[str]) -> None:
    """Drop cluster-wide roles, and first whatever they were granted in any database."""
    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        names = [
            n
            for n in names
            if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": n}).first()
        ]
        databases = conn.execute(
            text("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate")
        ).scalars()
        databases = list(databases)
    admin.dispose()
    if not names:
        return
    for database in databases:
        engine = create_engine(postgres_server.url(database), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {', '.join(names)}"))
        engine.dispose()
    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
    admin.dispose()


def init_postgres(
    postgres_server: Any, secret: dict[str, str], workdir: Path, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """Run the ConfigMap's init script as the postgres image would, on a clean slate."""
    from mlops.db.roles import ROLES

    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in ("mlops", "mlflow"):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
    drop_database_roles(postgres_server, [*ROLES, "mlops", "mlflow"])
    statefulset = doc("StatefulSet", "mlops-postgres")
    (c,) = containers(statefulset)
    variables = {e["name"]: e.get("value") for e in c["env"]}
    volumes = {v["name"]: v for v in pod_template(statefulset)["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    secrets_dir = workdir / "postgres-secrets"
    write_volume(volumes[mounts[variables["POSTGRES_SECRETS_DIR"]]], secrets_dir, secret, str)
    script = workdir / "10-create-databases.sh"
    script.write_text(doc("ConfigMap", "mlops-postgres-init").body["data"][script.name])
    return subprocess.run(
        ["sh", str(script)],
        env={
            **env,
            "PATH": f"{postgres_server.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "PGHOST": postgres_server.host,
            "PGPORT": str(postgres_server.port),
            "POSTGRES_USER": variables["POSTGRES_USER"],
            "POSTGRES_SECRETS_DIR": str(secrets_dir),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def minio_users() -> dict[str, tuple[str, str]]:
    """The bucket Job's users: name -> (Secret key of its access key, of its secret key)."""
    spec = pod_template(doc("Job", "mlops-minio-buckets"))["spec"]
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    paths = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    names = sorted({path.split("/")[1] for path in paths if path.startswith("users/")})
    return {
        name: (paths[f"users/{name}/access-key"], paths[f"users/{name}/secret-key"])
        for name in names
    }


class IamS3:
    """moto's server in a process of its own, enforcing IAM policies once set up.

    MinIO cannot run here; moto can check every request against the policies of
    ``mlops-minio-policies`` (the AWS IAM language MinIO uses too). ``setup`` makes the
    buckets and one IAM user per MinIO user with its policy, puts their generated keys
    into the Secret, then turns enforcement on (moto's ``reset-auth``): from then on
    every request needs a user's key and its policy's permission.
    """

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        server = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail("moto's server did not start")
                time.sleep(0.1)

    def client(self, service: str, key: str = "setup", secret: str = "setup") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def setup(self, buckets: list[str], secret: dict[str, str]) -> dict[str, tuple[str, str]]:
        """Buckets, users and policies; returns name -> (access key, secret key)."""
        import requests

        s3, iam = self.client("s3"), self.client("iam")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        policies = config_maps()["mlops-minio-policies"]
        keys = {}
        for name, (access_name, secret_name) in minio_users().items():
            iam.create_user(UserName=name)
            document = policies[f"{name}.json"]
            arn = iam.create_policy(PolicyName=f"mlops-{name}", PolicyDocument=document)
            iam.attach_user_policy(UserName=name, PolicyArn=arn["Policy"]["Arn"])
            key = iam.create_access_key(UserName=name)["AccessKey"]
            secret[access_name] = key["AccessKeyId"]
            secret[secret_name] = key["SecretAccessKey"]
            keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])
        answer = requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
        assert answer.json()["status"] == "ok", answer.text
        return keys

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def policy_document(name: str) -> dict[str, Any]:
    return json.loads(config_maps()["mlops-minio-policies"][f"{name}.json"])


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
