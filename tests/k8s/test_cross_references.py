"""Cross-references: images, ConfigMap and Secret keys, selectors, subcommands, settings."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest
import typer

from .manifests import (
    BUILD_SCRIPT,
    NAMESPACE,
    NON_SETTING_ENV,
    PIPELINE_CONFIG,
    ROOT,
    SECRET_PREFIX,
    Doc,
    build_script_images,
    config_maps,
    containers,
    doc,
    dockerfile_stages,
    docs,
    image_name,
    image_tag,
    job_spec,
    mlops_containers,
    pod_template,
    secret_template_keys,
    secret_template_values,
    settings_aliases,
    workloads,
)
from .pods import container_env, expand, filled_secret

INTERNAL_STAGES = {"python", "requirements", "wheel", "base"}


def _ids(items: list[Doc]) -> list[str]:
    return [d.rel for d in items]


# Images.


def test_build_script_builds_exactly_the_dockerfile_images() -> None:
    stages = dockerfile_stages()
    images = {
        name for name in stages if name not in INTERNAL_STAGES and not name.startswith("deps-")
    }
    assert set(build_script_images()) == images
    assert len(build_script_images()) == len(set(build_script_images()))
    for expected in (
        "data-prep",
        "train",
        "batch-infer",
        "serve",
        "trade",
        "monitor",
        "dashboard",
        "orchestrator",
        "migrate",
        "mlflow",
    ):
        assert expected in images


def test_every_manifest_image_is_built_or_pinned() -> None:
    built = {f"mlops-{name}" for name in build_script_images()}
    seen = set()
    for item in workloads():
        for c in containers(item):
            name, tag = image_name(c["image"]), image_tag(c["image"])
            if name.startswith("mlops-"):
                assert name in built, f"{item}: image {name} is not built by build_docker_images.sh"
                assert tag == "latest", (
                    f"{item}: mlops images use the :latest alias the script sets"
                )
                assert c.get("imagePullPolicy") in ("IfNotPresent", "Never"), (
                    f"{item}: local images must not be pulled from a registry"
                )
                seen.add(name)
            else:
                assert tag and tag != "latest", f"{item}: pin {name} to a release tag"
    # Every image the script builds is used somewhere (data-prep..mlflow).
    assert seen == built


def test_dockerfile_images_run_as_uid_10001_with_exec_form_entrypoints() -> None:
    from mlops.cli import app

    commands = _registered_commands(app)
    for name in build_script_images():
        stage = dockerfile_stages()[name]
        assert stage.instruction("USER") == ["USER 10001:10001"], name
        (entrypoint,) = stage.instruction("ENTRYPOINT")
        (cmd,) = stage.instruction("CMD")
        assert entrypoint.startswith('ENTRYPOINT ["'), f"{name}: exec-form ENTRYPOINT"
        assert cmd.startswith('CMD ["'), f"{name}: exec-form CMD"
        if name == "mlflow":
            assert entrypoint == 'ENTRYPOINT ["mlflow"]'
            continue
        assert entrypoint == 'ENTRYPOINT ["mlops"]', name
        subcommand = re.match(r'CMD \["([^"]+)"', cmd).group(1)
        assert subcommand == name or (name, subcommand) == ("orchestrator", "daily"), name
        assert subcommand in commands, f"{name}: CMD {subcommand} is no mlops subcommand"


def test_only_the_train_image_gets_torch() -> None:
    stages = dockerfile_stages()

    def chain(name: str) -> list[str]:
        names = [name]
        while stages[names[-1]].base in stages:
            names.append(stages[names[-1]].base)
        return names

    for name in build_script_images():
        with_ml = "deps-ml" in chain(name)
        # batch-infer and serve load the portable export with NumPy: no torch nor Ludwig.
        assert with_ml == (name == "train"), name
    torch, rest = stages["deps-ml"].instruction("RUN")
    # The torch family from TORCH_INDEX_URL alone; everything else by hash from PyPI.
    assert '--index-url "${TORCH_INDEX_URL}" -r /locks/torch.txt' in torch
    assert "--no-deps --require-hashes -r /locks/ml.txt" in rest and "pip check" in rest
    assert "ARG TORCH_INDEX_URL" in stages["deps-ml"].lines
    text = (ROOT / "services" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.12-slim" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    code = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert code.count("TORCH_INDEX_URL") == 3, "TORCH_INDEX_URL is used by deps-ml only"
    assert "extra-index-url" not in code, "one index per package: no dependency confusion"


def test_every_image_installs_its_lock_by_hash() -> None:
    stages = dockerfile_stages()
    locks = {
        "base": "base.txt",
        "deps-ml": "ml.txt",
        "deps-trade": "trade.txt",
        "deps-monitor": "monitor.txt",
        "deps-k8s": "k8s.txt",
        "mlflow": "mlflow-server.txt",
    }
    for stage, lock in locks.items():
        runs = " ".join(stages[stage].instruction("RUN"))
        assert f"--no-deps --require-hashes -r /locks/{lock}" in runs, stage
        assert "pip check" in runs, stage
        assert (ROOT / "locks" / lock).is_file(), lock
    for name, stage in stages.items():
        for run in stage.instruction("RUN"):
            if "pip install" in run and "/wheels/mlops-" not in run:
                assert "/locks/" in run, f"{name}: installs something that is not locked"


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    stages = dockerfile_stages()
    for name, stage in stages.items():
        copies = stage.instruction("COPY")
        if name == "wheel":
            continue
        for copy in copies:
            assert "services" not in copy.split()[1:-1] and " services " not in copy, (
                f"{name}: only the wheel stage copies the source"
            )


def test_dockerignore_keeps_secrets_and_clutter_out_of_the_build_context() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allowlist: everything is excluded first"
    assert set(lines) >= {"!pyproject.toml", "!README.md", "!services/"}
    assert not any(line.startswith("!config-maps") for line in lines)


# ConfigMaps and Secrets.


def _env_refs() -> list[tuple[Doc, str, dict]]:
    refs = []
    for item in workloads():
        for c in containers(item):
            for env in c.get("env", []):
                refs.append((item, c["name"], env))
    return refs


def test_config_map_references_exist() -> None:
    maps = config_maps()
    for item in workloads():
        spec = pod_template(item)["spec"]
        for c in containers(item):
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    assert ref["name"] in maps, f"{item}: no ConfigMap {ref['name']}"
                    assert ref["key"] in maps[ref["name"]], f"{item}: no key {ref['key']}"
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, f"{item}: envFrom ConfigMap"
                if "secretRef" in source:
                    pytest.fail(f"{item}: envFrom a Secret hands a pod every credential")
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                assert name in maps, f"{item}: volume of missing ConfigMap {name}"
                for entry in volume["configMap"].get("items", []):
                    assert entry["key"] in maps[name], f"{item}: {name} has no {entry['key']}"


def _secret_volume_refs() -> list[tuple[Doc, dict]]:
    refs = []
    for item in workloads():
        for volume in pod_template(item)["spec"].get("volumes", []):
            if "secret" in volume:
                refs.append((item, volume["secret"]))
    return refs


def test_secret_references_exist_in_the_template() -> None:
    required, optional = secret_template_keys()
    for item, container, env in _env_refs():
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            continue
        where = f"{item} container {container} env {env['name']}"
        assert ref["name"].startswith(SECRET_PREFIX), f"{where}: Secret {ref['name']}"
        if ref.get("optional"):
            assert ref["key"] in required | optional, f"{where}: key {ref['key']} not in template"
        else:
            assert ref["key"] in required, (
                f"{where}: required key {ref['key']} must be set in secrets.env.example"
            )
    used = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for _, _, env in _env_refs()
        if "secretKeyRef" in (env.get("valueFrom") or {})
    }
    for item, volume in _secret_volume_refs():
        assert volume["secretName"].startswith(SECRET_PREFIX), item
        assert volume.get("items"), f"{item}: a Secret volume names the keys it needs"
        for entry in volume["items"]:
            assert entry["key"] in required, f"{item}: {entry['key']} not in the template"
            used.add(entry["key"])
    assert used == required | optional, "every template key is used, and only those"


def test_secret_template_has_no_real_credentials() -> None:
    values = secret_template_values()
    for key, value in values.items():
        if "PASSWORD" in key or "SECRET" in key or key.endswith("API_KEY"):
            assert value == "changeme", f"{key} must be the placeholder changeme"
    _, optional = secret_template_keys()
    assert {"ALPHAVANTAGE_API_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY"} <= optional
    text = (ROOT / "config-maps" / "secrets.env.example").read_text()
    assert "./create_secrets.sh" in text
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert "config-maps/secrets.env" in gitignore


def test_no_credential_in_config_maps() -> None:
    for name, data in config_maps().items():
        for key, value in data.items():
            assert not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY", key), (
                f"ConfigMap {name} key {key} looks like a credential: use the Secret"
            )
            if key == "DATABASE_URL":
                assert urlparse(value).password is None, "DATABASE_URL must hold no password"


def test_pipeline_config_keys_are_settings() -> None:
    aliases = settings_aliases()
    data = config_maps()[PIPELINE_CONFIG]
    unknown = sorted(set(data) - aliases)
    assert not unknown, f"{PIPELINE_CONFIG} keys that are no Settings alias: {unknown}"
    for key in (
        "STORE_BACKEND",
        "S3_BUCKET",
        "S3_ENDPOINT_URL",
        "MLFLOW_TRACKING_URI",
        "DATABASE_URL",
        "SYMBOLS",
        "TRADE_THRESHOLD",
        "LOG_FORMAT",
        "MODEL_CONFIGS_DIR",
    ):
        assert key in data, key
    assert data["STORE_BACKEND"] == "s3" and data["LOG_FORMAT"] == "json"


def test_pipeline_config_with_the_secret_template_makes_valid_settings() -> None:
    from mlops.settings import load_settings

    values = {**config_maps()[PIPELINE_CONFIG], **secret_template_values()}
    known = settings_aliases()
    settings = load_settings(**{k: v for k, v in values.items() if k in known})
    assert settings.store_backend == "s3"
    assert settings.model_config_path is None, "the catalog folder names every model's config"
    assert str(settings.model_configs_dir) == "/etc/mlops/models"


@pytest.mark.parametrize(
    "pair", list(mlops_containers()), ids=[f"{d.rel}:{c['name']}" for d, c in mlops_containers()]
)
def test_mlops_container_env_names_are_settings(pair) -> None:
    item, c = pair
    aliases = settings_aliases()
    for env in c.get("env", []):
        name = env["name"]
        assert name in aliases or name in NON_SETTING_ENV, (
            f"{item}: env {name} is neither a Settings alias nor a known non-setting"
        )
        ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            assert ref["key"] == name, f"{item}: env {name} read from key {ref['key']}"


# The pods that read the model catalog: they train, score or monitor every model, or
# manage them (the dashboard); the MLflow users Job registers each model; the walk-forward
# trains the models it names.
CATALOG_READERS = (
    ("Job", "mlops-train"),
    ("CronJob", "mlops-train-weekly"),
    ("Job", "mlops-batch-infer"),
    ("Job", "mlops-monitor"),
    ("Deployment", "mlops-dashboard"),
    ("Job", "mlops-mlflow-users"),
    ("Job", "mlops-walk-forward-plan"),
    ("Job", "mlops-walk-forward"),
    ("Job", "mlops-walk-forward-finalize"),
)


def test_the_model_catalog_is_mounted_where_model_configs_dir_points() -> None:
    path = config_maps()[PIPELINE_CONFIG]["MODEL_CONFIGS_DIR"]
    assert "MODEL_CONFIG_PATH" not in config_maps()[PIPELINE_CONFIG]
    for kind, name in CATALOG_READERS:
        spec = pod_template(doc(kind, name))["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        (c,) = spec["containers"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert path in mounts, f"{name} does not mount the catalog at {path}"
        assert mounts[path].get("readOnly") is True, name
        volume = volumes[mounts[path]["name"]]
        assert volume["configMap"]["name"] == "mlops-model-configs", name
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env.get("MODEL_CONFIGS_DIR", path) == path, name
    assert {f"{m}.yaml" for m in ("stock-close", "stock-close-mlp", "stock-close-pooled")} <= set(
        config_maps()["mlops-model-configs"]
    )


def test_endpoints_in_the_config_name_the_services() -> None:
    data = config_maps()[PIPELINE_CONFIG]
    services = {d.name: d for d in docs("Service")}

    def check(url: str, expected_service: str) -> None:
        parsed = urlparse(url)
        assert parsed.hostname == expected_service, url
        ports = [p["port"] for p in services[expected_service].body["spec"]["ports"]]
        assert parsed.port in ports, url

    check(data["S3_ENDPOINT_URL"], "mlops-minio")
    check(data["MLFLOW_TRACKING_URI"], "mlops-mlflow")
    check(data["DATABASE_URL"].replace("+psycopg2", ""), "mlops-postgres")
    assert urlparse(data["DATABASE_URL"]).path == "/mlops"


def test_mlflow_server_is_wired_to_postgres_minio_and_its_names() -> None:
    (c,) = containers(doc("Deployment", "mlops-mlflow"))
    args = dict(a.split("=", 1) for a in c["args"] if a.startswith("--") and "=" in a)
    assert "--serve-artifacts" in c["args"]
    assert urlparse(args["--backend-store-uri"]).hostname == "mlops-postgres"
    assert urlparse(args["--backend-store-uri"]).path == "/mlflow"
    bucket = urlparse(args["--artifacts-destination"]).netloc
    (mc,) = containers(doc("Job", "mlops-minio-buckets"))
    env = {e["name"]: e.get("value") for e in mc["env"]}
    assert env["MLFLOW_BUCKET"] == bucket, "the bucket Job creates the artifacts bucket"
    hosts = args["--allowed-hosts"].split(",")
    for name in ("mlops-mlflow:*", f"mlops-mlflow.{NAMESPACE}.svc.cluster.local:*", "localhost:*"):
        assert name in hosts
    env = {e["name"]: e for e in c["env"]}
    assert (
        env["MLFLOW_S3_ENDPOINT_URL"]["value"] == config_maps()[PIPELINE_CONFIG]["S3_ENDPOINT_URL"]
    )


# Services and NetworkPolicies select real pods.


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("service", docs("Service"), ids=_ids(docs("Service")))
def test_service_selects_a_pod_template_with_its_ports(service: Doc) -> None:
    selector = service.body["spec"]["selector"]
    targets = [w for w in workloads() if _matches(selector, pod_template(w)["metadata"]["labels"])]
    targets = [w for w in targets if w.kind in ("Deployment", "StatefulSet")]
    assert targets, f"{service}: selects no Deployment or StatefulSet"
    for target in targets:
        ports = {
            p["name"]: p["containerPort"] for c in containers(target) for p in c.get("ports", [])
        }
        for port in service.body["spec"]["ports"]:
            target_port = port["targetPort"]
            assert target_port in ports or target_port in ports.values(), (
                f"{service}: port {port['name']} targets {target_port}, not a port of {target}"
            )


@pytest.mark.parametrize("policy", docs("NetworkPolicy"), ids=_ids(docs("NetworkPolicy")))
def test_network_policy_selects_pods(policy: Doc) -> None:
    selector = policy.body["spec"]["podSelector"].get("matchLabels", {})
    assert any(_matches(selector, pod_template(w)["metadata"]["labels"]) for w in workloads())
    peers = [p for rule in policy.body["spec"].get("ingress", []) for p in rule.get("from", [])]
    peers += [p for rule in policy.body["spec"].get("egress", []) for p in rule.get("to", [])]
    for peer in peers:
        if "namespaceSelector" in peer or "ipBlock" in peer:
            continue  # outside the namespace: kube-dns, the API server, the internet
        labels = peer["podSelector"]["matchLabels"]
        assert any(_matches(labels, pod_template(w)["metadata"]["labels"]) for w in workloads())


def test_only_labelled_pods_reach_the_data_services() -> None:
    policies = {d.name: d.body["spec"] for d in docs("NetworkPolicy")}
    assert policies["mlops-default-deny-ingress"]["podSelector"] == {}
    expected = {
        "mlops-postgres-ingress": ("postgres", "mlops/postgres-client", 5432),
        "mlops-minio-ingress": ("minio", "mlops/s3-client", 9000),
        "mlops-mlflow-ingress": ("mlflow", "mlops/mlflow-client", 5000),
    }
    for name, (app, label, port) in expected.items():
        spec = policies[name]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == app
        (rule,) = spec["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": {label: "true"}}}]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]


def test_pods_carry_the_client_label_of_exactly_the_services_they_log_in_to() -> None:
    for item in workloads():
        labels = pod_template(item)["metadata"]["labels"]
        for c in containers(item):
            env = {e["name"] for e in c.get("env", [])}
            if not c["image"].startswith("mlops-") or c["image"].startswith("mlops-mlflow:"):
                continue  # the servers and setup Jobs: test_network.py
            for variable, label in (
                ("PGPASSWORD", "mlops/postgres-client"),
                ("AWS_SECRET_ACCESS_KEY", "mlops/s3-client"),
                ("MLFLOW_TRACKING_PASSWORD", "mlops/mlflow-client"),
            ):
                has = labels.get(label) == "true"
                assert has == (variable in env), f"{item}: {label} iff {variable}"


# RBAC: only what the orchestration needs.


def test_roles_grant_only_what_orchestration_needs() -> None:
    def rules(name: str) -> set[tuple[str, str, str]]:
        return {
            (group, resource, verb)
            for rule in doc("Role", name).body["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }

    assert rules("mlops-orchestrator") == {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "delete"),
        ("batch", "jobs/status", "get"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
    }
    assert not docs("ClusterRole") and not docs("ClusterRoleBinding")
    for binding in docs("RoleBinding"):
        (subject,) = binding.body["subjects"]
        assert subject["kind"] == "ServiceAccount"
        assert binding.body["roleRef"]["name"] == subject["name"]


def test_tokens_are_mounted_only_where_the_api_is_used() -> None:
    accounts = {d.name for d in docs("ServiceAccount")}
    with_token = set()
    for item in workloads():
        spec = pod_template(item)["spec"]
        assert spec["serviceAccountName"] in accounts, f"{item}: unknown service account"
        if spec["automountServiceAccountToken"]:
            with_token.add((item.name, spec["serviceAccountName"]))
    assert with_token == {
        ("mlops-daily", "mlops-orchestrator"),
        ("mlops-requests", "mlops-orchestrator"),
    }, "the dashboard has no token: its requests are rows the controller acts on"


ORCHESTRATOR_CRONJOBS = ("mlops-daily", "mlops-requests")


def test_only_the_orchestrator_sees_the_job_templates() -> None:
    for name in ORCHESTRATOR_CRONJOBS:
        spec = pod_template(doc("CronJob", name))["spec"]
        (c,) = spec["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        folder = env["JOB_TEMPLATES_DIR"]["value"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volume = next(v for v in spec["volumes"] if v["name"] == mounts[folder])
        assert volume["configMap"]["name"] == "mlops-job-templates"
    for item in workloads():
        if item.name not in ORCHESTRATOR_CRONJOBS:
            volumes = pod_template(item)["spec"].get("volumes") or []
            names = [(v.get("configMap") or {}).get("name") for v in volumes]
            assert "mlops-job-templates" not in names, item.name


# Every container command is a real mlops subcommand.


def _registered_commands(app: typer.Typer) -> dict[str, Any]:
    """Subcommand name -> its (click-style) command object."""
    group = typer.main.get_command(app)
    return dict(group.commands)


def _container_cases() -> list[tuple[Doc, dict]]:
    return list(mlops_containers())


@pytest.mark.parametrize(
    "pair", _container_cases(), ids=[f"{d.rel}:{c['name']}" for d, c in _container_cases()]
)
def test_container_args_are_an_mlops_subcommand(pair) -> None:
    from mlops.cli import app

    item, c = pair
    commands = _registered_commands(app)
    # $(VAR) as the kubelet expands it, from the container's environment (and an Indexed
    # Job's JOB_COMPLETION_INDEX): every reference must be to a variable the pod has.
    variables = container_env(c, filled_secret())
    if job_spec(item).get("completionMode") == "Indexed":
        variables["JOB_COMPLETION_INDEX"] = "0"
    args = [expand(a, variables) for a in c.get("args") or []]
    unresolved = [a for a in args if "$(" in a]
    assert not unresolved, f"{item}: args name variables the container lacks: {unresolved}"
    assert args, f"{item}: args must name the subcommand"
    name = args[0]
    assert name in commands, f"{item}: `mlops {name}` is no subcommand of {sorted(commands)}"
    command = commands[name]
    # Parse the options exactly as the CLI would, without running the command.
    try:
        context = command.make_context(f"mlops {name}", list(args[1:]))
    except Exception as exc:  # typer vendors click: match its exceptions by shape
        if not hasattr(exc, "format_message"):
            raise
        pytest.fail(f"{item}: `mlops {' '.join(args)}` is rejected: {exc.format_message()}")
    else:
        context.close()


def test_daily_command_is_registered_with_its_options() -> None:
    from mlops.cli import app

    command = _registered_commands(app)["daily"]
    options = {opt for p in command.params for opt in p.opts}
    assert {"--as-of", "--rerun-failed", "--namespace", "--templates-dir"} <= options


def test_build_script_is_referenced_by_the_manifest_images() -> None:
    text = BUILD_SCRIPT.read_text()
    assert "mlops-$name" in text and '"$image:latest"' in text
