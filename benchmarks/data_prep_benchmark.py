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

Beside each size, in the same run: a minimal *reference* pipeline on the same files
(Arrow reads, the same features with TA-Lib, Arrow writes of the same parts with the same
Parquet options; no checks, no hashes, no store), so the stage's overhead over a lean
implementation is visible; it reads its parts back afterwards (not timed) and shows their
dataset hash, which equals the stage's when the output is the same. ``--baseline-rev REV``
also runs the stage of an earlier commit (``git archive``) on the same data: before and
after, in one run on the same machine.

    .venv/bin/python benchmarks/data_prep_benchmark.py            # the full table
    .venv/bin/python benchmarks/data_prep_benchmark.py --sizes 50 --shards 1,2
    .venv/bin/python benchmarks/data_prep_benchmark.py --sizes 500,5000 --shards "" \
        --no-long --baseline-rev 5c971ef --workdir /tmp/bench

Data generation is not timed. Goals: 5000 symbols in at most 60 s of wall time on two idle
cores and 40 s of CPU, 500 in 6 s, memory flat; at most 1.5 times the reference's CPU.
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
    began, cpu = time.perf_counter(), time.process_time()
    result = run(ctx, as_of=date.fromisoformat(AS_OF))
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
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
                "cpu": cpu,
                "rows": rows,
                "finalized": result.version is not None and result.new,  # published it
                "version": result.version,
                "timings": result.timings,
                "self_maxrss_kib": usage.ru_maxrss,
            }
        )
    )


class _Phases:
    """Wall and CPU seconds per phase, as the stage's own timings (``name``, ``name_cpu``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):  # type: ignore[no-untyped-def]
        import contextlib

        @contextlib.contextmanager
        def timed():  # type: ignore[no-untyped-def]
            began, cpu = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                for key, value in (
                    (name, time.perf_counter() - began),
                    (f"{name}_cpu", time.process_time() - cpu),
                ):
                    self.seconds[key] = self.seconds.get(key, 0.0) + value

        return timed()


def reference(folder: Path, out: Path) -> None:
    """The minimal pipeline: each file read with Arrow, the features computed with TA-Lib
    and numpy, the rows written with Arrow into parts cut as the stage cuts them (between
    symbols, at most ``PART_ROWS`` rows, row groups of ``GROUP_ROWS``) with the same
    Parquet options. Then, not timed: its parts' dataset hash, as the stage computes it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import talib

    from mlops.data_prep.dataset import GROUP_ROWS, PART_ROWS, parquet_options

    out.mkdir(parents=True, exist_ok=True)
    phases = _Phases()
    parts: list[Path] = []
    pending: list = []  # tables of the row group being gathered
    state = {"writer": None, "part_rows": 0, "pending_rows": 0}

    def write_group() -> None:
        if not pending:
            return
        table = pa.concat_tables(pending)
        pending.clear()
        state["pending_rows"] = 0
        if state["writer"] is None:
            parts.append(out / f"part-{len(parts):05d}.parquet")
            options = parquet_options(table.schema)
            state["writer"] = pq.ParquetWriter(parts[-1], table.schema, **options)
        state["writer"].write_table(table)  # type: ignore[attr-defined]

    def close_part() -> None:
        write_group()
        if state["writer"] is not None:
            state["writer"].close()  # type: ignore[attr-defined]
        state["writer"], state["part_rows"] = None, 0

    began, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for path in sorted(folder.glob("*.parquet")):
        with phases("read"):
            bars = pq.ParquetFile(path).read(use_threads=False)
            date = bars.column("date")
            close, high, low, volume = (
                bars.column(c).to_numpy() for c in ("close", "high", "low", "volume")
            )
        with phases("features"):
            previous = np.r_[np.nan, close[:-1]]
            sma, ema, dema = (
                talib.SMA(close, timeperiod=10),
                talib.EMA(close, timeperiod=10),
                talib.DEMA(close, timeperiod=10),
            )
            features = {
                "rsi_14": talib.RSI(close, timeperiod=14),
                "sma_10": sma,
                "ema_10": ema,
                "dema_10": dema,
                "change": close - previous,
                "return_1d": close / previous - 1.0,
                "range_pct": (high - low) / close,
                "log_volume": np.log1p(volume),
                "close_to_sma_10": close / sma - 1.0,
                "close_to_ema_10": close / ema - 1.0,
                "close_to_dema_10": close / dema - 1.0,
            }
            warmup = np.isnan(np.column_stack([close, *features.values()])).any(axis=1)
            next_close = np.r_[close[1:], np.nan]
            next_return = next_close / close - 1.0
            target_date = np.r_[date.to_numpy()[1:], np.datetime64("NaT", "ns")]
            columns = {
                "date": date,
                "symbol": pa.repeat(pa.scalar(path.stem, pa.string()), len(close)),
                **{c: bars.column(c) for c in ("open", "high", "low", "close", "volume")},
                **{c: pa.array(v, mask=np.isnan(v)) for c, v in features.items()},
                "warmup": pa.array(warmup),
                "next_close": pa.array(next_close, mask=np.isnan(next_close)),
                "next_return": pa.array(next_return, mask=np.isnan(next_return)),
                "target_date": pa.array(target_date, mask=np.isnat(target_date)),
            }
            table = pa.table(columns)
        with phases("write"):
            if state["part_rows"] and state["part_rows"] + table.num_rows > PART_ROWS:
                close_part()
            pending.append(table)
            state["part_rows"] += table.num_rows
            state["pending_rows"] += table.num_rows
            if state["pending_rows"] >= GROUP_ROWS:
                write_group()
        rows += table.num_rows
    with phases("write"):
        close_part()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "rows": rows,
                "timings": phases.seconds,
                "version": _parts_hash(parts),
            }
        )
    )


def _parts_hash(parts: list[Path]) -> str:
    """The dataset hash of these parts (no stale or skipped symbols), as the stage names
    its versions: ``<as of>-<first 12 hex>``."""
    import pandas as pd

    from mlops.data_prep.dataset import content_hash, dataset_hash

    hashes = [content_hash(pd.read_parquet(path)) for path in parts]
    return f"{AS_OF}-{dataset_hash(hashes, [])[:12]}"


# The parent.


@dataclass
class Run:
    case: str
    symbols: int
    shards: str
    rows: int
    wall: float  # the stage inside the process
    cpu: float | None  # the stage inside the process (None: the child did not say)
    process_wall: float  # the whole process: start-up, imports, stage
    maxrss_mib: float
    process_cpu: float  # user + system seconds of the process
    timings: dict[str, float]
    version: str | None = None


@dataclass
class Child:
    process: subprocess.Popen
    started: float
    out: Path
    err: Path


def _spawn(env: dict[str, str], logs: Path, *args: str) -> Child:
    """Start one child; its output goes to files, so a full pipe can never block it."""
    logs.mkdir(parents=True, exist_ok=True)
    name = "-".join(Path(a).name for a in args) + f"-{env.get('JOB_COMPLETION_INDEX', '0')}"
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


def _env(
    home: Path, data: Path, shards: int = 1, index: int = 0, services: Path | None = None
) -> dict[str, str]:
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
    if services is not None:  # another tree's code (--baseline-rev)
        env["PYTHONPATH"] = os.pathsep.join([str(services), env.get("PYTHONPATH", "")])
    return env


def _migrate(home: Path, services: Path | None = None) -> None:
    """The database of ``home``, migrated by the tree that will run in it."""
    home.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys; from mlops.db import migrate; from mlops.db.engine import make_engine; "
        "migrate.upgrade(make_engine(sys.argv[1]))"
    )
    url = f"sqlite:///{(home / 'mlops.db').resolve()}"
    env = _env(home, home, services=services)
    subprocess.run([sys.executable, "-c", code, url], check=True, env=env)


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


def _run(case: str, symbols: int, shards: str, child: tuple[dict, float, float, float]) -> Run:
    payload, process_wall, rss, cpu = child
    return Run(
        case=case,
        symbols=symbols,
        shards=shards,
        rows=payload["rows"],
        wall=payload["wall"],
        cpu=payload.get("cpu"),
        process_wall=process_wall,
        maxrss_mib=rss,
        process_cpu=cpu,
        timings=payload["timings"],
        version=payload.get("version"),
    )


def measure_single(
    work: Path,
    symbols: int,
    years: int,
    long_file: bool = False,
    services: Path | None = None,
    name: str = "",
) -> Run:
    data = _data(work, symbols, years, long_file)
    home = work / f"home-{symbols}{'-long' if long_file else ''}-1{name.replace(' ', '-')}"
    shutil.rmtree(home, ignore_errors=True)
    _migrate(home, services)
    env = _env(home, data, services=services)
    (child,) = _reap_all([_spawn(env, home, "worker")])
    case = "long file" if long_file else "file per symbol"
    return _run(f"{case}{name}", symbols, "1", child)


def measure_reference(work: Path, symbols: int, years: int) -> Run:
    data = _data(work, symbols, years, False)
    out = work / f"reference-{symbols}"
    shutil.rmtree(out, ignore_errors=True)
    env = _env(out, data)
    (child,) = _reap_all([_spawn(env, work / "logs", "reference", str(data), str(out))])
    shutil.rmtree(out, ignore_errors=True)
    return _run("reference (Arrow, TA-Lib)", symbols, "-", child)


def measure_shards(work: Path, symbols: int, years: int, count: int) -> list[Run]:
    data = _data(work, symbols, years, False)
    home = work / f"home-{symbols}-{count}"
    shutil.rmtree(home, ignore_errors=True)
    _migrate(home)
    began = time.perf_counter()
    children = [_spawn(_env(home, data, count, i), home, "worker") for i in range(count)]
    runs = []
    for index, child in enumerate(_reap_all(children)):
        finalized = " (finalized)" if child[0]["finalized"] and count > 1 else ""
        case = f"shard {index} of {count}{finalized}" if count > 1 else "file per symbol"
        runs.append(_run(case, symbols, f"{index}/{count}" if count > 1 else "1", child))
    total = time.perf_counter() - began
    if count > 1:
        runs.append(
            Run(
                case=f"**N={count} side by side**",
                symbols=symbols,
                shards=f"all {count}",
                rows=sum(r.rows for r in runs),
                wall=max(r.wall for r in runs),
                cpu=sum(r.cpu or 0.0 for r in runs),
                process_wall=total,
                maxrss_mib=max(r.maxrss_mib for r in runs),
                process_cpu=sum(r.process_cpu for r in runs),
                timings={},
                version=next((r.version for r in runs if r.version), None),
            )
        )
    return runs


PHASES = [("read", "read"), ("checks", "validate"), ("features", "features")]
PHASES += [("write", "write"), ("upload", "publish")]


def _phase(timings: dict[str, float], key: str) -> str:
    """``wall / CPU`` seconds of one phase (CPU when the stage reports it)."""
    if key not in timings:
        return ""
    cpu = timings.get(f"{key}_cpu")
    return f"{timings[key]:.1f}" + ("" if cpu is None else f" / {cpu:.1f}")


def _table(runs: list[Run]) -> str:
    head = (
        "| case | symbols | shards | rows | stage wall s | stage CPU s | process wall s | "
        "process CPU s | rows/s | peak RSS MiB | "
        + " | ".join(f"{name} wall / CPU" for name, _ in PHASES)
        + " | dataset |"
    )
    lines = [head, "|" + "---|" * (11 + len(PHASES))]
    for r in runs:
        cells = [
            r.case,
            str(r.symbols),
            r.shards,
            f"{r.rows:,}",
            f"{r.wall:.1f}",
            "" if r.cpu is None else f"{r.cpu:.1f}",
            f"{r.process_wall:.1f}",
            f"{r.process_cpu:.1f}",
            f"{r.rows / r.process_wall:,.0f}",
            f"{r.maxrss_mib:,.0f}",
            *(_phase(r.timings, key) for _, key in PHASES),
            (r.version or "")[-12:],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratios(runs: list[Run]) -> list[str]:
    """The stage's CPU against the reference's on the same files, and which runs
    published the same dataset (the reference's parts; the baseline's version)."""
    lines = []
    for ref in (r for r in runs if r.case.startswith("reference")):
        for r in runs:
            if r.symbols != ref.symbols or not r.case.startswith("file per symbol"):
                continue
            if r.shards != "1" or r.cpu is None or not ref.cpu:
                continue
            same = "the same dataset" if r.version == ref.version else "A DIFFERENT DATASET"
            lines.append(
                f"{r.symbols} symbols, {r.case}: {r.cpu / ref.cpu:.2f} x the reference's CPU "
                f"({r.cpu:.1f} s against {ref.cpu:.1f} s), {same}"
            )
    for before in (r for r in runs if r.case.endswith(")") and " (" in r.case):
        case = before.case.rsplit(" (", 1)[0]
        for r in runs:
            if r.case == case and r.symbols == before.symbols and r.shards == before.shards:
                same = "the same dataset" if r.version == before.version else "A DIFFERENT ONE"
                lines.append(
                    f"{r.symbols} symbols, {case}: {r.cpu or 0:.1f} s of CPU against "
                    f"{before.cpu or 0:.1f} s before ({before.case}), {same}"
                )
                break
    return lines


def _baseline_tree(work: Path, rev: str) -> Path:
    """The ``services`` folder of commit ``rev``, unpacked with ``git archive``."""
    tree = work / f"baseline-{rev}"
    if not (tree / "services").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parents[1]), "archive", rev, "services"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree / "services"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,500,5000", help="symbol counts, one shard each")
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--shard-symbols", type=int, default=500)
    parser.add_argument("--shards", default="1,2,4", help="shard counts run side by side")
    parser.add_argument("--no-long", action="store_true", help="skip the long-layout file run")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference")
    parser.add_argument("--baseline-rev", help="also run the stage of this commit")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (reused)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at start, work folder {work}"
    )
    runs: list[Run] = []
    baseline = _baseline_tree(work, args.baseline_rev) if args.baseline_rev else None
    try:
        for size in [int(s) for s in args.sizes.split(",") if s]:
            runs.append(measure_single(work, size, args.years))
            print(f"  {size} symbols: {runs[-1].process_wall:.1f} s", flush=True)
            if baseline is not None:
                name = f" ({args.baseline_rev})"
                runs.append(measure_single(work, size, args.years, False, baseline, name))
                print(f"  {size} symbols, {args.baseline_rev}: {runs[-1].process_wall:.1f} s")
            if not args.no_reference:
                runs.append(measure_reference(work, size, args.years))
                print(f"  {size} symbols, reference: {runs[-1].process_wall:.1f} s", flush=True)
        if not args.no_long:
            runs.append(measure_single(work, args.shard_symbols, args.years, long_file=True))
            print(f"  {args.shard_symbols} symbols, long file: {runs[-1].process_wall:.1f} s")
            if baseline is not None:
                name = f" ({args.baseline_rev})"
                runs.append(
                    measure_single(work, args.shard_symbols, args.years, True, baseline, name)
                )
                print(f"  long file, {args.baseline_rev}: {runs[-1].process_wall:.1f} s")
        for count in [int(s) for s in args.shards.split(",") if s]:
            runs.extend(measure_shards(work, args.shard_symbols, args.years, count))
            print(f"  {count} shards: {runs[-1].process_wall:.1f} s", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end\n")
    print(_table(runs))
    print()
    for line in _ratios(runs):
        print(line)
    print()
    print(
        "stage wall and CPU: the stage inside the process (for the reference: its timed "
        "work, without reading its parts back); process wall: start to exit, imports "
        "included (for N side by side: first start to last exit); process CPU: user + "
        "system seconds of the process (os.wait4; for N side by side: summed); rows/s: "
        "rows / process wall; peak RSS: ru_maxrss of the child, for N side by side the "
        "largest shard's; phases: wall / CPU seconds inside the stage (write: local "
        "Parquet parts; upload: the parts and the manifest to the store); dataset: the "
        "version's hash (the reference's: of its parts read back)."
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker()
    elif len(sys.argv) > 1 and sys.argv[1] == "reference":
        reference(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "generate":
        generate(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "--long" in sys.argv)
    else:
        main()
