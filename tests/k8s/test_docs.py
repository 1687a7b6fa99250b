"""docs/kubernetes.md: every command of the walkthrough, checked against what it names.

The commands are parsed out of its ```bash blocks (continuation lines joined, pipelines
split, ``for VAR in ...; do ... done`` loops expanded) and out of inline `kubectl ...`
spans. Each is checked where it can be without a cluster: the files and overlays it
applies exist, the objects it names (job/, deployment/, statefulset/, cronjob/, svc/) and
the label selectors it uses match the manifests, the scripts and CLIs it calls accept its
arguments, the Makefile has its targets - and none waits for a Job in a way that sits out
its timeout when the Job fails, or reads a selector's logs without --tail.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from . import sync_configmaps
from .kustomize import kustomization_file
from .manifests import ROOT, all_docs, build_script_images, docs, pod_template

DOC = ROOT / "docs" / "kubernetes.md"
NAMESPACE = "mlops"
# Shell words that need no check here.
SHELL = {
    "cp", "sed", "while", "done", "do", "for", "break", "grep", "tail", "openssl", "sort",
    "minikube",
}  # fmt: skip
# Jobs the walkthrough creates itself (from a CronJob), and day-named ones the
# orchestrator creates (mlops-<stage>-<yyyymmdd>, a CronJob's <name>-<minutes>).
CREATED_JOBS = set(
    re.findall(r"kubectl -n mlops create job (?:--from=\S+ )?([a-z0-9-]+)", DOC.read_text())
)
CREATED_JOBS |= {"daily-rerun-1", "train-now"}
DAY_NAMED = re.compile(r"^(mlops-[a-z-]+)-\d{8}$|^mlops-daily-\d+$")


def _blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def _expand_loops(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = re.match(r"for (\w+) in ([^;]+); do$", lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        end = lines.index("done", i)
        for value in match.group(2).split():
            out += [line.replace(f"${match.group(1)}", value) for line in lines[i + 1 : end]]
        i = end + 1
    return out


def commands(text: str | None = None) -> list[str]:
    """Every command of the doc, one per pipeline element."""
    text = text if text is not None else DOC.read_text()
    found: list[str] = []
    for block in _blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        joined = re.sub(r"\n\s*\|", " |", joined)
        lines = [line.split("  #")[0].strip() for line in joined.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        for line in _expand_loops(lines):
            for part in re.split(r"\s\|\|?\s|\s&&\s", line):
                found.append(part.strip())
    for span in re.findall(r"`(kubectl [^`]+)`", text):
        span = " ".join(span.split())
        # Commands, not mentions of one or patterns with <placeholders>.
        if span.startswith(("kubectl -n mlops ", "kubectl apply ")) and "<" not in span:
            found.append(span)
    return [c for c in found if c]


def _words(command: str) -> list[str]:
    words = shlex.split(command)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
        words = words[1:]
    return words


def _objects(kind: str) -> set[str]:
    return {d.name for d in docs(kind)}


KINDS = {
    "job": "Job",
    "deployment": "Deployment",
    "deploy": "Deployment",
    "statefulset": "StatefulSet",
    "cronjob": "CronJob",
    "svc": "Service",
}


def _check_job_name(name: str) -> None:
    if name in CREATED_JOBS or name in _objects("Job"):
        return
    match = DAY_NAMED.match(name)
    assert match, f"no Job {name}"
    assert match.group(1) is None or match.group(1) in _objects("Job"), name


def _check_kubectl(words: list[str]) -> None:
    args = words[1:]
    if "-n" in args:
        at = args.index("-n")
        assert args[at + 1] == NAMESPACE
        args = args[:at] + args[at + 2 :]
    if "wait" in args:
        assert not any(a.startswith("--for=condition=complete") for a in args), (
            "kubectl wait --for=condition=complete sits out its timeout on a failed Job: "
            "use ./wait_job.sh"
        )
    for i, arg in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else ""
        if arg == "-f" and value != "-" and args[0] != "logs":
            assert (ROOT / value).exists() or value == "config-maps/secrets.env", value
        if arg == "-k":
            kustomization_file(ROOT / value)
        if arg.startswith("--from-env-file="):
            assert arg == "--from-env-file=config-maps/secrets.env"
        if arg.startswith("--from=cronjob/"):
            assert arg.split("/", 1)[1] in _objects("CronJob"), arg
        if arg == "-l":
            key, _, label = value.partition("=")
            if key == "job-name":
                _check_job_name(label)
            else:
                assert any(
                    (d.body["metadata"].get("labels") or {}).get(key) == label for d in all_docs()
                ) or key.startswith("mlops/run-date"), value
            if "logs" in args:
                assert any(a.startswith("--tail") for a in args), (
                    "kubectl logs -l shows 10 lines per pod: add --tail=-1"
                )
        match = re.fullmatch(r"([a-z]+)/([a-z0-9-]+)", arg)
        if match and match.group(1) in KINDS and not args[i - 1 if i else 0].startswith("--"):
            kind, name = KINDS[match.group(1)], match.group(2)
            if kind == "Job":
                _check_job_name(name)
            else:
                assert name in _objects(kind), f"no {kind} {name}"
    if args[:1] == ["create"] and args[1:2] == ["job"]:
        CREATED_JOBS.add(args[2])
    assert args[:2] != ["create", "secret"], "one Secret per identity: ./create_secrets.sh"
    if args[:1] == ["delete"] and args[1:2] == ["job"]:
        for name in [a for a in args[2:] if not a.startswith("-")]:
            _check_job_name(name)


def _check_build(words: list[str]) -> None:
    for arg in words[1:]:
        if arg.startswith("--"):
            assert arg in ("--load", "--push", "--help") or arg.startswith("--tag"), arg
        else:
            assert arg in build_script_images(), arg


def _check_wait_job(words: list[str]) -> None:
    assert 2 <= len(words) <= 3, words
    _check_job_name(words[1])
    if len(words) == 3:
        assert re.fullmatch(r"\d+|(\d+h)?(\d+m)?(\d+s)?", words[2]), words[2]


def _check_mlops(words: list[str]) -> None:
    from mlops.cli import app

    group = typer.main.get_command(app)
    command = group.commands[words[1]]  # type: ignore[attr-defined]
    command.make_context(f"mlops {words[1]}", words[2:]).close()


def _check_make(words: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in words[1:]:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target


def check(command: str) -> None:
    words = _words(command)
    if not words:
        return
    head = words[0]
    if head == "kubectl":
        _check_kubectl(words)
    elif head == "./build_docker_images.sh":
        _check_build(words)
    elif head == "./wait_job.sh":
        _check_wait_job(words)
    elif head == "./forward_ports.sh":
        assert len(words) == 1
    elif head == "./create_secrets.sh":
        assert words[1:] in ([], ["config-maps/secrets.env"]), words
    elif head in ("python", ".venv/bin/python") and words[1] == "tests/k8s/sync_configmaps.py":
        sync_configmaps.parser().parse_args(words[2:])
    elif head == ".venv/bin/python" and words[1:3] == ["-m", "pytest"]:
        assert all((ROOT / w).exists() for w in words[3:] if w.startswith("tests/"))
    elif head == ".venv/bin/mlops":
        _check_mlops(words)
    elif head == "make":
        _check_make(words)
    elif head in (
        "MLOPS_DOCKER_TESTS=1",
        "apt-get",
        "dockerd",
        "scripts/make_base_image.sh",
        "docker",
    ):
        pass  # the opt-in image check's commands: tests/docker covers them
    else:
        assert head in SHELL, f"unknown command {head!r}: teach tests/k8s/test_docs.py to check it"


def _cases() -> Iterator[str]:
    yield from commands()


@pytest.mark.parametrize("command", list(_cases()))
def test_walkthrough_command_matches_the_manifests(command: str) -> None:
    check(command)


def test_the_walkthrough_runs_every_stage_and_service() -> None:
    text = " ".join(commands())
    assert "kubectl apply -k deployments/persistent" in text  # the namespace, MinIO's claim
    for name in ("rbac", "network-policies", "postgres", "minio", "mlflow"):
        assert f"deployments/{name}.yaml" in text
    for stage in ("migrate", "data-prep", "train", "batch-infer", "trade", "monitor"):
        assert f"deployments/job-{stage}.yaml" in text
        assert f"./wait_job.sh mlops-{stage}" in text
    for job in ("mlops-minio-buckets", "mlops-mlflow-users"):
        assert f"./wait_job.sh {job}" in text
    for step in ("walk-forward-plan", "walk-forward", "walk-forward-finalize"):
        assert f"kubectl apply -f deployments/job-{step}.yaml" in text
        assert f"./wait_job.sh mlops-{step} " in text
    assert "kubectl apply -f config-maps/walk-forward.yaml" in text
    assert "kubectl apply -k overlays/minikube" in text
    assert "kubectl apply -k overlays/registry" in text


def test_the_checker_rejects_what_the_issue_found() -> None:
    for bad in (
        "kubectl -n mlops wait --for=condition=complete job/mlops-train --timeout=2h",
        "kubectl -n mlops logs -l job-name=mlops-data-prep --prefix",
        "kubectl apply -f deployments/job-nope.yaml",
        "kubectl -n mlops rollout status deployment/mlops-nope",
        "./build_docker_images.sh nope",
        "./wait_job.sh mlops-nope",
    ):
        with pytest.raises(AssertionError):
            check(bad)


def test_the_doc_names_the_monitor_as_recording_requests_only() -> None:
    text = " ".join(DOC.read_text().split())
    assert "records a retrain request in the database" in text
    assert "mlops-train-retrain-<day>" in text
    assert "no training Job appears" in text


def test_every_pod_template_of_a_job_the_doc_runs_exists() -> None:
    for item in docs("Job"):
        assert pod_template(item)["spec"]["containers"], item


def test_wait_job_is_documented_where_jobs_are_waited_for() -> None:
    assert Path(ROOT / "wait_job.sh").stat().st_mode & 0o111
