"""build_docker_images.sh and forward_ports.sh, run for real against fake docker,
minikube and kubectl commands on the PATH (they record their arguments)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from .manifests import BUILD_SCRIPT, FORWARD_SCRIPT, ROOT, build_script_images

WAIT_SCRIPT = ROOT / "wait_job.sh"


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, Path]:
    """A bin folder with fake docker and minikube; calls are logged one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _fake(
        bin_dir,
        "docker",
        f"""
        echo "docker DOCKER_HOST=${{DOCKER_HOST:-}} BUILDKIT=${{DOCKER_BUILDKIT:-}} $*" >> {log}
        if [[ "$1" == build && " $* " == *" --target ${{FAIL_TARGET:-none}} "* ]]; then
            echo "boom" >&2; exit 17
        fi
        if [[ "$1" == image ]]; then echo 123456; fi
        """,
    )
    _fake(
        bin_dir,
        "minikube",
        f"""
        echo "minikube $*" >> {log}
        if [[ "$*" == *docker-env* ]]; then echo 'export DOCKER_HOST="tcp://minikube:2376"'; fi
        """,
    )
    return {"bin": bin_dir, "log": log}


def _build(fakes: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"TAG", "BASE_IMAGE", "TORCH_INDEX_URL", "MINIKUBE", "REGISTRY"}
    }
    base["PATH"] = f"{fakes['bin']}:{base['PATH']}"
    base.update(env)
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args],
        capture_output=True,
        text=True,
        env=base,
        timeout=60,
        cwd=ROOT,
    )


def _calls(fakes: dict[str, Path]) -> list[str]:
    return fakes["log"].read_text().splitlines() if fakes["log"].exists() else []


def _builds(fakes: dict[str, Path]) -> list[str]:
    return [c for c in _calls(fakes) if " build " in c]


def test_builds_every_image_into_minikube_with_one_tag(fakes) -> None:
    result = _build(fakes, TAG="v9.9")
    assert result.returncode == 0, result.stderr
    builds = _builds(fakes)
    assert len(builds) == len(build_script_images())
    for name, call in zip(build_script_images(), builds, strict=True):
        assert "DOCKER_HOST=tcp://minikube:2376" in call, "built in minikube's Docker"
        assert "BUILDKIT=1" in call
        assert f"--target {name} " in call
        assert f"--tag mlops-{name}:v9.9 " in call and f"--tag mlops-{name}:latest " in call
        assert f"--file {ROOT}/services/Dockerfile" in call and call.endswith(str(ROOT))
        assert "--build-arg" not in call, "Dockerfile defaults unless asked"
    assert "minikube -p minikube docker-env --shell bash" in _calls(fakes)
    for name in build_script_images():
        assert f"mlops-{name}:v9.9" in result.stdout, "prints what it built"


def test_builds_only_the_named_images_with_build_args(fakes) -> None:
    result = _build(
        fakes,
        "train",
        "mlflow",
        "--tag",
        "t1",
        BASE_IMAGE="local/python:3.12",
        TORCH_INDEX_URL="http://127.0.0.1:9/simple",
    )
    assert result.returncode == 0, result.stderr
    builds = _builds(fakes)
    assert [b.split("--target ")[1].split()[0] for b in builds] == ["train", "mlflow"]
    for call in builds:
        assert "--build-arg BASE_IMAGE=local/python:3.12" in call
        assert "--build-arg TORCH_INDEX_URL=http://127.0.0.1:9/simple" in call


def test_load_mode_builds_locally_then_loads_into_minikube(fakes) -> None:
    result = _build(fakes, "--load", "migrate", TAG="t2")
    assert result.returncode == 0, result.stderr
    calls = _calls(fakes)
    assert not any("docker-env" in c for c in calls)
    assert "DOCKER_HOST= " in _builds(fakes)[0]
    assert "minikube -p minikube image load mlops-migrate:t2" in calls
    assert "minikube -p minikube image load mlops-migrate:latest" in calls


def test_without_minikube_builds_locally(fakes) -> None:
    result = _build(fakes, "trade", TAG="t3", MINIKUBE="0")
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith("minikube") for c in _calls(fakes))


def test_default_tag_is_git_describe(fakes) -> None:
    described = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--tags", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    if described.returncode != 0:
        pytest.fail(f"git describe fails in this checkout: {described.stderr}")
    result = _build(fakes, "migrate")
    assert result.returncode == 0, result.stderr
    assert f"--tag mlops-migrate:{described.stdout.strip()} " in _builds(fakes)[0]


def test_stops_loudly_at_the_first_failing_build(fakes) -> None:
    result = _build(fakes, TAG="t4", FAIL_TARGET="train")
    assert result.returncode != 0
    assert "building mlops-train failed" in result.stderr
    built = [b.split("--target ")[1].split()[0] for b in _builds(fakes)]
    assert built == build_script_images()[: build_script_images().index("train") + 1]


def test_push_tags_and_pushes_each_image_to_the_registry(fakes) -> None:
    result = _build(fakes, "--push", "train", "mlflow", TAG="v2", MINIKUBE="0",
                    REGISTRY="registry.example.com:5000/mlops")  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = _calls(fakes)
    for name in ("train", "mlflow"):
        remote = f"registry.example.com:5000/mlops/mlops-{name}:v2"
        assert f"docker DOCKER_HOST= BUILDKIT=1 tag mlops-{name}:v2 {remote}" in calls
        assert f"docker DOCKER_HOST= BUILDKIT=1 push {remote}" in calls
        assert f"pushed as {remote}" in result.stdout
    missing = _build(fakes, "--push", "train", TAG="v2", MINIKUBE="0")
    assert missing.returncode != 0 and "--push needs REGISTRY" in missing.stderr
    bad = _build(fakes, "--push", "train", TAG="v2", MINIKUBE="0", REGISTRY="Bad/")
    assert bad.returncode != 0 and "invalid REGISTRY" in bad.stderr


def test_rejects_unknown_images_and_bad_tags(fakes) -> None:
    result = _build(fakes, "nope", TAG="t5")
    assert result.returncode != 0 and "unknown image 'nope'" in result.stderr
    result = _build(fakes, "train", TAG="bad tag")
    assert result.returncode != 0 and "invalid image tag" in result.stderr
    assert not _builds(fakes)


# forward_ports.sh


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> dict[str, Path]:
    bin_dir = tmp_path / "kbin"
    bin_dir.mkdir()
    pids = tmp_path / "pids"
    pids.mkdir()
    _fake(
        bin_dir,
        "kubectl",
        f"""
        echo "$*" > {pids}/$$.args
        if [[ " $* " == *" svc/${{FAIL_SERVICE:-none}} "* ]]; then
            echo "error: unable to forward" >&2; exit 1
        fi
        sleep 120 &
        child=$!
        trap 'kill "$child"; exit 0' TERM INT
        wait "$child"
        """,
    )
    return {"bin": bin_dir, "pids": pids}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _forward(fake_kubectl: dict[str, Path], **env: str) -> subprocess.Popen:
    full = dict(os.environ)
    full.update(
        PATH=f"{fake_kubectl['bin']}:{full['PATH']}",
        FORWARD_SETTLE_SECONDS="0.5",
        **env,
    )
    return subprocess.Popen(
        ["bash", str(FORWARD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
        cwd=ROOT,
        # As at a terminal: a shell started with SIGINT ignored (a background job, nohup,
        # some CI runners) cannot trap it, so give the script the default disposition.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kubectl_pids(fake_kubectl: dict[str, Path]) -> dict[int, str]:
    return {int(p.stem): p.read_text().strip() for p in fake_kubectl["pids"].glob("*.args")}


def test_forwards_print_urls_and_ctrl_c_stops_them_all(fake_kubectl) -> None:
    proc = _forward(fake_kubectl, MLFLOW_PORT="15000")
    try:
        deadline = time.monotonic() + 20
        while len(_kubectl_pids(fake_kubectl)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # past the settle time: the URLs are printed
        forwards = _kubectl_pids(fake_kubectl)
        assert len(forwards) == 4
        args = sorted(forwards.values())
        for service, ports in (
            ("mlops-minio", "9001:9001"),
            ("mlops-mlflow", "15000:5000"),
            ("mlops-dashboard", "8050:8050"),
            ("mlops-serve", "8080:8080"),
        ):
            expected = f"-n mlops port-forward --address 127.0.0.1 svc/{service} {ports}"
            assert expected in args
        assert all(_alive(pid) for pid in forwards)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    for url in (
        "http://localhost:9001/",
        "http://localhost:15000/",
        "http://localhost:8050/",
        "http://localhost:8080/healthz",
    ):
        assert url in out
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in forwards) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in forwards), "every port-forward is stopped"


def test_a_failing_forward_stops_the_others(fake_kubectl) -> None:
    proc = _forward(fake_kubectl, FAIL_SERVICE="mlops-serve")
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "Serving API (svc/mlops-serve) failed" in err and "unable to forward" in err
    forwards = _kubectl_pids(fake_kubectl)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in forwards) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in forwards)


# The MinIO bucket Job's script, with a fake `mc` and only what the minio/mc image has.


def _bucket_job() -> tuple[str, dict, dict]:
    from .manifests import containers, doc, pod_template

    job = doc("Job", "mlops-minio-buckets")
    (c,) = containers(job)
    assert c["command"] == ["/bin/sh", "-ec"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_template(job)["spec"]["volumes"]}
    return c["args"][0], mounts, volumes


FAKE_MC = """#!/bin/bash
# A fake mc: state in $MC_STATE, one line per call in $MC_STATE/calls.
set -u
args=("$@")
while [[ "${args[0]}" == --* ]]; do
    [[ "${args[0]}" == --config-dir ]] && args=("${args[@]:1}")
    args=("${args[@]:1}")
done
echo "${args[*]}" >> "$MC_STATE/calls"
case "${args[*]}" in
    "alias set local "*) exit 0 ;;
    "ready local") exit 0 ;;
    "mb --ignore-existing local/"*) /bin/mkdir -p "$MC_STATE/buckets/${args[2]#local/}" ;;
    "anonymous set none local/"*) exit 0 ;;
    "version enable local/"*) : > "$MC_STATE/versioned-${args[2]#local/}" ;;
    "ilm import local/"*) /bin/cat > "$MC_STATE/lifecycle-${args[2]#local/}" ;;
    "admin policy create local "*) /bin/cp "${args[5]}" "$MC_STATE/policy-${args[4]}" ;;
    "admin user add local "*) echo "${args[5]}" > "$MC_STATE/user-${args[4]}" ;;
    "admin policy attach local "*)
        mark="$MC_STATE/attached-${args[6]}-${args[4]}"
        if [[ -n "${MC_FAIL_ATTACH:-}" ]]; then
            echo "mc: <ERROR> Unable to make user/group policy association. Server down." >&2
            exit 1
        fi
        if [[ -e "$mark" ]]; then
            echo "mc: <ERROR> Unable to make user/group policy association. The specified" \\
                "policy change is already in effect. (Specified policy update has no net" \\
                "effect)." >&2
            exit 1
        fi
        : > "$mark" ;;
    *) echo "fake mc: unexpected call: ${args[*]}" >&2; exit 9 ;;
esac
"""


@pytest.fixture
def bucket_job(tmp_path: Path) -> dict:
    """The script with its Secret and policy files in tmp_path, and a PATH of mc, cat, sleep."""
    from .manifests import config_maps
    from .pods import filled_secret, write_volume

    script, mounts, volumes = _bucket_job()
    secrets, policies = tmp_path / "secrets", tmp_path / "policies"
    lifecycle = tmp_path / "lifecycle"
    folders = (("secrets", secrets), ("policies", policies), ("lifecycle", lifecycle))
    for name, folder in folders:
        write_volume(volumes[name], folder, filled_secret(), str)
    for name, path in folders:
        line = f"{name}={mounts[name]}"
        assert script.count(line) == 1, f"the script sets {name} from its mount"
        script = script.replace(line, f"{name}={path}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mc").write_text(FAKE_MC)
    (bin_dir / "mc").chmod(0o755)
    for tool in ("cat", "sleep"):  # what the image has besides sh and mc (no grep, no sed)
        (bin_dir / tool).symlink_to(shutil.which(tool))
    state = tmp_path / "state"
    state.mkdir()
    env = {
        "PATH": str(bin_dir),
        "MC_STATE": str(state),
        "MINIO_URL": "http://mlops-minio:9000",
        "S3_BUCKET": config_maps()["mlops-pipeline-config"]["S3_BUCKET"],
        "MLFLOW_BUCKET": "mlflow",
    }
    return {"script": script, "env": env, "state": state, "secrets": secrets}


def _run_bucket_job(job: dict, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/sh", "-ec", job["script"]],
        env={**job["env"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bucket_job_creates_buckets_policies_and_users_and_can_run_again(bucket_job) -> None:
    from .manifests import config_maps
    from .pods import minio_users

    first = _run_bucket_job(bucket_job)
    assert first.returncode == 0, first.stdout + first.stderr
    state = bucket_job["state"]
    assert {p.name for p in (state / "buckets").iterdir()} == {"mlops", "mlflow"}
    users = minio_users()
    for name in users:
        policy = (state / f"policy-mlops-{name}").read_text()
        assert policy == (bucket_job["secrets"].parent / "policies" / f"{name}.json").read_text()
    assert len(list(state.glob("user-*"))) == len(users)
    assert len(list(state.glob("attached-*"))) == len(users)
    assert f"(versioned) and {len(users)} users are ready." in first.stdout
    # Both buckets versioned, with the lifecycle of the ConfigMap (noncurrent versions expire).
    rules = config_maps()["mlops-minio-lifecycle"]["lifecycle.json"]
    for bucket in ("mlops", "mlflow"):
        assert (state / f"versioned-{bucket}").exists()
        assert (state / f"lifecycle-{bucket}").read_text() == rules
    # Re-applying the Job (as the walkthrough does) must not fail: attach says "already".
    again = _run_bucket_job(bucket_job)
    assert again.returncode == 0, again.stdout + again.stderr


def test_bucket_job_fails_for_good_without_a_secret_and_retries_other_errors(bucket_job):
    failed = _run_bucket_job(bucket_job, MC_FAIL_ATTACH="1")
    assert failed.returncode == 1 and "Server down" in failed.stderr  # retried (backoffLimit)
    (bucket_job["secrets"] / "users" / "trade" / "secret-key").unlink()
    missing = _run_bucket_job(bucket_job)
    assert missing.returncode == 2, missing.stderr  # FailJob: podFailurePolicy
    assert "secret-key is missing or empty" in missing.stderr
    # The template's placeholder, or a short secret, fails the Job for good (exit 2).
    for weak, why in (("changeme", "still the template's placeholder"), ("short-key", "shorter")):
        (bucket_job["secrets"] / "users" / "trade" / "secret-key").write_text(weak)
        refused = _run_bucket_job(bucket_job)
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr


# wait_job.sh, against a fake kubectl whose Job is in the state $JOB_STATE.


def _wait(tmp_path: Path, state: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    bin_dir = tmp_path / "wbin"
    bin_dir.mkdir(exist_ok=True)
    _fake(
        bin_dir,
        "kubectl",
        """
        case "$*" in
            *"get job"*"@.type==\\"Failed\\""*) echo "PodFailurePolicy" ;;
            *"get job"*) echo -n "$JOB_STATE" ;;
            *"logs job/"*) echo "error: the data is stale" ;;
        esac
        """,
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_STATE": state}
    env["WAIT_POLL_SECONDS"] = "0.1"
    began = time.monotonic()
    result = subprocess.run(
        ["bash", str(WAIT_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60
    )
    return result, time.monotonic() - began


def test_wait_job_returns_at_once_when_the_job_completes_or_fails(tmp_path: Path) -> None:
    done, _ = _wait(tmp_path, "SuccessCriteriaMet Complete ", "mlops-train", "2h")
    assert done.returncode == 0 and "job/mlops-train completed" in done.stdout
    failed, _ = _wait(tmp_path, "FailureTarget Failed ", "mlops-train", "2h")
    assert failed.returncode == 1, failed.stderr
    assert "job/mlops-train failed (PodFailurePolicy)" in failed.stderr
    assert "the data is stale" in failed.stderr


def test_wait_job_gives_up_at_its_timeout(tmp_path: Path) -> None:
    running, _ = _wait(tmp_path, "", "mlops-train", "0s")
    assert running.returncode == 1 and "still running after 0s" in running.stderr
    bad, _ = _wait(tmp_path, "", "mlops-train", "soon")
    assert bad.returncode == 2 and "invalid timeout" in bad.stderr


def test_wait_job_takes_hours_and_minutes_together(tmp_path: Path) -> None:
    for timeout in ("1h30m", "2h5s", "08m"):
        done, _ = _wait(tmp_path, "SuccessCriteriaMet Complete ", "mlops-train", timeout)
        assert done.returncode == 0, (timeout, done.stderr)
    for timeout in ("1m2h", "h", "1d"):
        bad, _ = _wait(tmp_path, "", "mlops-train", timeout)
        assert bad.returncode == 2 and "invalid timeout" in bad.stderr, (timeout, bad.stderr)


def test_the_buckets_lifecycle_is_one_s3_accepts(s3_endpoint: str) -> None:
    """The rules `mc ilm import` gets, put on a versioned bucket of the S3 server as they
    are: valid lifecycle JSON, read back unchanged (noncurrent versions expire)."""
    import json
    import uuid

    import boto3

    from conftest import S3_TEST_CREDENTIALS

    from .manifests import config_maps

    rules = json.loads(config_maps()["mlops-minio-lifecycle"]["lifecycle.json"])
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = f"lifecycle-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rules)
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    by_id = {rule["ID"]: rule for rule in stored}
    assert by_id["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 30
    }
    assert by_id["remove-expired-delete-markers"]["Expiration"] == {
        "ExpiredObjectDeleteMarker": True
    }


def test_the_mlflow_users_job_refuses_placeholder_and_short_passwords(tmp_path: Path) -> None:
    """Exit 2 (the Job fails for good) before the server is asked anything."""
    import sys

    from .manifests import config_maps

    script = tmp_path / "users.py"
    script.write_text(config_maps()["mlops-mlflow-setup"]["users.py"])
    auth = tmp_path / "basic_auth.ini"
    auth.write_text(config_maps()["mlops-mlflow-auth"]["basic_auth.ini"])
    secrets = tmp_path / "secrets"
    (secrets / "users").mkdir(parents=True)
    (secrets / "users" / "mlops-train").write_text("a5f0c3e9b7d21486")
    env = {
        "PATH": os.environ["PATH"],
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # never reached
        "MLFLOW_EXPERIMENT": "e",
        "MODEL_NAME": "m",
        "MLFLOW_EDITOR": "mlops-train",
        "MLFLOW_MODEL_EDITORS": "mlops-train",
        "MLFLOW_MODEL_MANAGERS": "mlops-dashboard",
        "MODEL_CONFIGS_DIR": str(tmp_path),
        "MLFLOW_SECRETS_DIR": str(secrets),
        "MLFLOW_AUTH_CONFIG_PATH": str(auth),
    }
    for admin, why in (("changeme", "template's placeholder"), ("short-pw", "shorter than 12")):
        (secrets / "admin-password").write_text(admin)
        done = subprocess.run(
            [sys.executable, "-I", "-S", str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and why in done.stderr, done.stderr
