"""One Secret per identity: each workload reads only its own Secret, create_secrets.sh
puts exactly the keys the manifests read into each, and the orchestrator's Jobs can reach
only the stage Secrets."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from .manifests import (
    SECRET_PREFIX,
    SECRETS_SCRIPT,
    Doc,
    pod_template,
    secret_template_keys,
    workloads,
)
from .pods import filled_secret

# Workload -> the one Secret it reads (the identities of test_identities.py).
OWN_SECRET = {
    "mlops-postgres": "postgres",
    "mlops-minio": "minio",
    "mlops-minio-buckets": "minio-buckets",
    "mlops-mlflow": "mlflow",
    "mlops-mlflow-users": "mlflow-users",
    "mlops-migrate": "migrate",
    "mlops-data-prep": "data-prep",
    "mlops-train": "train",
    "mlops-train-weekly": "train",
    "mlops-walk-forward-plan": "train",
    "mlops-walk-forward": "train",
    "mlops-walk-forward-finalize": "train",
    "mlops-batch-infer": "batch-infer",
    "mlops-trade": "trade",
    "mlops-monitor": "monitor",
    "mlops-daily": "orchestrator",
    "mlops-requests": "orchestrator",
    "mlops-serve": "serve",
    "mlops-dashboard": "dashboard",
    "mlops-backup": "backup",
}


def _references(item: Doc) -> dict[str, dict[str, bool]]:
    """Secret -> key -> optional, over the workload's containers and volumes."""
    found: dict[str, dict[str, bool]] = {}
    spec = pod_template(item)["spec"]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for env in container.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                found.setdefault(ref["name"], {})[ref["key"]] = bool(ref.get("optional"))
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            for entry in volume["secret"]["items"]:
                optional = bool(volume["secret"].get("optional"))
                found.setdefault(volume["secret"]["secretName"], {})[entry["key"]] = optional
    return found


def _script_table() -> dict[str, dict[str, bool]]:
    """create_secrets.sh's table: Secret -> key -> optional (marked ?)."""
    block = re.search(r'^SECRETS="\n(.*?)^"$', SECRETS_SCRIPT.read_text(), re.S | re.M)
    assert block, "create_secrets.sh has its SECRETS table"
    table = {}
    for line in block.group(1).splitlines():
        name, *keys = line.split()
        table[name] = {k.removeprefix("?"): k.startswith("?") for k in keys}
    return table


def test_each_workload_reads_only_the_secret_of_its_identity() -> None:
    seen = {}
    for item in workloads():
        secrets = set(_references(item))
        if secrets:
            (seen[item.name],) = secrets  # one Secret, never two
    assert seen == {name: SECRET_PREFIX + identity for name, identity in OWN_SECRET.items()}


def test_the_script_puts_exactly_the_keys_the_manifests_read_into_each_secret() -> None:
    read: dict[str, dict[str, bool]] = {}
    for item in workloads():
        for name, keys in _references(item).items():
            for key, optional in keys.items():
                read.setdefault(name, {})
                read[name][key] = read[name].get(key, True) and optional
    assert _script_table() == read
    required, optional = secret_template_keys()
    listed = {key for keys in read.values() for key in keys}
    assert listed == required | optional, "every key of the template is some Secret's"


def _run_script(tmp_path: Path, values: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    """create_secrets.sh with a fake kubectl that keeps each Secret's env file."""
    env_file = tmp_path / "secrets.env"
    env_file.write_text("# comment\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    out = tmp_path / "applied"
    out.mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "kubectl"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        + textwrap.dedent(
            f"""
            if [[ "$3 $4" == "create secret" ]]; then
                for arg in "$@"; do
                    [[ "$arg" == --from-env-file=* ]] && cp "${{arg#*=}}" "{out}/$6"
                done
                echo "kind: Secret"
            elif [[ "$3" == apply ]]; then
                cat >/dev/null
                echo "$*" >> "{out}/apply.log"
            fi
            """
        )
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(SECRETS_SCRIPT), str(env_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return result, out


def test_the_script_applies_one_secret_per_identity_with_only_its_keys(tmp_path: Path) -> None:
    values = {**filled_secret(), "ALPACA_API_KEY": "k", "DASHBOARD_USERS": "a:admin:h=x"}
    result, out = _run_script(tmp_path, values)
    assert result.returncode == 0, result.stderr
    table = _script_table()
    for name, keys in table.items():
        written = dict(line.split("=", 1) for line in (out / name).read_text().splitlines())
        expected = {k for k in keys if k in values}
        assert set(written) == expected, name
        assert all(written[k] == values[k] for k in written), "values kept verbatim"
    applies = (out / "apply.log").read_text().splitlines()
    assert len(applies) == len(table) and all("--server-side" in a for a in applies)


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"MLFLOW_READER_PASSWORD": "changeme"}, "MLFLOW_READER_PASSWORD is still the placeholder"),
        ({"POSTGRES_TRADE_PASSWORD": None}, "has no POSTGRES_TRADE_PASSWORD"),
    ],
)
def test_the_script_applies_nothing_while_a_value_is_missing_or_a_placeholder(
    tmp_path: Path, change: dict[str, str | None], sentence: str
) -> None:
    values = {**filled_secret(), **change}
    result, out = _run_script(tmp_path, {k: v for k, v in values.items() if v is not None})
    assert result.returncode == 2 and sentence in result.stderr
    assert not (out / "apply.log").exists()
