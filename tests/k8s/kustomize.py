"""A small kustomize, for the features the overlays use, so the overlay tests run where
no kubectl is installed (test_overlays.py also compares it with `kubectl kustomize`
where there is one).

Supported, and nothing else (anything else in a kustomization fails loudly):
- ``resources``: files of one or more objects, and folders holding a kustomization
  (``kustomization.yaml`` or ``Kustomization``);
- ``images``: ``name`` -> ``newName`` / ``newTag`` in every container and init container;
- ``patches``: a ``path`` to, or an inline ``patch`` of, either a JSON 6902 list of
  operations (add, replace, remove) applied to the resources ``target`` selects (kind,
  and name as a full-match regular expression), or an object merged into the one of the
  same kind and name (a strategic merge patch limited to maps: keys are merged, a null
  deletes, anything else replaces - lists are never merged element-wise here).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}


class Unsupported(Exception):
    """A kustomization uses a feature this renderer does not implement."""


def kustomization_file(folder: Path) -> Path:
    found = [folder / n for n in KUSTOMIZATION_NAMES if (folder / n).is_file()]
    if len(found) != 1:
        raise Unsupported(f"{folder}: expected one kustomization file, found {found}")
    return found[0]


def render(folder: Path) -> list[dict[str, Any]]:
    folder = folder.resolve()
    spec = yaml.safe_load(kustomization_file(folder).read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise Unsupported(f"{folder}: kustomization fields {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            # libyaml's safe loader where there is one: the same objects, several times faster.
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            objects += [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    if len(keys) != len(set(keys)):
        raise Unsupported(f"{folder}: the same object twice")
    for patch in spec.get("patches", []):
        objects = _patch(folder, objects, patch)
    for image in spec.get("images", []):
        _image(objects, image)
    return objects


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = (spec.get("template") or {}).get("spec") or (spec if obj["kind"] == "Pod" else {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _image(objects: list[dict[str, Any]], image: dict[str, str]) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise Unsupported(f"images entry {image}")
    for obj in objects:
        for container in _containers(obj):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")


def _patch(folder: Path, objects: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict]:
    if set(entry) - {"path", "patch", "target"}:
        raise Unsupported(f"patch entry {sorted(entry)}")
    text = (folder / entry["path"]).read_text() if "path" in entry else entry["patch"]
    body = yaml.safe_load(text)
    if isinstance(body, list):
        target = entry.get("target") or {}
        if set(target) - {"kind", "name"}:
            raise Unsupported(f"patch target {target}")
        hits = 0
        for obj in objects:
            if target.get("kind", obj["kind"]) != obj["kind"]:
                continue
            if not re.fullmatch(target.get("name", ".*"), obj["metadata"]["name"]):
                continue
            for operation in body:
                _json6902(obj, operation)
            hits += 1
        if not hits:
            raise Unsupported(f"patch target {target} selects nothing")
        return objects
    if "target" in entry:
        raise Unsupported("a targeted strategic merge patch")
    key = (body["kind"], body["metadata"]["name"])
    matches = [o for o in objects if (o["kind"], o["metadata"]["name"]) == key]
    if len(matches) != 1:
        raise Unsupported(f"strategic merge patch of {key}: {len(matches)} objects")
    return [_merge(o, body) if o is matches[0] else o for o in objects]


def _merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        if isinstance(patch, list) and isinstance(base, list) and patch != base:
            raise Unsupported("merging lists (strategic merge keys) is not implemented")
        return copy.deepcopy(patch)
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def _json6902(obj: dict[str, Any], operation: dict[str, Any]) -> None:
    op, path = operation["op"], operation["path"]
    if op not in ("add", "replace", "remove"):
        raise Unsupported(f"JSON patch op {op}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "remove":
            del parent[index]
        elif op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
        else:
            parent[index] = copy.deepcopy(operation["value"])
        return
    if op in ("remove", "replace") and last not in parent:
        raise KeyError(f"{obj['kind']}/{obj['metadata']['name']}: no {path} to {op}")
    if op == "remove":
        del parent[last]
    else:
        parent[last] = copy.deepcopy(operation["value"])
