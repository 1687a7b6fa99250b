"""Memory, start-up and single-record speed of `mlops serve`: portable export vs torch.

Starts `mlops serve` on the same registered champion twice, one after the other, and
prints for each: seconds from process start until ``/readyz`` answers 200, resident
memory (RSS, MiB) once ready and after the requests, which heavy libraries it imported,
and sequential single-record ``/predict`` requests per second on one keep-alive
connection. The two servers:

* ``portable``: this tree, which loads the version's portable export with NumPy;
* ``torch``: the tree of ``--baseline-rev`` (default ``HEAD``: the last commit, check out
  in a temporary git worktree), run with this venv; pass the commit before the portable
  export to compare with the torch fast path.

    .venv/bin/python benchmarks/serve_footprint.py --baseline-rev <commit>
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_setup import VENV_BIN, clean_env, ensure_model, features, free_port

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
    found = {name for name in ("torch", "ludwig") if f"/site-packages/{name}/" in maps}
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


def measure(name: str, src: Path, home: Path, record: dict, count: int) -> dict:
    port = free_port()
    env = clean_env(home, SERVE_PORT=str(port), SERVE_HOST="127.0.0.1", PYTHONPATH=str(src))
    began = time.monotonic()
    process = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c", "from mlops.cli import main; main()", "serve"],
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
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="mlops-serve-footprint-"))
    model = ensure_model(home)
    record = features(model.home).iloc[-1].to_dict()
    record = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in record.items()}
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
        try:
            rows = []
            for _ in range(args.rounds):  # alternate: the machine is shared and noisy
                rows.append(measure("portable", ROOT / "services", home, record, args.requests))
                rows.append(
                    measure(
                        f"torch ({args.baseline_rev})",
                        baseline / "services",
                        home,
                        record,
                        args.requests,
                    )
                )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
                check=False,
            )
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))


if __name__ == "__main__":
    main()
