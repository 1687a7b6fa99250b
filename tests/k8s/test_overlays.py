"""The kustomize base and its overlays (kubectl apply -k overlays/<name>).

They are rendered with tests/k8s/kustomize.py (the features they use, nothing more) and,
where kubectl is installed, with `kubectl kustomize` too: both must agree. The output is
checked like the plain manifests: strict schemas, checkov, the images and pull policy of
each overlay, and the Job templates the orchestrator gets.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from . import kustomize, sync_configmaps
from .manifests import CONFIG_MAPS, DEPLOYMENTS, PERSISTENT, ROOT, build_script_images, docs_of
from .test_scans import run_checkov

OVERLAYS = ROOT / "overlays"
# The stage Jobs, and the walk-forward's (hours of training: never by themselves).
BY_HAND = {
    f"job-{s}.yaml"
    for s in (
        "data-prep",
        "train",
        "batch-infer",
        "trade",
        "monitor",
        "walk-forward-plan",
        "walk-forward",
        "walk-forward-finalize",
    )
}


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _render(name: str) -> list[dict]:
    return kustomize.render(OVERLAYS / name)


def _kubectl() -> str | None:
    return shutil.which("kubectl")


@pytest.mark.parametrize("name", ["minikube", "registry", "persistent"])
def test_the_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("no kubectl here: the renderer of tests/k8s/kustomize.py stands alone")
    folder = PERSISTENT if name == "persistent" else OVERLAYS / name
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    theirs = {_key(o): o for o in yaml.safe_load_all(result.stdout) if o}
    ours = {_key(o): o for o in kustomize.render(folder)}
    assert ours.keys() == theirs.keys()
    for key, obj in ours.items():
        assert obj == theirs[key], key


def test_the_base_holds_everything_but_the_stage_jobs_run_by_hand() -> None:
    base = yaml.safe_load((DEPLOYMENTS / "Kustomization").read_text())["resources"]
    files = {p.name for p in DEPLOYMENTS.glob("*.yaml")}
    assert set(base) == (files - BY_HAND) | {"../config-maps"}
    config = yaml.safe_load((CONFIG_MAPS / "Kustomization").read_text())["resources"]
    assert set(config) == {p.name for p in CONFIG_MAPS.glob("*.yaml")}
    persistent = yaml.safe_load((PERSISTENT / "Kustomization").read_text())["resources"]
    assert set(persistent) == {p.name for p in PERSISTENT.glob("*.yaml")}


@pytest.mark.parametrize("name", ["minikube", "registry"])
def test_kubectl_delete_k_of_an_overlay_keeps_the_data(name: str) -> None:
    """What `kubectl delete -k overlays/<name>` deletes is what the overlay renders: no
    namespace (deleting it deletes the Secret and every claim in it), no claim, no Secret;
    Postgres's claim outlives its StatefulSet. The data is deployments/persistent."""
    rendered = _render(name)
    kinds = {o["kind"] for o in rendered}
    assert not kinds & {"Namespace", "PersistentVolumeClaim", "PersistentVolume", "Secret"}
    (postgres,) = [o for o in rendered if o["kind"] == "StatefulSet"]
    assert postgres["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for o in rendered
        for v in (o.get("spec", {}).get("template", {}).get("spec", {}).get("volumes") or [])
        if "persistentVolumeClaim" in v
    }
    data = {_key(o) for o in kustomize.render(PERSISTENT)}
    assert data == {("Namespace", "mlops")} | {("PersistentVolumeClaim", c) for c in claims}


def test_the_minikube_overlay_is_the_manifests_as_they_are() -> None:
    names = sorted({p.name for p in DEPLOYMENTS.glob("*.yaml")} - BY_HAND)  # not persistent/
    paths = [*(DEPLOYMENTS / n for n in names), *sorted(CONFIG_MAPS.glob("*.yaml"))]
    expected = [d.body for path in paths for d in docs_of(path)]
    assert {_key(o): o for o in _render("minikube")} == {_key(o): o for o in expected}


def test_the_registry_overlay_pulls_every_mlops_image_from_the_registry() -> None:
    images = sync_configmaps.overlay_images()
    assert set(images) == {f"mlops-{n}" for n in build_script_images()}
    prefixes = {ref.rsplit("/", 1)[0] for ref in images.values()}
    tags = {ref.rsplit(":", 1)[1] for ref in images.values()}
    assert len(prefixes) == 1 and len(tags) == 1, "one registry, one tag for all"
    (tag,) = tags
    assert tag != "latest"
    rendered = _render("registry")
    jobs = []
    for obj in rendered:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "mlops-job-templates":
            assert set(obj["data"]) == {f"job-{s}.yaml" for s in sync_configmaps.TEMPLATE_STAGES}
            jobs += [yaml.safe_load(text) for text in obj["data"].values()]
    for obj in [*rendered, *jobs]:
        # The backup's pg_dump (the Postgres server's image) beside an mlops container: its
        # pull-policy skip stays, for that image only.
        released = [
            c for c in kustomize._containers(obj) if c["image"].startswith(("postgres:", "minio/"))
        ]
        for c in kustomize._containers(obj):
            local = c["image"].rsplit("/", 1)[-1].split(":")[0]
            annotations = obj["metadata"].get("annotations") or {}
            if local in images:
                assert c["image"] == images[local], _key(obj)
                assert c["imagePullPolicy"] == "Always", _key(obj)
                for skip in sync_configmaps.LOCAL_IMAGE_SKIPS:
                    reason = annotations.get(skip, "")
                    assert not reason or (released and "Postgres server's release tag" in reason), (
                        f"{_key(obj)}: {skip} is no longer true"
                    )
            else:
                assert c["image"].startswith(("postgres:", "minio/")), c["image"]
                assert c["imagePullPolicy"] == "IfNotPresent"
    assert len(jobs) == len(sync_configmaps.TEMPLATE_STAGES)


def test_the_registry_overlays_templates_are_what_the_script_writes() -> None:
    rendered = sync_configmaps.render()
    for name in ("job-templates.yaml", "kustomization.yaml"):
        path = OVERLAYS / "registry" / name
        assert path.read_text() == rendered[path], "run python tests/k8s/sync_configmaps.py"


def test_the_setup_jobs_get_a_new_name_with_a_new_tag_or_an_edit() -> None:
    """`kubectl apply -k overlays/registry` after a tag bump: new Jobs (they run, the new
    migrations included) instead of "field is immutable" on the old ones."""
    images = sync_configmaps.overlay_images()
    names = sync_configmaps.setup_job_names(images)
    jobs = {o["metadata"]["name"] for o in _render("registry") if o["kind"] == "Job"}
    assert set(names.values()) <= jobs
    assert not jobs & set(sync_configmaps.SETUP_JOBS), "no setup Job under its plain name"
    assert sync_configmaps.setup_job_names(images) == names  # the same input: the same Jobs
    bumped = {k: v.rsplit(":", 1)[0] + ":0.1.1" for k, v in images.items()}
    renamed = sync_configmaps.setup_job_names(bumped)
    for job in ("mlops-migrate", "mlops-mlflow-users"):  # mlops images: a new tag, new Jobs
        assert renamed[job] != names[job] and renamed[job].startswith(f"{job}-")


def test_setting_the_registry_rewrites_the_overlay(tmp_path: Path) -> None:
    overlay = tmp_path / "registry"
    shutil.copytree(OVERLAYS / "registry", overlay)
    sync_configmaps.set_overlay_images("registry.internal:5000/team", "v7", overlay)
    images = sync_configmaps.overlay_images(overlay)
    assert images["mlops-serve"] == "registry.internal:5000/team/mlops-serve:v7"
    assert len(set(images.values())) == len(images)


@pytest.mark.parametrize("name", ["minikube", "registry"])
def test_rendered_overlays_validate_strictly(name: str) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    for obj in _render(name):
        kubernetes_validate.validate(obj, latest_version(), strict=True)


def test_checkov_passes_on_the_rendered_registry_overlay(tmp_path: Path) -> None:
    rendered = tmp_path / "registry.yaml"
    rendered.write_text(yaml.safe_dump_all(_render("registry"), sort_keys=False))
    report = run_checkov(tmp_path)
    failed = report["results"].get("failed_checks", [])
    assert report["summary"]["failed"] == 0, [(c["check_id"], c["resource"]) for c in failed]
    assert report["summary"]["passed"] > 500
