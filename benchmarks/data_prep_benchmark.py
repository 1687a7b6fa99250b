"""Benchmark of ``mlops data-prep``: read, validate, features and write at 50, 500, 5000 symbols.

Synthetic daily bars (a geometric random walk with consistent open/high/low, 10 years of
weekdays = 2520 bars per symbol) are written as one Parquet file per symbol, the layout a
per-symbol export would have; 500 symbols are also run from one long-layout Parquet file.
Each measured run is a fresh ``python`` subprocess running the real stage
(``mlops.data_prep.stage.run``) on the embedded store and SQLite database, so its peak
RSS is its own: the parent reads it with ``os.wait4`` (the child's ``ru_maxrss``).
For 500 symbols, N = 1, 2 and 4 shards (``DATA_PREP_SHARDS`` / ``JOB_COMPLETION_INDEX``,
as a Kubernetes Indexed Job runs them) are started side by side and the total wall time
is from the first start to the last exit (the last shard also finalizes the dataset).

    .venv/bin/python benchmarks/data_prep_benchmark.py            # the full table
    .venv/bin/python benchmarks/data_prep_benchmark.py --sizes 50 --shards 1,2

Data generation is not timed. Goal: 500 symbols in under 60 s and 1 GiB per shard.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

AS_OF = "2024-12-31"
DAYS_PER_YEAR = 252


# Child processes.


def generate(folder: Path, symbols: int, years: int, long_file: bool) -> None:
    """Write synthetic bars: one Parquet file per symbol, or one long-layout file."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    days = pd.bdate_range(end=AS_OF, periods=years * DAYS_PER_YEAR)
    writer = None
    for i in range(symbols):
        rng = np.random.default_rng(i)
        n = len(days)
        close = 20.0 * np.exp(rng.uniform(0, 3)) * np.exp(np.cumsum(rng.normal(0, 0.018, n)))
        open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.004, n))
        high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.006, n)))
        low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.006, n)))
        volume = rng.integers(100_000, 20_000_000, n).astype("float64")
        columns = {"date": days, "open": open_, "high": high, "low": low, "close": close}
        frame = pd.DataFrame({**columns, "volume": volume})
        symbol = f"S{i:05d}"
        if long_file:
            table = pa.Table.from_pandas(frame.assign(symbol=symbol), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(folder / "bars.parquet", table.schema)
            writer.write_table(table)
        else:
            frame.to_parquet(folder / f"{symbol}.parquet", index=False)
    if writer is not None:
        writer.close()


def worker() -> None:
    """Run the stage once with the settings in the environment; print its result as JSON."""
    import resource
    from datetime import date

    from mlops import log
    from mlops.context import open_context
    from mlops.contracts import keys
    from mlops.data_prep.stage import run
    from mlops.settings import load_settings

    settings = load_settings()
    log.configure(settings.log_format, settings.log_level)
    ctx = open_context(settings)
    began = time.perf_counter()
    result = run(ctx, as_of=date.fromisoformat(AS_OF))
    wall = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rows = result.rows
    if settings.data_prep_shards > 1:  # this shard's own rows, not the finalized dataset's
        from mlops.store import get_json

        key = keys.shard_manifest_key(
            date.fromisoformat(AS_OF), settings.job_completion_index, settings.data_prep_shards
        )
        rows = get_json(ctx.store, key)["contents"]["rows"]
    print(
        json.dumps(
            {
                "wall": wall,
                "rows": rows,
                "finalized": result.version is not None and result.new,  # published it
                "version": result.version,
                "timings": result.timings,
                "self_maxrss_kib": usage.ru_maxrss,
            }
        )
    )


# The parent.


@dataclass
class Run:
    case: str
    symbols: int
    shards: str
    rows: int
    wall: float  # the stage inside the process
    process_wall: float  # the whole process: start-up, imports, stage
    maxrss_mib: float
    cpu: float  # user + system seconds of the process
    timings: dict[str, float]


@dataclass
class Child:
    process: subprocess.Popen
    started: float
    out: Path
    err: Path


def _spawn(env: dict[str, str], logs: Path, *args: str) -> Child:
    """Start one child; its output goes to files, so a full pipe can never block it."""
    logs.mkdir(parents=True, exist_ok=True)
    name = "-".join(args) + f"-{env.get('JOB_COMPLETION_INDEX', '0')}"
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, __file__, *args], env=env, stdout=stdout, stderr=stderr
        )
    return Child(process, time.perf_counter(), out, err)


def _reap_all(children: list[Child]) -> list[tuple[dict, float, float, float]]:
    """Wait for the children in the order they end; for each (in the order given): its JSON,
    wall time, peak RSS in MiB and CPU seconds, from ``os.wait4`` (the child's rusage)."""
    by_pid = {c.process.pid: i for i, c in enumerate(children)}
    results: list[tuple[dict, float, float, float] | None] = [None] * len(children)
    while by_pid:
        pid, status, usage = os.wait4(-1, 0)
        ended = time.perf_counter()
        if pid not in by_pid:
            continue
        child = children[by_pid.pop(pid)]
        child.process.returncode = os.waitstatus_to_exitcode(status)
        out, err = child.out.read_text(), child.err.read_text()
        if child.process.returncode != 0:
            raise SystemExit(f"benchmark child failed ({child.process.returncode}):\n{err}{out}")
        payload = json.loads(out.strip().splitlines()[-1])
        rss = usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux
        cpu = usage.ru_utime + usage.ru_stime
        results[children.index(child)] = (payload, ended - child.started, rss, cpu)
    return [r for r in results if r is not None]


def _env(home: Path, data: Path, shards: int = 1, index: int = 0) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLOPS_", "DATA_", "STORE_", "S3_", "DATABASE_", "JOB_"))
    }
    env.update(
        {
            "MLOPS_HOME": str(home),
            "DATA_SOURCE": "files",
            "DATA_FILES": str(data),
            "DATA_PREP_SHARDS": str(shards),
            "JOB_COMPLETION_INDEX": str(index),
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


def _migrate(home: Path) -> None:
    from mlops.db import migrate
    from mlops.db.engine import make_engine

    home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{(home / 'mlops.db').resolve()}")
    migrate.upgrade(engine)
    engine.dispose()


def _data(work: Path, symbols: int, years: int, long_file: bool) -> Path:
    folder = work / f"data-{symbols}{'-long' if long_file else ''}"
    if not folder.exists():
        began = time.perf_counter()
        args = ["generate", str(folder), str(symbols), str(years)]
        subprocess.run(
            [sys.executable, __file__, *args, *(["--long"] if long_file else [])], check=True
        )
        print(
            f"  generated {symbols} symbols x {years} years "
            f"({'one long file' if long_file else 'one file per symbol'}) "
            f"in {time.perf_counter() - began:.1f} s",
            flush=True,
        )
    return folder


def measure_single(work: Path, symbols: int, years: int, long_file: bool = False) -> Run:
    data = _data(work, symbols, years, long_file)
    home = work / f"home-{symbols}{'-long' if long_file else ''}-1"
    shutil.rmtree(home, ignore_errors=True)
    _migrate(home)
    ((payload, process_wall, rss, cpu),) = _reap_all([_spawn(_env(home, data), home, "worker")])
    return Run(
        case="long file" if long_file else "file per symbol",
        symbols=symbols,
        shards="1",
        rows=payload["rows"],
        wall=payload["wall"],
        process_wall=process_wall,
        maxrss_mib=rss,
        cpu=cpu,
        timings=payload["timings"],
    )


def measure_shards(work: Path, symbols: int, years: int, count: int) -> list[Run]:
    data = _data(work, symbols, years, False)
    home = work / f"home-{symbols}-{count}"
    shutil.rmtree(home, ignore_errors=True)
    _migrate(home)
    began = time.perf_counter()
    children = [_spawn(_env(home, data, count, i), home, "worker") for i in range(count)]
    runs = []
    for index, (payload, process_wall, rss, cpu) in enumerate(_reap_all(children)):
        finalized = " (finalized)" if payload["finalized"] and count > 1 else ""
        runs.append(
            Run(
                case=f"shard {index} of {count}{finalized}" if count > 1 else "file per symbol",
                symbols=symbols,
                shards=f"{index}/{count}" if count > 1 else "1",
                rows=payload["rows"],
                wall=payload["wall"],
                process_wall=process_wall,
                maxrss_mib=rss,
                cpu=cpu,
                timings=payload["timings"],
            )
        )
    total = time.perf_counter() - began
    if count > 1:
        runs.append(
            Run(
                case=f"**N={count} side by side**",
                symbols=symbols,
                shards=f"all {count}",
                rows=sum(r.rows for r in runs),
                wall=max(r.wall for r in runs),
                process_wall=total,
                maxrss_mib=max(r.maxrss_mib for r in runs),
                cpu=sum(r.cpu for r in runs),
                timings={},
            )
        )
    return runs


def _table(runs: list[Run]) -> str:
    head = (
        "| case | symbols | shards | rows | stage wall s | process wall s | rows/s | "
        "peak RSS MiB | CPU s | read | validate | features | write+upload |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in runs:
        t = r.timings
        values = [t.get("read"), t.get("validate"), t.get("features")]
        values.append(t.get("write", 0) + t.get("publish", 0) if t else None)
        phases = ["" if v is None else f"{v:.1f}" for v in values]
        lines.append(
            f"| {r.case} | {r.symbols} | {r.shards} | {r.rows:,} | {r.wall:.1f} | "
            f"{r.process_wall:.1f} | {r.rows / r.process_wall:,.0f} | {r.maxrss_mib:,.0f} | "
            f"{r.cpu:.1f} | " + " | ".join(phases) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,500,5000", help="symbol counts, one shard each")
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--shard-symbols", type=int, default=500)
    parser.add_argument("--shards", default="1,2,4", help="shard counts run side by side")
    parser.add_argument("--no-long", action="store_true", help="skip the long-layout file run")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (reused)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at start, work folder {work}"
    )
    runs: list[Run] = []
    try:
        for size in [int(s) for s in args.sizes.split(",") if s]:
            runs.append(measure_single(work, size, args.years))
            print(f"  {size} symbols: {runs[-1].process_wall:.1f} s", flush=True)
        if not args.no_long:
            runs.append(measure_single(work, args.shard_symbols, args.years, long_file=True))
            print(f"  {args.shard_symbols} symbols, long file: {runs[-1].process_wall:.1f} s")
        for count in [int(s) for s in args.shards.split(",") if s]:
            runs.extend(measure_shards(work, args.shard_symbols, args.years, count))
            print(f"  {count} shards: {runs[-1].process_wall:.1f} s", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end\n")
    print(_table(runs))
    print()
    print(
        "stage wall: the stage inside the process; process wall: start to exit, imports "
        "included (for N side by side: first start to last exit); rows/s: rows / process "
        "wall; peak RSS: ru_maxrss of the child (os.wait4), for N side by side the largest "
        "shard's; CPU: user + system seconds (for N side by side: summed); phases: seconds "
        "inside the stage (write+upload: local Parquet parts, then the store)."
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker()
    elif len(sys.argv) > 1 and sys.argv[1] == "generate":
        generate(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "--long" in sys.argv)
    else:
        main()
