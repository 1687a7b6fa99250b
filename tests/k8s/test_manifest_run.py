"""A manifest-driven local run: the manifests' own commands, as processes, in schedule order.

Every Job, CronJob and Deployment container below is run from what ``deployments/`` and
``config-maps/`` say: its args after the image's ENTRYPOINT (or its command), its
environment (the Dockerfile's ENV, ``envFrom`` the pipeline ConfigMap, ``env`` values,
ConfigMap and Secret key references, the pod namespace, the CPU limit), its ConfigMap and
Secret volumes as files and its emptyDirs as folders. Only the endpoints are pointed at
servers on loopback - the session's PostgreSQL, moto's S3 over HTTP and an MLflow server
started from ``deployments/mlflow.yaml`` - and ports at free ones.

Every pod runs with its own identities, as in the cluster: its Postgres role (created by
``mlops migrate`` from the Secret's files, with only its grants), its MinIO user and
policy (moto enforces the policies of ``mlops-minio-policies`` here: the bucket Job's
``mc`` image cannot run, so its users and policies are made in moto's IAM), and its
MLflow user behind basic auth (the users Job runs for real). The test Postgres trusts
every local connection, so passwords are not checked; grants are.

Order: migrate, data prep (the Indexed Job's pods in parallel), train, batch-infer, trade,
monitor (by hand, as docs/kubernetes.md does), then serving and the dashboard until their
probes pass, then the daily CronJob's ``mlops daily`` against a fake Kubernetes API that
runs each Job it creates from its manifest the same way, then the walk-forward's Indexed
Job (its pods in parallel, ``$(VAR)`` in their args expanded from their environment as the
kubelet does): every pod plans as many points as its completions, exactly one finalizes,
nothing is in sample, and the outputs are in the store and MLflow. Manifests and code
cannot drift apart without this test failing.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from mlops.db.migrate import head_revision

from .fake_kube import FakeKube
from .manifests import (
    PIPELINE_CONFIG,
    config_maps,
    containers,
    doc,
    dockerfile_stages,
    job_spec,
    pod_template,
)
from .pods import (
    IamS3,
    container_env,
    expand,
    filled_secret,
    init_postgres,
    run_job_pods,
    write_kubeconfig,
    write_volume,
)

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
FIRST_DAY = "2017-05-31"  # the by-hand Jobs' day (job-data-prep.yaml)
DAILY_DAY = "2017-06-01"  # the day the CronJob replays


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _image_env(image: str) -> dict[str, str]:
    """The ENV an image has: the Dockerfile's python stage's, then its own target's."""
    stages = dockerfile_stages()
    target = image.split(":")[0].removeprefix("mlops-")
    env: dict[str, str] = {}
    for stage in ("python", target):
        for line in stages[stage].instruction("ENV") if stage in stages else []:
            for pair in shlex.split(line.split(maxsplit=1)[1]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


class LocalPod:
    """One pod of a pod template, run as local processes."""

    def __init__(self, cluster: LocalCluster, template: dict[str, Any], name: str) -> None:
        self.cluster = cluster
        self.spec = template["spec"]
        self.root = cluster.root / name
        self.mounts: list[tuple[str, Path]] = []
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        (self.container,) = self.spec["containers"]
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            local = self.root / "volumes" / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume or "secret" in volume:
                write_volume(volume, local, cluster.secret, self._endpoints)
            else:
                assert "emptyDir" in volume, f"{name}: volume {mount['name']} cannot run here"
            self.mounts.append((mount["mountPath"], local))
        self.mounts.sort(key=lambda m: len(m[0]), reverse=True)

    def _endpoints(self, value: str) -> str:
        for name, address in self.cluster.hosts.items():
            value = value.replace(name, address)
        return value

    def _local(self, value: str) -> str:
        for mount_path, local in self.mounts:
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(local) + value[len(mount_path) :]
        return self._endpoints(value)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **_image_env(self.container["image"]),
            **container_env(self.container, self.cluster.secret),
        }
        env = {key: self._local(str(value)) for key, value in env.items()}
        tmp = self._local("/tmp")
        return {**self.cluster.base_env, **env, "TMPDIR": tmp, **extra}

    def argv(self, ports: dict[int, int] | None = None, **extra: str) -> list[str]:
        image = self.container["image"].split(":")[0]
        entrypoint = [str(VENV_BIN / ("mlflow" if image == "mlops-mlflow" else "mlops"))]
        if self.container.get("command"):
            python = {"python3": sys.executable, "python": sys.executable}
            entrypoint = [python.get(c, self._local(c)) for c in self.container["command"]]
        # $(VAR) from the container's environment, as the kubelet expands it (an Indexed
        # Job's JOB_COMPLETION_INDEX among the extra variables).
        variables = {**container_env(self.container, self.cluster.secret), **extra}
        args = [expand(arg, variables) for arg in self.container.get("args") or []]
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg.startswith("--host=") or (i and args[i - 1] == "--host"):
                arg = "--host=" + LOOPBACK if arg.startswith("--host=") else LOOPBACK
            elif ports and (arg.startswith("--port=") or (i and args[i - 1] == "--port")):
                number = int(arg.split("=", 1)[-1])
                arg = f"--port={ports[number]}" if arg.startswith("--port=") else str(ports[number])
            out.append(self._local(arg))
        return [*entrypoint, *out]

    def run(self, timeout: float = 900, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(**extra),
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def start(self, ports: dict[int, int], log: Path) -> subprocess.Popen:
        with log.open("w") as out:
            return subprocess.Popen(
                self.argv(ports),
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )


class LocalCluster:
    def __init__(self, root: Path, base_env: dict[str, str], hosts: dict[str, str]) -> None:
        self.root = root
        self.base_env = base_env
        self.hosts = hosts
        self.secret = filled_secret()
        self.count = 0
        self.lock = threading.Lock()

    def pod(self, template: dict[str, Any], name: str) -> LocalPod:
        with self.lock:
            self.count += 1
            return LocalPod(self, template, f"{self.count:02d}-{name}")

    def run_job(self, job: dict[str, Any], name: str) -> tuple[int, str]:
        """All pods of a Job, as local processes."""
        return run_job_pods(
            job, name, lambda template, pod, extra: self.pod(template, pod).run(**extra)
        )


def _result(stdout: str) -> Any:
    """The stage's result: the last JSON document on stdout, after its JSON log lines."""
    start = stdout.rfind("\n{\n")
    if start < 0:
        start = stdout.rfind("\n[\n")
    return json.loads(stdout[start + 1 :] if start >= 0 else stdout)


def _ok(result: subprocess.CompletedProcess, what: str) -> str:
    assert result.returncode == 0, (
        f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the process exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer 200 within {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _denied(call: Any) -> str:
    """What a call that least privilege forbids raises (it must raise)."""
    try:
        call()
    except Exception as exc:
        return str(exc)
    pytest.fail("a call its identity must not be allowed to make succeeded")


def test_the_manifests_run_the_pipeline_in_schedule_order(
    postgres_server, subprocess_env, tmp_path
) -> None:
    mlflow_port = _free_port()
    s3 = IamS3()
    hosts = {
        "mlops-postgres:5432": f"{postgres_server.host}:{postgres_server.port}",
        "mlops-minio:9000": s3.endpoint.removeprefix("http://"),
        "mlops-mlflow:5000": f"{LOOPBACK}:{mlflow_port}",
    }
    base_env = subprocess_env()
    base_env["PATH"] = f"{VENV_BIN}:{base_env.get('PATH', '/usr/bin:/bin')}"
    cluster = LocalCluster(tmp_path, base_env, hosts)
    logs = tmp_path / "logs"
    logs.mkdir()
    # The Kubernetes API for every pod: `mlops daily` creates the day's Jobs and the fake
    # runs each from its manifest; when a retrain request is open after the day's stages,
    # `mlops daily` also creates the day's training Job, which is recorded here but not run
    # (training is covered above).

    def execute(job: dict) -> tuple[int, str]:
        name = job["metadata"]["name"]
        if "-retrain-" in name:
            return 0, "retraining Job recorded"
        return cluster.run_job(job, name)

    kube = FakeKube(executor=execute).start()
    base_env["KUBECONFIG"] = str(write_kubeconfig(tmp_path / "kubeconfig", kube.url))
    servers: list[subprocess.Popen] = []
    try:
        # Platform: databases by the init script; buckets, MinIO users and policies (moto
        # enforces them from here on); the MLflow server of mlflow.yaml, then its users Job.
        _ok(init_postgres(postgres_server, cluster.secret, tmp_path, base_env), "Postgres init")
        bucket_env = cluster.pod(pod_template(doc("Job", "mlops-minio-buckets")), "buckets").env()
        buckets = [bucket_env["S3_BUCKET"], bucket_env["MLFLOW_BUCKET"]]
        assert buckets == [config_maps()[PIPELINE_CONFIG]["S3_BUCKET"], "mlflow"]
        minio_keys = s3.setup(buckets, cluster.secret)
        mlflow_doc = doc("Deployment", "mlops-mlflow")
        mlflow_pod = cluster.pod(pod_template(mlflow_doc), "mlflow")
        (mlflow_container,) = containers(mlflow_doc)
        probe = mlflow_container["readinessProbe"]["httpGet"]["path"]
        mlflow = mlflow_pod.start({5000: mlflow_port}, logs / "mlflow.log")
        servers.append(mlflow)
        _wait_http(f"http://{LOOPBACK}:{mlflow_port}{probe}", mlflow, logs / "mlflow.log")
        users = cluster.pod(pod_template(doc("Job", "mlops-mlflow-users")), "mlflow-users")
        out = _ok(users.run(timeout=300), "job mlops-mlflow-users")
        assert (
            "MLflow users ready: mlops-batch-infer, mlops-dashboard, mlops-monitor, "
            "mlops-reader, mlops-serve, mlops-train."
        ) in out, out
        assert "mlops-train may edit them" in out and "mlops-dashboard may manage them" in out, out

        # Migrations (and the roles), then each stage by hand, as docs/kubernetes.md does.
        migrate = doc("Job", "mlops-migrate")
        out = _ok(cluster.pod(pod_template(migrate), "migrate").run(), "job-migrate")
        assert json.loads(out)["revision"] == head_revision(), out

        code, log = cluster.run_job(doc("Job", "mlops-data-prep").body, "data-prep")
        assert code == 0, log
        assert f"Dataset {FIRST_DAY}-" in log, "the shard completing the set publishes"

        # TRAIN_EPOCHS (a setting any pod's env may carry) on top of the manifest's env, as
        # DAILY_AS_OF below: the catalog's models stop early, the trading model's best
        # validation epoch comes within three on this sample at the ConfigMap's seed, so it is
        # the same model as at the config's 20 epochs, in a fraction of the time.
        train = cluster.pod(pod_template(doc("Job", "mlops-train")), "train")
        trained = _ok(train.run(TRAIN_EPOCHS="3"), "train")
        # `train --all`: one result per catalog model; the trading model's must be promoted.
        models = {m["model_name"]: m for m in _result(trained)["models"]}
        assert models["stock-close"]["promoted"], trained[-2000:]

        for stage in ("batch-infer", "trade", "monitor"):
            pod = cluster.pod(pod_template(doc("Job", f"mlops-{stage}")), stage)
            result = _result(_ok(pod.run(), f"job-{stage}"))
            if stage == "batch-infer":  # each catalog model's versions, five symbols each
                scored = {(s["model_name"], s["role"]) for s in result["scored"]}
                roles = {
                    n: "champion" if m["promoted"] else "challenger" for n, m in models.items()
                }
                assert scored == {
                    (n, role)
                    for n, role in roles.items()
                    if role == "champion" or models[n]["challenger"]
                }, result
                assert result["new_rows"] == 5 * len(scored)

        # Serving and the dashboard until their probes pass.
        for name in ("serve", "dashboard"):
            deployment = doc("Deployment", f"mlops-{name}")
            (c,) = containers(deployment)
            container_port = c["ports"][0]["containerPort"]
            port = _free_port()
            log_path = logs / f"{name}.log"
            proc = cluster.pod(pod_template(deployment), name).start(
                {container_port: port}, log_path
            )
            servers.append(proc)
            for kind in ("readinessProbe", "livenessProbe"):
                path = c[kind]["httpGet"]["path"]
                _wait_http(f"http://{LOOPBACK}:{port}{path}", proc, log_path)
            _stop(proc)

        # The daily CronJob: `mlops daily` creates the day's Jobs from the templates it
        # mounts; the fake API runs each Job from its manifest like the ones above.
        daily = doc("CronJob", "mlops-daily")
        pod = cluster.pod(job_spec(daily)["template"], "daily")
        result = pod.run(DAILY_AS_OF=DAILY_DAY, DAILY_POLL_SECONDS="0.2")
        assert result.returncode == 0, (
            f"mlops daily failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n"
            + "\n".join(kube.logs.values())[-4000:]
        )
        runs = _result(result.stdout)
        stamp = DAILY_DAY.replace("-", "")
        stages = ("data-prep", "batch-infer", "trade", "monitor")
        assert [r["job"] for r in runs[:4]] == [f"mlops-{s}-{stamp}" for s in stages]
        retrain_jobs = [r["job"] for r in runs[4:]]
        assert retrain_jobs in ([], [f"mlops-train-retrain-{stamp}"])
        assert all(r["outcome"] == "succeeded" for r in runs)
        assert kube.created() == [r["job"] for r in runs]

        # The walk-forward by hand, as docs/kubernetes.md runs it: its Indexed Job.
        walk_forward = _walk_forward(cluster, s3, minio_keys, mlflow_port)

        # Least privilege, the other way round: what the public-facing identities may not do.
        _check_denials(cluster, s3, minio_keys, postgres_server, mlflow_port)
    finally:
        kube.stop()
        for proc in servers:
            _stop(proc)
        s3.stop()

    engine = create_engine(postgres_server.url("mlops"))
    with engine.connect() as conn:
        statuses = conn.execute(text("SELECT DISTINCT status FROM stage_runs")).scalars().all()
        daily_stages = conn.execute(
            text("SELECT DISTINCT stage FROM stage_runs WHERE run_date = :day"), {"day": DAILY_DAY}
        ).scalars()
        daily_stages = set(daily_stages)
        predicted = conn.execute(
            text("SELECT count(*) FROM predictions WHERE model_name = 'stock-close'")
        ).scalar_one()
        shadow = conn.execute(
            text("SELECT count(DISTINCT model_name) FROM predictions WHERE role = 'champion'")
        ).scalar_one()
        requested = conn.execute(text("SELECT requested_date FROM retrain_requests")).scalars()
        requested = {d.strftime("%Y%m%d") for d in requested}
        walk_forwards = conn.execute(
            text("SELECT run_key, status, summary_key FROM walkforward_runs")
        ).all()
    engine.dispose()
    # One walk-forward, finished, its summary where the finalizing pod said.
    assert [tuple(row) for row in walk_forwards] == [
        (walk_forward["run_key"], "succeeded", walk_forward["keys"]["summary"])
    ]
    # The daily run trained exactly when a retrain request was open (none was answered:
    # the recorded training Job did not run).
    assert bool(retrain_jobs) == bool(requested)
    assert all(day <= stamp for day in requested)
    assert statuses == ["succeeded"]
    assert daily_stages == {"data-prep", "batch-infer", "trade", "monitor"}
    assert predicted == 10, "5 symbols scored by hand on the first day, 5 by the daily run"
    assert shadow == 3, "each catalog model's champion is scored in shadow"
    assert not os.environ.get("KUBERNETES_SERVICE_HOST"), "ran against the fake API only"


@contextmanager
def _mlflow_as(user: str, password: str, port: int) -> Iterator[Any]:
    """An MLflow client of the server on ``port``, logged in as ``user``."""
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        uri = f"http://{LOOPBACK}:{port}"
        yield MlflowClient(uri, uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _walk_forward(cluster, s3, minio_keys, mlflow_port) -> dict[str, Any]:
    """The walk-forward's Indexed Job: one pod per index with the manifest's env and args
    (the options from the ConfigMap mlops-walk-forward, --point its JOB_COMPLETION_INDEX),
    ``parallelism`` at a time. Every pod plans the run the manifest's completions count,
    trains its own point, and exactly one finalizes. Returns the finalizing pod's result.
    """
    job = doc("Job", "mlops-walk-forward").body
    completions = job["spec"]["completions"]
    pods: dict[str, subprocess.CompletedProcess] = {}

    def run_pod(template: dict, name: str, extra: dict[str, str]) -> subprocess.CompletedProcess:
        # TRAIN_EPOCHS as for the train Job above: the same fit, in a fraction of the time.
        pods[name] = cluster.pod(template, name).run(TRAIN_EPOCHS="3", **extra)
        return pods[name]

    code, log = run_job_pods(job, "walk-forward", run_pod)
    assert code == 0, log[-6000:]
    results = [_result(pods[f"walk-forward-{i}"].stdout) for i in range(completions)]
    assert {r["points"] for r in results} == {completions}, (
        "completions must be the plan's retrain points for the ConfigMap's options"
    )
    (run_key,) = {r["run_key"] for r in results}
    assert [r["trained_points"] for r in results] == [[i] for i in range(completions)]
    statuses = sorted(r["status"] for r in results)
    assert statuses == ["finished"] + ["waiting"] * (completions - 1), "finalized exactly once"
    (final,) = [r for r in results if r["status"] == "finished"]
    options = config_maps()["mlops-walk-forward"]
    assert final["models"] == options["WALKFORWARD_MODELS"].split(",")
    window = (options["WALKFORWARD_FROM"], options["WALKFORWARD_TO"])
    assert (final["start"], final["end"]) == window
    summary = final["summary"]
    assert summary["in_sample_sessions"] == 0 == final["in_sample_sessions"], "out of sample"
    assert summary["sessions"] == final["sessions"] > 0

    # The outputs in the store, written as the train identity (walkforward/ in its policy).
    bucket = config_maps()[PIPELINE_CONFIG]["S3_BUCKET"]
    train = s3.client("s3", *minio_keys["train"])
    body = train.get_object(Bucket=bucket, Key=final["keys"]["summary"])["Body"].read()
    stored = json.loads(body)
    assert (stored["run_key"], stored["in_sample_sessions"]) == (run_key, 0)

    # MLflow: one parent run (the losing claim's deleted), a nested run per point and
    # model, in the walk-forward's own experiment; none of them a registry version.
    experiment = config_maps()[PIPELINE_CONFIG]["MLFLOW_EXPERIMENT"] + "-walk-forward"
    reader = ("mlops-reader", cluster.secret["MLFLOW_READER_PASSWORD"])
    with _mlflow_as(*reader, mlflow_port) as client:
        found = client.get_experiment_by_name(experiment)
        assert found is not None, experiment
        runs = client.search_runs([found.experiment_id])
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert parent.info.run_id == final["mlflow_run_id"]
        assert parent.info.status == "FINISHED"
        nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(nested) == len(runs) - 1 == completions * len(final["models"])
        ids = {r.info.run_id for r in runs}
        for model in final["models"]:
            versions = client.search_model_versions(f"name='{model}'")
            assert not ids & {v.run_id for v in versions}, "walk-forward runs never register"
    return final


def _check_denials(cluster, s3, minio_keys, postgres_server, mlflow_port) -> None:
    from sqlalchemy.engine import make_url

    # The dashboard's MinIO user reads reports and nothing else; no one writes to MLflow's
    # bucket but MLflow; a stage cannot read another stage's prefix it does not need.
    bucket = config_maps()[PIPELINE_CONFIG]["S3_BUCKET"]
    dashboard = s3.client("s3", *minio_keys["dashboard"])
    assert "AccessDenied" in _denied(
        lambda: dashboard.put_object(Bucket=bucket, Key="reports/x.html", Body=b"x")
    )
    assert "AccessDenied" in _denied(
        lambda: dashboard.get_object(Bucket=bucket, Key="datasets/features/x")
    )
    for name, keys in minio_keys.items():
        if name != "mlflow":
            client = s3.client("s3", *keys)
            assert "AccessDenied" in _denied(
                lambda c=client: c.put_object(Bucket="mlflow", Key="artifacts/x", Body=b"x")
            ), name
    train = s3.client("s3", *minio_keys["train"])
    assert "AccessDenied" in _denied(
        lambda: train.put_object(Bucket=bucket, Key="datasets/features/x", Body=b"x")
    )

    # The serving API's MLflow user reads models but cannot change the registry.
    password = cluster.secret["MLFLOW_READER_PASSWORD"]
    with _mlflow_as("mlops-reader", password, mlflow_port) as reader:
        model = config_maps()[PIPELINE_CONFIG]["MODEL_NAME"]
        alias = config_maps()[PIPELINE_CONFIG]["CHAMPION_ALIAS"]
        champion = reader.get_model_version_by_alias(model, alias)
        assert "403" in _denied(lambda: reader.set_registered_model_alias(model, alias, "1"))
        assert "403" in _denied(
            lambda: reader.create_model_version(model, champion.source, champion.run_id)
        )

    # The read-only role and the dashboard's read everything and delete nothing.
    for role in ("mlops_reader", "mlops_dashboard"):
        url = make_url(postgres_server.url("mlops")).set(username=role)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() > 0

        def delete(engine=engine) -> None:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM predictions"))

        assert "permission denied" in _denied(delete), role
        engine.dispose()
