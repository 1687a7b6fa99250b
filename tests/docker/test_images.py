"""The images, built for real and run as the manifests run them (opt-in, needs Docker).

Skipped unless ``MLOPS_DOCKER_TESTS=1``; then a missing Docker engine fails the test. Run:

    MLOPS_DOCKER_TESTS=1 .venv/bin/python -m pytest tests/docker -m docker -v -s

1. Build: every image with ``build_docker_images.sh`` (``MINIKUBE=0``: the local Docker
   engine; ``BUILD_NETWORK=host``), from ``BASE_IMAGE`` (default
   ``mlops-base-python:3.12``, made by ``scripts/make_base_image.sh`` when missing: no
   registry is needed) with ``TORCH_INDEX_URL`` (default PyPI here: the PyTorch CPU index
   is not reachable from this machine; the lock pins torch either way). Sizes are
   printed. ``MLOPS_DOCKER_BUILD=0`` skips the build and uses the images already tagged
   ``MLOPS_IMAGE_TAG`` (default ``check``).
2. ``--help`` in every image, as uid 10001 with a read-only root filesystem.
3. The pipeline, each container built from its manifest the way a kubelet would: the
   image (at the tag just built), command and args, ``envFrom``/``env`` (ConfigMaps, a
   dummy Secret, the pod namespace, the CPU limit), ConfigMap and Secret volumes as
   read-only bind mounts, emptyDirs as tmpfs,
   ``runAsUser``/``runAsGroup``/``fsGroup``, ``readOnlyRootFilesystem`` (``--read-only``),
   ``capabilities.drop: [ALL]``, ``allowPrivilegeEscalation: false``
   (``no-new-privileges``) and the resource limits (``--memory``, ``--cpus``). Every
   container uses the host network (``--network host``), never Docker's bridge; the
   servers it talks to listen on 127.0.0.1 only: the session's throwaway PostgreSQL
   (databases made by the ConfigMap's init script), moto's S3 server enforcing the MinIO
   users' policies (``pods.IamS3``), the MLflow server of ``deployments/mlflow.yaml`` run
   from the mlflow image behind basic auth (its users Job too), and a fake Kubernetes
   API. Only the endpoints (``mlops-postgres:5432`` ...) and listening ports are rewritten.
   Order: migrate, data prep for 2017-05-31 (the Indexed Job's two pods), train (the
   model is promoted), batch-infer, trade, monitor, serving and the dashboard until their
   probes pass, then the daily CronJob's ``mlops daily`` for 2017-06-01 in the
   orchestrator image against the fake API, which runs each Job it creates (data-prep,
   batch-infer, trade, monitor for that day) as containers the same way; a retraining Job
   ``mlops daily`` creates when a retrain request is open is recorded, not run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from k8s.fake_kube import FakeKube
from k8s.manifests import (
    BUILD_SCRIPT,
    ROOT,
    build_script_images,
    config_maps,
    containers,
    doc,
    image_name,
    job_spec,
    pod_template,
)
from k8s.pods import (
    IamS3,
    container_env,
    filled_secret,
    init_postgres,
    run_job_pods,
    write_kubeconfig,
    write_volume,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        os.environ.get("MLOPS_DOCKER_TESTS") != "1",
        reason="builds and runs the Docker images: set MLOPS_DOCKER_TESTS=1",
    ),
]

BASE_SCRIPT = ROOT / "scripts" / "make_base_image.sh"
DEFAULT_BASE = "mlops-base-python:3.12"
LOOPBACK = "127.0.0.1"
FIRST_DAY = "2017-05-31"
DAILY_DAY = "2017-06-01"
KUBECONFIG_PATH = "/etc/mlops/kube/config"
PYPI = "https://pypi.org/simple"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _run(argv: list[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def _docker_cli() -> str:
    """A docker CLI that builds with BuildKit: $DOCKER, else one with buildx, else a
    pre-23 client (those speak BuildKit themselves, e.g. Debian's docker.io 20.10)."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    seen = []
    for candidate in ("docker", "/usr/bin/docker"):
        path = shutil.which(candidate)
        if not path or path in seen:
            continue
        seen.append(path)
        if _run([path, "buildx", "version"]).returncode == 0:
            return path
        version = _run([path, "version", "--format", "{{.Client.Version}}"]).stdout.strip()
        if version and int(version.split(".")[0]) < 23:
            return path
    pytest.fail(
        "No docker CLI that can build with BuildKit (buildx plugin, or a client older "
        f"than 23) among {seen or ['docker']}: apt-get install -y docker.io, or set DOCKER.",
        pytrace=False,
    )


class Images:
    def __init__(self, docker: str, tag: str, log_dir: Path) -> None:
        self.docker = docker
        self.tag = tag
        self.log_dir = log_dir
        self.sizes: dict[str, int] = {}

    def ref(self, image: str) -> str:
        return f"{image_name(image)}:{self.tag}"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    docker = _docker_cli()
    info = _run([docker, "info", "--format", "{{.ServerVersion}}"])
    if info.returncode != 0:
        pytest.fail(
            f"The Docker engine does not answer ({info.stderr.strip()}): start it, e.g. "
            "`dockerd > /tmp/dockerd.log 2>&1 &`.",
            pytrace=False,
        )
    log_dir = tmp_path_factory.mktemp("docker-images")
    built = Images(docker, os.environ.get("MLOPS_IMAGE_TAG", "check"), log_dir)
    env = {**os.environ, "DOCKER": docker}
    if os.environ.get("MLOPS_DOCKER_BUILD", "1") != "0":
        base = os.environ.get("BASE_IMAGE", DEFAULT_BASE)
        if base == DEFAULT_BASE and _run([docker, "image", "inspect", base]).returncode != 0:
            made = _run(["bash", str(BASE_SCRIPT)], timeout=1800, env=env)
            assert made.returncode == 0, f"make_base_image.sh:\n{made.stdout}\n{made.stderr}"
        env.update(
            BASE_IMAGE=base,
            TORCH_INDEX_URL=os.environ.get("TORCH_INDEX_URL", PYPI),
            BUILD_NETWORK="host",
            MINIKUBE="0",
            TAG=built.tag,
        )
        log = log_dir / "build.log"
        with log.open("w") as out:
            result = subprocess.run(
                ["bash", str(BUILD_SCRIPT)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                timeout=4 * 3600,
            )
        assert result.returncode == 0, f"build_docker_images.sh failed:\n{log.read_text()[-5000:]}"
    lines = []
    for name in build_script_images():
        ref = f"mlops-{name}:{built.tag}"
        size = _run([docker, "image", "inspect", "--format", "{{.Size}}", ref])
        assert size.returncode == 0, f"{ref} is not there: {size.stderr}"
        built.sizes[name] = int(size.stdout)
        lines.append(f"  {ref:<34} {int(size.stdout) / 1e6:8.0f} MB")
    summary = "Images:\n" + "\n".join(lines)
    (log_dir / "sizes.txt").write_text(summary + "\n")
    print("\n" + summary)
    return built


@pytest.mark.parametrize("name", build_script_images())
def test_every_image_runs_help_as_10001_read_only(images: Images, name: str) -> None:
    ref = f"mlops-{name}:{images.tag}"
    user = _run([images.docker, "image", "inspect", "--format", "{{.Config.User}}", ref])
    assert user.stdout.strip() == "10001:10001"
    result = _run(
        [
            images.docker, "run", "--rm", "--network", "host", "--read-only",
            "--tmpfs", "/tmp:rw,exec,mode=1777", "--tmpfs", "/home/mlops:rw,exec,mode=1777",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            ref, "--help",
        ],
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"{ref} --help:\n{result.stdout}\n{result.stderr}"
    assert "Usage:" in result.stdout
    if name != "mlflow":
        for command in ("migrate", "data-prep", "train", "serve", "daily", "dashboard"):
            assert command in result.stdout


# The pipeline.


def _quantity(value: str) -> float:
    """A Kubernetes quantity (2, 500m, 4Gi, 512Mi) as a number (cores or bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


class Cluster:
    """What a kubelet would give the pods: ConfigMaps, the Secret, endpoints on loopback."""

    def __init__(self, images: Images, root: Path, hosts: dict[str, str]) -> None:
        self.images = images
        self.root = root
        self.hosts = hosts
        self.secret = filled_secret()
        self.extra_env: dict[str, str] = {}
        self.extra_mounts: list[str] = []
        self.count = 0
        self.lock = threading.Lock()
        self.started: list[str] = []

    def pod(self, template: dict[str, Any], name: str) -> DockerPod:
        with self.lock:
            self.count += 1
            return DockerPod(self, template, f"{self.count:02d}-{name}")

    def run_job(self, job: dict[str, Any], name: str) -> tuple[int, str]:
        """All pods of a Job, as containers."""
        return run_job_pods(
            job, name, lambda template, pod, extra: self.pod(template, pod).run(**extra)
        )

    def check_servers(self) -> None:
        """Fail if a server container started earlier is no longer running."""
        for name in self.started:
            state = _run(
                [
                    self.images.docker, "inspect", "--format",
                    "{{.State.Running}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}}", name,
                ]
            )  # fmt: skip
            if state.returncode == 0 and not state.stdout.startswith("true"):
                logs = _run([self.images.docker, "logs", "--tail", "40", name])
                pytest.fail(f"{name} stopped ({state.stdout.strip()}):\n{logs.stderr[-3000:]}")

    def remove_started(self) -> None:
        for name in self.started:
            _run([self.images.docker, "rm", "-f", name])


class DockerPod:
    """One pod of a pod template, as one `docker run` of its one container."""

    def __init__(self, cluster: Cluster, template: dict[str, Any], name: str) -> None:
        self.cluster = cluster
        self.spec = template["spec"]
        self.name = f"mlops-check-{name}-{uuid.uuid4().hex[:6]}"
        (self.container,) = self.spec["containers"]
        self.volume_options: list[str] = []
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            path = mount["mountPath"]
            if "configMap" in volume or "secret" in volume:
                local = cluster.root / self.name / mount["name"]
                local.mkdir(parents=True)
                local.chmod(0o755)
                write_volume(volume, local, cluster.secret, self._endpoints)
                for folder in [local, *(p for p in local.rglob("*") if p.is_dir())]:
                    folder.chmod(0o755)
                self.volume_options += ["-v", f"{local}:{path}:ro"]
            else:
                assert "emptyDir" in volume, f"{name}: volume {mount['name']} cannot run here"
                self.volume_options += ["--tmpfs", f"{path}:rw,exec,mode=1777"]

    def _endpoints(self, value: str) -> str:
        for name, address in self.cluster.hosts.items():
            value = value.replace(name, address)
        return value

    def env(self, **extra: str) -> dict[str, str]:
        env = container_env(self.container, self.cluster.secret)
        env = {key: self._endpoints(str(value)) for key, value in env.items()}
        return {**env, **self.cluster.extra_env, **extra}

    def args(self, ports: dict[int, int] | None = None) -> list[str]:
        args = list(self.container.get("args") or [])
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg.startswith("--host=") or (i and args[i - 1] == "--host"):
                arg = "--host=" + LOOPBACK if arg.startswith("--host=") else LOOPBACK
            elif ports and (arg.startswith("--port=") or (i and args[i - 1] == "--port")):
                number = int(arg.split("=", 1)[-1])
                arg = f"--port={ports[number]}" if arg.startswith("--port=") else str(ports[number])
            out.append(self._endpoints(arg))
        return out

    def docker_argv(self, *options: str, ports: dict[int, int] | None = None, **extra: str):
        pod_sc = self.spec.get("securityContext", {})
        sc = self.container.get("securityContext", {})
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        group = sc.get("runAsGroup", pod_sc.get("runAsGroup", user))
        argv = [self.cluster.images.docker, "run", "--name", self.name, "--network", "host"]
        argv += [*options, *self.volume_options, *self.cluster.extra_mounts]
        if user is not None:
            argv += ["--user", f"{user}:{group}"]
        if "fsGroup" in pod_sc:
            argv += ["--group-add", str(pod_sc["fsGroup"])]
        if sc.get("readOnlyRootFilesystem"):
            argv.append("--read-only")
        if "ALL" in sc.get("capabilities", {}).get("drop", []):
            argv += ["--cap-drop", "ALL"]
        if sc.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        limits = self.container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            argv += ["--memory", str(int(_quantity(limits["memory"])))]
        if "cpu" in limits:
            argv += ["--cpus", str(min(_quantity(limits["cpu"]), float(os.cpu_count() or 1)))]
        for key, value in self.env(**extra).items():
            argv += ["-e", f"{key}={value}"]
        command = list(self.container.get("command") or [])
        if command:
            argv += ["--entrypoint", command[0]]
        argv.append(self.cluster.images.ref(self.container["image"]))
        return [*argv, *command[1:], *self.args(ports)]

    def run(self, timeout: float = 1800, **extra: str) -> subprocess.CompletedProcess:
        try:
            return _run(self.docker_argv("--rm", **extra), timeout=timeout)
        except subprocess.TimeoutExpired:
            _run([self.cluster.images.docker, "rm", "-f", self.name])
            raise

    def start(self, ports: dict[int, int]) -> str:
        result = _run(self.docker_argv("--detach", ports=ports))
        assert result.returncode == 0, f"docker run {self.name}: {result.stderr}"
        self.cluster.started.append(self.name)
        return self.name

    def stop(self) -> None:
        _run([self.cluster.images.docker, "rm", "-f", self.name])
        self.cluster.started.remove(self.name)

    def logs(self) -> str:
        result = _run([self.cluster.images.docker, "logs", "--tail", "80", self.name])
        return result.stdout + result.stderr

    def running(self) -> bool:
        state = _run(
            [self.cluster.images.docker, "inspect", "--format", "{{.State.Running}}", self.name]
        )
        return state.stdout.strip() == "true"


def _result(stdout: str) -> Any:
    """The stage's result: the last JSON document on stdout, after any JSON log lines."""
    start = stdout.rfind("\n{\n")
    if start < 0:
        start = stdout.rfind("\n[\n")
    return json.loads(stdout[start + 1 :] if start >= 0 else stdout)


def _ok(result: subprocess.CompletedProcess, what: str) -> str:
    killed = " (killed: out of memory?)" if result.returncode == 137 else ""
    assert result.returncode == 0, (
        f"{what} failed{killed}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    print(f"  {what}: {_last_message(result.stdout + result.stderr)}")
    return result.stdout


def _last_message(output: str, prefix: str = "") -> str:
    """The last JSON log message (starting with ``prefix``), else the last line; for -s."""
    lines = [line for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        start = line.find('{"ts"')  # after a progress bar's or a pod's prefix
        if start < 0:
            continue
        try:
            message = str(json.loads(line[start:])["msg"])
        except (ValueError, KeyError):
            continue
        if message.startswith(prefix):
            return message
    last = lines[-1].strip() if lines else ""
    return "(no log message; result on stdout)" if last in ("", "}", "]") else last


def _wait_http(url: str, pod: DockerPod, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if not pod.running():
            pytest.fail(f"{url}: container {pod.name} exited:\n{pod.logs()}")
        time.sleep(1)
    pytest.fail(f"{url} did not answer 200 within {timeout}s:\n{pod.logs()}")


def test_the_images_run_the_pipeline_on_the_host_network(
    images: Images, postgres_server, s3_endpoint, tmp_path: Path
) -> None:
    tmp_path.chmod(0o755)
    mlflow_port = _free_port()
    s3 = IamS3()
    hosts = {
        "mlops-postgres:5432": f"{postgres_server.host}:{postgres_server.port}",
        "mlops-minio:9000": s3.endpoint.removeprefix("http://"),
        "mlops-mlflow:5000": f"{LOOPBACK}:{mlflow_port}",
    }
    cluster = Cluster(images, tmp_path, hosts)

    def execute(job: dict) -> tuple[int, str]:
        name = job["metadata"]["name"]
        if "-retrain-" in name:
            return 0, "retraining Job recorded"
        return cluster.run_job(job, name)

    kube = FakeKube(executor=execute).start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    cluster.extra_env["KUBECONFIG"] = KUBECONFIG_PATH
    cluster.extra_mounts += ["-v", f"{kubeconfig}:{KUBECONFIG_PATH}:ro"]
    try:
        init = init_postgres(
            postgres_server, cluster.secret, cluster.root, {"PATH": "/usr/bin:/bin"}
        )
        assert init.returncode == 0, f"the Postgres init script:\n{init.stdout}\n{init.stderr}"
        (bucket_job,) = containers(doc("Job", "mlops-minio-buckets"))
        mlflow_bucket = {e["name"]: e.get("value") for e in bucket_job["env"]}["MLFLOW_BUCKET"]
        s3.setup(
            [config_maps()["mlops-pipeline-config"]["S3_BUCKET"], mlflow_bucket], cluster.secret
        )

        # MLflow from the mlflow image, as deployments/mlflow.yaml runs it, then its users.
        mlflow_doc = doc("Deployment", "mlops-mlflow")
        (mlflow_container,) = containers(mlflow_doc)
        mlflow = cluster.pod(pod_template(mlflow_doc), "mlflow")
        mlflow.start({5000: mlflow_port})
        probe = mlflow_container["readinessProbe"]["httpGet"]["path"]
        _wait_http(f"http://{LOOPBACK}:{mlflow_port}{probe}", mlflow)
        print(f"\n  mlflow: {probe} answers 200")
        users = cluster.pod(pod_template(doc("Job", "mlops-mlflow-users")), "mlflow-users")
        _ok(users.run(timeout=300), "mlflow-users")

        migrate = cluster.pod(pod_template(doc("Job", "mlops-migrate")), "migrate")
        out = _ok(migrate.run(), "migrate")
        assert "Database schema at revision" in out
        cluster.check_servers()

        code, log = cluster.run_job(doc("Job", "mlops-data-prep").body, "data-prep")
        assert code == 0, log[-5000:]
        print(f"  data-prep: {_last_message(log, 'Dataset')}")
        assert f"Dataset {FIRST_DAY}-" in log, "the shard completing the set publishes"
        cluster.check_servers()

        train = cluster.pod(pod_template(doc("Job", "mlops-train")), "train").run()
        cluster.check_servers()
        trained = _ok(train, "train")
        # `train --all`: one result per catalog model; the trading model's is promoted.
        models = {m["model_name"]: m for m in _result(trained)["models"]}
        assert models["stock-close"]["promoted"], trained[-3000:]
        print("  train: " + ", ".join(f"{n} v{m['model_version']}" for n, m in models.items()))

        for stage in ("batch-infer", "trade", "monitor"):
            pod = cluster.pod(pod_template(doc("Job", f"mlops-{stage}")), stage)
            ran = pod.run()
            cluster.check_servers()
            result = _result(_ok(ran, stage))
            if stage == "batch-infer":  # each catalog model's champion and challenger
                scored = {(s["model_name"], s["role"]) for s in result["scored"]}
                assert ("stock-close", "champion") in scored, result
                assert result["new_rows"] == 5 * len(scored)
            if stage == "trade":
                print(f"    orders {result.get('orders_placed')}, equity {result.get('equity')}")

        for name in ("serve", "dashboard"):
            deployment = doc("Deployment", f"mlops-{name}")
            (c,) = containers(deployment)
            port = _free_port()
            pod = cluster.pod(pod_template(deployment), name)
            pod.start({c["ports"][0]["containerPort"]: port})
            for kind in ("readinessProbe", "livenessProbe"):
                _wait_http(f"http://{LOOPBACK}:{port}{c[kind]['httpGet']['path']}", pod)
            paths = sorted({c[k]["httpGet"]["path"] for k in ("readinessProbe", "livenessProbe")})
            print(f"  {name}: {' and '.join(paths)} answer 200")
            cluster.check_servers()
            pod.stop()

        # The daily CronJob in the orchestrator image; the fake API runs its Jobs.
        daily = cluster.pod(job_spec(doc("CronJob", "mlops-daily"))["template"], "daily")
        result = daily.run(DAILY_AS_OF=DAILY_DAY, DAILY_POLL_SECONDS="1")
        cluster.check_servers()
        assert result.returncode == 0, (
            f"mlops daily failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n"
            + "\n".join(kube.logs.values())[-5000:]
        )
        runs = _result(result.stdout)
        stamp = DAILY_DAY.replace("-", "")
        stages = ("data-prep", "batch-infer", "trade", "monitor")
        assert [r["job"] for r in runs[:4]] == [f"mlops-{s}-{stamp}" for s in stages]
        assert [r["job"] for r in runs[4:]] in ([], [f"mlops-train-retrain-{stamp}"])
        assert all(r["outcome"] == "succeeded" for r in runs)
        print(f"  daily {DAILY_DAY}: " + ", ".join(f"{r['job']} {r['outcome']}" for r in runs))
        for job, log in kube.logs.items():
            print(f"    {job}: {_last_message(log, 'Dataset' if 'data-prep' in job else '')}")
    finally:
        kube.stop()
        cluster.remove_started()
        s3.stop()

    engine = create_engine(postgres_server.url("mlops"))
    with engine.connect() as conn:
        stages = set(
            conn.execute(
                text("SELECT DISTINCT stage FROM stage_runs WHERE run_date = :day"),
                {"day": DAILY_DAY},
            ).scalars()
        )
    engine.dispose()
    assert {"data-prep", "batch-infer", "trade", "monitor"} <= stages


# Issue 12's targets for the torch-free images (the CUDA-torch ones were 7.6 GB each).
LEAN_IMAGE_LIMITS = {"serve": 600e6, "batch-infer": 800e6}
HEAVY_MODULES = ("torch", "ludwig", "talib")


@pytest.mark.parametrize("name", list(LEAN_IMAGE_LIMITS))
def test_the_lean_images_predict_like_ludwig_without_torch_or_ludwig(
    images: Images, name: str, tmp_path: Path
) -> None:
    """Serve and batch-infer: under their size limit, neither torch, Ludwig nor TA-Lib can be
    imported, and the image's own code turns a model's portable export into the
    predictions ``LudwigModel.predict`` makes for the same rows (within 1e-6)."""
    import json

    import numpy as np

    from inference.trained_model import INPUTS, train_once

    assert images.sizes[name] <= LEAN_IMAGE_LIMITS[name], (
        f"{name}: {images.sizes[name] / 1e6:.0f} MB, over {LEAN_IMAGE_LIMITS[name] / 1e6:.0f} MB"
    )
    trained = train_once(tmp_path.parent / "lean-model")
    version = trained.versions[0]
    folder = tmp_path / "model"  # readable by the image's uid 10001
    shutil.copytree(trained.model_dirs[version] / "portable", folder)
    tmp_path.chmod(0o755)
    for path in (folder, *folder.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    rows = trained.scorable.head(50)
    code = (
        "import importlib.util, json, sys\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if importlib.util.find_spec(m)]\n"
        "from mlops.contracts.portable import PortablePredictor\n"
        "predictor = PortablePredictor.from_dir('/model')\n"
        "values = predictor.predict_records(json.loads(sys.stdin.read())).tolist()\n"
        "print(json.dumps({'heavy': heavy, 'values': values}))\n"
    )
    ran = _run(
        [
            images.docker, "run", "--rm", "-i", "--network", "none", "--read-only",
            "--user", "10001:10001", "--volume", f"{folder}:/model:ro",
            "--entrypoint", "python", f"mlops-{name}:{images.tag}", "-c", code,
        ],
        input=rows[INPUTS].to_json(orient="records"),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert answer["heavy"] == [], f"{name} can import {answer['heavy']}"

    from ludwig.api import LudwigModel

    model = LudwigModel.load(
        str(trained.model_dirs[version] / "model"), backend="local", logging_level=40
    )
    predictions, _ = model.predict(rows[INPUTS].reset_index(drop=True))
    expected = predictions["next_return_predictions"].to_numpy(dtype="float64")
    np.testing.assert_allclose(answer["values"], expected, rtol=0, atol=1e-6)
    print(f"  {name}: {images.sizes[name] / 1e6:.0f} MB, {len(expected)} predictions = Ludwig's")
