"""Start-up, memory and single-record speed of `mlops serve`: this tree against another.

Starts `mlops serve` on the same registered champion from two trees, alternating, and
prints for each start: seconds from process start until ``/readyz`` answers 200, resident
memory (RSS, MiB) once ready and after the requests, which heavy libraries it mapped
(torch, pandas: their compiled parts), and sequential single-record ``/predict``
requests per second on one keep-alive connection. The two trees:

* ``this tree``: the working tree of this file;
* ``baseline (<rev>)``: the tree of ``--baseline-rev`` (default ``HEAD``: the last commit),
  checked out in a temporary git worktree.

The registry (``--registry``): ``server`` (default), a local ``mlflow server`` with the
version's files behind its artifact proxy, as in the cluster (``deployments/mlflow.yaml``);
``embedded``, the MLflow SQLite registry in the model home, with no server. Both trees run
with ``--python`` (default: this venv's); a venv made from ``locks/serve.txt`` measures
the serve image's environment.

    .venv/bin/python benchmarks/serve_footprint.py --baseline-rev <commit>
    .venv/bin/python benchmarks/serve_footprint.py --baseline-rev <commit> \\
        --python /tmp/serve-venv/bin/python --registry embedded
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_setup import VENV_BIN, clean_env, ensure_model, features, free_port, tracking_server

ROOT = Path(__file__).resolve().parents[1]


def _ready(port: int, process: subprocess.Popen, timeout: float = 300.0) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"mlops serve exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError("mlops serve did not become ready")


def _rss_mib(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def _heavy(pid: int) -> list[str]:
    """Heavy libraries whose files the server has mapped (a proxy for what it imported)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    names = ("torch", "ludwig", "pandas")  # a pure-Python package maps no file: not seen
    found = {name for name in names if f"/site-packages/{name}/" in maps}
    return sorted(found)


def _requests_per_second(port: int, record: dict, count: int) -> float:
    body = json.dumps(record)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    began = time.perf_counter()
    for _ in range(count):
        conn.request("POST", "/predict", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/predict answered {response.status}")
    return count / (time.perf_counter() - began)


def measure(
    name: str,
    src: Path,
    home: Path,
    record: dict,
    count: int,
    python: Path,
    tracking_uri: str | None,
) -> dict:
    port = free_port()
    env = clean_env(home, SERVE_PORT=str(port), SERVE_HOST="127.0.0.1", PYTHONPATH=str(src))
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    began = time.monotonic()
    process = subprocess.Popen(
        [str(python), "-c", "from mlops.cli import main; main()", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = _ready(port, process)
        rss_ready = _rss_mib(process.pid)
        rate = _requests_per_second(port, record, count)
        rss_after = _rss_mib(process.pid)
        heavy = _heavy(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {
        "server": name,
        "ready_s": round(ready, 2),
        "rss_ready_mib": round(rss_ready),
        "rss_after_mib": round(rss_after),
        "req_per_s": round(rate),
        "heavy_modules": ",".join(heavy) or "-",
        "wall_s": round(time.monotonic() - began, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="model home (kept)")
    parser.add_argument("--baseline-rev", default="HEAD")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--registry", choices=("server", "embedded"), default="server")
    parser.add_argument("--python", type=Path, default=VENV_BIN / "python")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="mlops-serve-footprint-"))
    model = ensure_model(home)
    record = features(model.home).iloc[-1].to_dict()
    record = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in record.items()}
    print(f"load average before: {os.getloadavg()}", flush=True)
    with contextlib.ExitStack() as stack:
        tracking_uri = (
            stack.enter_context(tracking_server(model)) if args.registry == "server" else None
        )
        rows = _alternate(args, home, record, tracking_uri)
    print(f"load average after: {os.getloadavg()}")
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))


def _alternate(
    args: argparse.Namespace, home: Path, record: dict, tracking_uri: str | None
) -> list[dict]:
    """Both trees, one after the other, ``--rounds`` times (the machine is shared, noisy)."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mlops-baseline-") as tmp:
        baseline = Path(tmp) / "tree"
        subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "worktree",
                "add",
                "--detach",
                str(baseline),
                args.baseline_rev,
            ],
            check=True,
            capture_output=True,
        )
        trees = [
            ("this tree", ROOT / "services"),
            (f"baseline ({args.baseline_rev})", baseline / "services"),
        ]
        try:
            for _ in range(args.rounds):
                for name, src in trees:
                    rows.append(
                        measure(name, src, home, record, args.requests, args.python, tracking_uri)
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
                check=False,
            )
    return rows


if __name__ == "__main__":
    main()
