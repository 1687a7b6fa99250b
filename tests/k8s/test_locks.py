"""The lock files (locks/, `make lock`): current, consistent with each other, used.

dev.txt is the one resolution (what `make venv` installs and the tests run with); every
image's lock is a subset of it at the same versions, so an image never holds a version
the tests did not run with.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from .manifests import ROOT

LOCKS = ROOT / "locks"


def _lock_module():
    spec = importlib.util.spec_from_file_location("lock", LOCKS / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


def _pins(path: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, block in lock.blocks(path.read_text()):
        first = block.splitlines()[0].rstrip(" \\")
        version = first.split(";")[0].split("==", 1)[1].strip()
        found.setdefault(name, set()).add(version)
    return found


LOCK_FILES = sorted(LOCKS.glob("*.txt"))


def test_every_image_lock_and_the_venv_lock_exist() -> None:
    names = {p.name for p in LOCK_FILES}
    assert names == {
        "dev.txt",
        "base.txt",
        "ml.txt",
        "torch.txt",
        "trade.txt",
        "monitor.txt",
        "k8s.txt",
        "infer.txt",
        "serve.txt",
        "mlflow-server.txt",
        "dashboard.txt",
    }


@pytest.mark.parametrize("path", LOCK_FILES, ids=lambda p: p.name)
def test_lock_is_current_with_pyproject(path: Path) -> None:
    digest = re.search(r"^# pyproject.toml dependencies sha256: (\w+)$", path.read_text(), re.M)
    assert digest, f"{path.name}: no header; run make lock"
    assert digest.group(1) == lock.inputs_digest(), (
        f"{path.name} was made from another pyproject.toml: run `make lock`"
    )


@pytest.mark.parametrize(
    "path", [p for p in LOCK_FILES if p.name != "torch.txt"], ids=lambda p: p.name
)
def test_every_pin_has_hashes_and_equals_the_venv_lock(path: Path) -> None:
    dev = _pins(LOCKS / "dev.txt")
    for name, block in lock.blocks(path.read_text()):
        assert "--hash=sha256:" in block, f"{path.name}: {name} has no hash"
        assert "==" in block.splitlines()[0], f"{path.name}: {name} is not pinned"
    for name, versions in _pins(path).items():
        assert versions <= dev.get(name, set()), f"{path.name}: {name} {versions} not as in dev.txt"


def test_the_torch_family_comes_only_from_torch_txt() -> None:
    ml = _pins(LOCKS / "ml.txt")
    for name in ml:
        assert name not in lock.TORCH_FAMILY and not lock.CUDA_ONLY.match(name), name
    dev = _pins(LOCKS / "dev.txt")
    torch = {}
    for line in (LOCKS / "torch.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            torch[name] = version
            assert "--hash" not in line
    assert set(torch) == set(lock.TORCH_FAMILY)
    for name, version in torch.items():
        assert dev[name] == {version}, name


def test_the_venv_lock_keeps_what_ci_relies_on() -> None:
    dev = {name: Version(min(v)) for name, v in _pins(LOCKS / "dev.txt").items()}
    for spec in ("torch<2.15", "pandas<3", "ludwig==0.17.10", "mlflow==3.17.*",
                 "evidently==0.7.23", "alpaca-py==0.44.*", "flask-wtf"):  # fmt: skip
        requirement = Requirement(spec)
        assert requirement.name in dev, spec
        assert requirement.specifier.contains(dev[requirement.name]), spec


def test_make_venv_installs_the_lock_and_make_lock_writes_it() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := locks/dev.txt" in makefile
    assert "pip install --no-deps --require-hashes -r $(LOCK)" in makefile
    assert "$(VENV_STAMP): pyproject.toml $(LOCK)" in makefile
    assert re.search(r"^lock: ", makefile, re.M)
    assert "locks/lock.py --uv" in makefile
    assert "!locks/*.txt" in (ROOT / ".dockerignore").read_text().split()
