"""Benchmark of the walk-forward on the bundled sample: the three catalog models retrained
quarterly (every 63 sessions) over the last 18 months (2016-07-01 to 2017-12-29: 6 retrain
points, 18 real Ludwig trainings with the configs' own epochs and early stopping).

Each run is a fresh embedded home (SQLite, MLflow on SQLite, the local store) in a fresh
``mlops`` process; what is timed is ``mlops walk-forward`` alone (data prep is done
before). Printed per run: wall seconds, CPU seconds of the process and its pool workers,
and the command's own phase timings (load, train, gate, simulate); then each model's
headline figures.

    .venv/bin/python benchmarks/walkforward_benchmark.py                 # --workers 1 and 2
    .venv/bin/python benchmarks/walkforward_benchmark.py --workers 2 --epochs 3

Goal: within 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLOPS = str(Path(sys.executable).with_name("mlops"))


def _env(home: Path, epochs: int | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLOPS_", "MLFLOW_", "DATABASE_", "STORE_", "S3_", "AWS_"))
    }
    env.update({"MLOPS_HOME": str(home), "DATA_SOURCE": "sample", "LOG_LEVEL": "WARNING"})
    if epochs is not None:
        env["TRAIN_EPOCHS"] = str(epochs)
    return env


def one_run(workers: int, epochs: int | None, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="wf-bench-") as tmp:
        env = _env(Path(tmp), epochs)
        for command in (["migrate"], ["data-prep", "--as-of", "2017-12-29"]):
            subprocess.run([MLOPS, *command], env=env, check=True, capture_output=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        done = subprocess.run(
            [MLOPS, "walk-forward", *args, "--workers", str(workers)],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"mlops walk-forward failed (exit {done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"workers": workers, "wall": wall, "cpu": cpu, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="TRAIN_EPOCHS override")
    parser.add_argument("--from", dest="start", default="2016-07-01")
    parser.add_argument("--to", dest="end", default="2017-12-29")
    parser.add_argument("--retrain-every", type=int, default=63)
    options = parser.parse_args()
    args = [
        "--from",
        options.start,
        "--to",
        options.end,
        "--retrain-every",
        str(options.retrain_every),
    ]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for workers in options.workers:
        run = one_run(workers, options.epochs, args)
        result = run["result"]
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items())
        print(
            f"--workers {workers}: {result['points']} retrain points x {len(result['models'])} "
            f"models, {result['sessions']} sessions: {run['wall']:.1f} s wall, "
            f"{run['cpu']:.1f} s CPU ({phases}); load average after "
            f"{os.getloadavg()[0]:.2f}"
        )
    summary = result["summary"]
    hold = summary["benchmarks"]["buy_and_hold"]
    for model, figures in summary["models"].items():
        f, t = figures["forecast"], figures["trading"]
        print(
            f"  {model}: IC {f['ic_mean']:+.4f} (t {f['ic_t']:+.2f}), Rank IC "
            f"{f['rank_ic_mean']:+.4f}; MAPE {f['mape']:.4%} vs naive {f['naive_mape']:.4%} "
            f"(DM p {f['dm_p_value_naive']:.3f}); return {t['total_return']:+.2%}, Sharpe "
            f"{_n(t['sharpe'])} [{_n(t.get('sharpe_ci_low'))}, {_n(t.get('sharpe_ci_high'))}],"
            f" {t['trades']:.0f} trades; {figures['promotions']} promotions, "
            f"{figures['sessions_without_champion']} sessions without a champion"
        )
    print(
        f"  buy-and-hold: {hold['total_return']:+.2%}, Sharpe {_n(hold['sharpe'])} "
        f"[{_n(hold.get('sharpe_ci_low'))}, {_n(hold.get('sharpe_ci_high'))}]"
    )


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
