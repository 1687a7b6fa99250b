"""The data prep benchmark still runs (tiny sizes; its figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_prep_benchmark.py"


def test_benchmark_runs_and_prints_its_table(tmp_path: Path, subprocess_env) -> None:
    args = ["--sizes", "3", "--shard-symbols", "4", "--shards", "1,2", "--years", "1"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| case | symbols | shards | rows | stage wall s | stage CPU s |")
    assert (
        "| read wall / CPU | checks wall / CPU | features wall / CPU | write wall / CPU |"
        in (lines[0])
    )
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    cases = [row[0] for row in table]
    rows = [int(row[3].replace(",", "")) for row in table]
    # 1 year = 252 weekdays a symbol: 3 symbols and their reference, then 4 (long file,
    # N=1, N=2).
    assert cases[:4] == [
        "file per symbol",
        "reference (Arrow, TA-Lib)",
        "long file",
        "file per symbol",
    ]
    assert rows[:4] == [3 * 252, 3 * 252, 4 * 252, 4 * 252]
    stage, reference = table[0], table[1]
    assert all(" / " in cell for cell in stage[10:15])  # wall / CPU of every phase
    assert stage[-1] == reference[-1] != ""  # the same dataset hash
    assert "3 symbols, file per symbol: " in done.stdout and "the same dataset" in done.stdout
    shards = sorted(c.removesuffix(" (finalized)") for c in cases[4:6])
    assert shards == ["shard 0 of 2", "shard 1 of 2"]
    assert sum(c.endswith("(finalized)") for c in cases[4:6]) == 1  # the last one to finish
    assert cases[6] == "**N=2 side by side**"
    assert rows[4] + rows[5] == rows[6] == 4 * 252
