"""Write the ConfigMaps that carry copies of repository files, from those files.

- ``config-maps/model-configs.yaml``: ``<name>.yaml`` = ``services/mlops/resources/models/
  <name>.yaml`` for every model of the catalog (mounted at ``/etc/mlops/models``, the
  pipeline ConfigMap's ``MODEL_CONFIGS_DIR``).
- ``config-maps/job-templates.yaml``: ``job-<stage>.yaml`` = ``deployments/job-<stage>.yaml``
  for every stage ``mlops daily`` creates, training included (mounted into the
  orchestrator at ``/etc/mlops/jobs``).
- ``overlays/registry/job-templates.yaml``: the same templates with the registry overlay's
  images (its ``images:``), pulled Always - kustomize changes images in the Jobs it
  renders but not in a ConfigMap's text, so the overlay patches the ConfigMap with these.
- ``overlays/registry/admission-images.yaml``: the admission policy's lists of images
  (``deployments/admission-policy.yaml``) with the registry overlay's image names, a
  JSON patch the overlay applies to the policy.

- ``overlays/registry/kustomization.yaml``: the setup Jobs' names (``mlops-migrate``,
  ``mlops-minio-buckets``, ``mlops-mlflow-users``) with a digest of what each runs - its
  manifest, the ConfigMaps it mounts and the overlay's images - so a new tag or an edit
  gives a new Job, which ``kubectl apply -k`` creates and runs (a Job's pod template is
  immutable: applying a changed one under its old name fails with "field is immutable"),
  while an unchanged one applies as it is.

After editing any of those files run ``python tests/k8s/sync_configmaps.py``; the tests in
``tests/k8s`` fail while a ConfigMap differs from what this script writes. With
``--registry REGISTRY --tag TAG`` it first sets the registry overlay's images to
``REGISTRY/mlops-<name>:TAG``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL_CONFIGS = ROOT / "services" / "mlops" / "resources" / "models"
DEPLOYMENTS = ROOT / "deployments"
CONFIG_MAPS = ROOT / "config-maps"
TEMPLATE_STAGES = ("data-prep", "batch-infer", "trade", "monitor", "train")
REGISTRY_OVERLAY = ROOT / "overlays" / "registry"
ADMISSION_POLICY = DEPLOYMENTS / "admission-policy.yaml"
# The policy's variables that list image names (the overlay replaces them).
IMAGE_VARIABLES = ("allowedImages", "externalImages")
# Annotations that say why a check is skipped for local images; the overlay drops them.
LOCAL_IMAGE_SKIPS = ("checkov.io/skip-pull-policy", "checkov.io/skip-latest-tag")


def _labels(name: str) -> str:
    return (
        "  labels:\n"
        f"    app.kubernetes.io/name: {name}\n"
        "    app.kubernetes.io/instance: mlops\n"
        "    app.kubernetes.io/component: configuration\n"
        "    app.kubernetes.io/part-of: mlops\n"
        "    app.kubernetes.io/managed-by: kubectl\n"
    )


def literal_block(key: str, text: str) -> str:
    """``key: |`` followed by ``text`` indented; reads back as exactly ``text``."""
    stripped = text.rstrip("\n")
    trailing = len(text) - len(stripped)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    indent = "2" if stripped[:1] in (" ", "\t") else ""
    body = "".join(f"    {line}\n" if line else "\n" for line in stripped.split("\n"))
    if trailing > 1:
        body += "\n" * (trailing - 1)
    return f"  {key}: |{indent}{chomp}\n{body}"


def config_map(name: str, header: str, data: dict[str, str]) -> str:
    blocks = "".join(literal_block(key, value) for key, value in data.items())
    return (
        f"{header}"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        f"  name: {name}\n"
        "  namespace: mlops\n"
        f"{_labels(name.removeprefix('mlops-'))}"
        "data:\n"
        f"{blocks}"
    )


def overlay_images(overlay: Path = REGISTRY_OVERLAY) -> dict[str, str]:
    """The overlay's ``images:``: local name -> ``newName:newTag``."""
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    return {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}


def with_registry_images(text: str, images: dict[str, str]) -> str:
    """A Job manifest's text with the overlay's images, pulled Always, comments kept."""

    def image(match: re.Match[str]) -> str:
        return f"{match.group(1)}{images[match.group(2)]}"

    text = re.sub(r"^(\s+image: )(mlops-[a-z-]+):latest$", image, text, flags=re.M)
    text = re.sub(r"^(\s+imagePullPolicy: )IfNotPresent$", r"\1Always", text, flags=re.M)
    skips = "|".join(re.escape(s) for s in LOCAL_IMAGE_SKIPS)
    return re.sub(rf"^\s+(?:{skips}): .*\n", "", text, flags=re.M)


def set_overlay_images(registry: str, tag: str, overlay: Path = REGISTRY_OVERLAY) -> None:
    path = overlay / "kustomization.yaml"
    text = re.sub(
        r"^(\s+newName: ).*/(mlops-[a-z-]+)$",
        lambda m: f"{m.group(1)}{registry.rstrip('/')}/{m.group(2)}",
        path.read_text(),
        flags=re.M,
    )
    text = re.sub(r"^(\s+newTag: ).*$", rf'\g<1>"{tag}"', text, flags=re.M)
    path.write_text(text)


def registry_policy_patch(images: dict[str, str]) -> str:
    """JSON patch operations that give the admission policy's image lists the overlay's
    image names (``newName``; any tag or digest stays allowed)."""
    policy = next(
        d
        for d in yaml.safe_load_all(ADMISSION_POLICY.read_text())
        if d and d["kind"] == "ValidatingAdmissionPolicy"
    )
    operations = []
    for index, variable in enumerate(policy["spec"]["variables"]):
        if variable["name"] not in IMAGE_VARIABLES:
            continue
        names = re.findall(r"'([^']+)'", variable["expression"])
        listed = ", ".join(f"'{images[name].rsplit(':', 1)[0]}'" for name in names)
        operations.append(
            f'- op: replace\n  path: /spec/variables/{index}/expression\n  value: "[{listed}]"\n'
        )
    return (
        "# GENERATED by tests/k8s/sync_configmaps.py from deployments/admission-policy.yaml\n"
        "# and the images of overlays/registry/kustomization.yaml: rerun it after editing\n"
        "# either. The admission policy's image lists with this overlay's image names.\n"
        + "".join(operations)
    )


# The Jobs that set the platform up, renamed by their digest in the registry overlay.
SETUP_JOBS = ("mlops-migrate", "mlops-minio-buckets", "mlops-mlflow-users")
_SETUP_NAME = re.compile(rf"^(\s+value: )({'|'.join(SETUP_JOBS)})(-[0-9a-f]{{8}})?$", re.M)


def _objects(kind: str) -> dict[str, dict]:
    """The base's objects of ``kind`` (deployments/ and config-maps/), by name."""
    paths = [*sorted(DEPLOYMENTS.glob("*.yaml")), *sorted(CONFIG_MAPS.glob("*.yaml"))]
    return {
        body["metadata"]["name"]: body
        for path in paths
        for body in _bodies(path.read_text())
        if body and body.get("kind") == kind
    }


@functools.cache
def _bodies(text: str) -> tuple[Any, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there is one
    return tuple(yaml.load_all(text, Loader=loader))


def setup_job_names(images: dict[str, str]) -> dict[str, str]:
    """Each setup Job's name in the registry overlay: ``<name>-<digest>`` of its manifest,
    the ConfigMaps it mounts and the overlay's images."""
    jobs, maps = _objects("Job"), _objects("ConfigMap")
    names = {}
    for name in SETUP_JOBS:
        job = jobs[name]
        volumes = job["spec"]["template"]["spec"].get("volumes", [])
        mounted = sorted(v["configMap"]["name"] for v in volumes if "configMap" in v)
        what = {"job": job, "config": {m: maps[m]["data"] for m in mounted}, "images": images}
        digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
        names[name] = f"{name}-{digest}"
    return names


def with_setup_names(kustomization: str, names: dict[str, str]) -> str:
    """The overlay's kustomization with the setup Jobs' generated names."""
    seen: set[str] = set()

    def rename(match: re.Match[str]) -> str:
        seen.add(match.group(2))
        return f"{match.group(1)}{names[match.group(2)]}"

    text = _SETUP_NAME.sub(rename, kustomization)
    missing = sorted(set(names) - seen)
    if missing:
        raise SystemExit(f"{REGISTRY_OVERLAY}/kustomization.yaml renames no Job {missing}")
    return text


def render() -> dict[Path, str]:
    """Path -> the text it must have."""
    model = config_map(
        "mlops-model-configs",
        "# GENERATED by tests/k8s/sync_configmaps.py from services/mlops/resources/models/:\n"
        "# edit those files and rerun the script. The model catalog: one Ludwig config per\n"
        "# model, named after it (its MLflow registry name), mounted at /etc/mlops/models\n"
        "# (MODEL_CONFIGS_DIR) into training, batch inference, monitoring, the dashboard and\n"
        "# the MLflow users Job. Add a model: add its file there, rerun, apply.\n",
        {path.name: path.read_text() for path in sorted(MODEL_CONFIGS.glob("*.yaml"))},
    )
    templates = config_map(
        "mlops-job-templates",
        "# GENERATED by tests/k8s/sync_configmaps.py from deployments/job-<stage>.yaml: edit\n"
        "# those files and rerun the script. The Job templates `mlops daily` (the CronJob in\n"
        "# deployments/cronjob-daily.yaml) builds each day's Jobs from, its training Job\n"
        "# included, mounted at /etc/mlops/jobs.\n",
        {
            f"job-{stage}.yaml": (DEPLOYMENTS / f"job-{stage}.yaml").read_text()
            for stage in TEMPLATE_STAGES
        },
    )
    images = overlay_images()
    registry_templates = config_map(
        "mlops-job-templates",
        "# GENERATED by tests/k8s/sync_configmaps.py from deployments/job-<stage>.yaml and the\n"
        "# images of overlays/registry/kustomization.yaml: rerun it after editing either. The\n"
        "# registry overlay patches the base's mlops-job-templates with it, so the Jobs\n"
        "# `mlops daily` creates pull the same images as everything else.\n",
        {
            f"job-{stage}.yaml": with_registry_images(
                (DEPLOYMENTS / f"job-{stage}.yaml").read_text(), images
            )
            for stage in TEMPLATE_STAGES
        },
    )
    kustomization = REGISTRY_OVERLAY / "kustomization.yaml"
    return {
        CONFIG_MAPS / "model-configs.yaml": model,
        CONFIG_MAPS / "job-templates.yaml": templates,
        REGISTRY_OVERLAY / "job-templates.yaml": registry_templates,
        REGISTRY_OVERLAY / "admission-images.yaml": registry_policy_patch(images),
        kustomization: with_setup_names(kustomization.read_text(), setup_job_names(images)),
    }


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    result.add_argument("--registry", help="the registry overlay's image prefix")
    result.add_argument("--tag", help="the registry overlay's image tag")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if bool(args.registry) != bool(args.tag):
        parser().error("--registry and --tag go together")
    if args.registry:
        set_overlay_images(args.registry, args.tag)
    for path, text in render().items():
        if path.exists() and path.read_text() == text:
            print(f"{path.relative_to(ROOT)} is up to date")
            continue
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    names = setup_job_names(overlay_images())
    print(f"The registry overlay's setup Jobs: {', '.join(names.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
