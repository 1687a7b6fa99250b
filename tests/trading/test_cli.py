"""The trading commands as a user runs them: exit codes, one sentence, the JSON result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import run_in_process

from .fake_alpaca import FakeAlpaca
from .helpers import DAY1, alpaca_env, make_ctx, predict


def mlops(env, *args: str) -> subprocess.CompletedProcess:
    """The real command, in this process."""
    return run_in_process(env, *args)


def last_json(stdout: str):
    start = stdout.rfind("\n{\n")
    return json.loads(stdout[start + 1 :] if start >= 0 else stdout)


def test_an_order_alpaca_refuses_ends_trade_with_exit_12(make_settings, tmp_path, subprocess_env):
    with FakeAlpaca() as fake:
        fake.after_close_of(DAY1)
        env = alpaca_env(fake)
        ctx = make_ctx(make_settings, tmp_path, **env)
        predict(ctx, DAY1, {"AAPL": 0.0, "COKE": 0.03})
        fake.fail("POST", "/v2/orders", (403, "insufficient buying power"))
        done = mlops(
            subprocess_env(MLOPS_HOME=str(tmp_path), **env), "trade", "--as-of", "2017-06-01"
        )
    assert done.returncode == 12, done.stderr
    result = last_json(done.stdout)
    assert result["orders_placed"] == [] and len(result["orders_rejected"]) == 1
    assert result["orders"][0]["status"] == "unplaced"
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 1 of 1 orders decided for 2017-06-01 on alpaca were not placed")
    assert "insufficient buying power" in error
    assert "was NOT placed" in done.stdout + done.stderr


def test_trading_halt_and_resume(make_settings, tmp_path, subprocess_env):
    ctx = make_ctx(make_settings, tmp_path)
    predict(ctx, DAY1, {"AAPL": 0.03, "COKE": 0.0})
    env = subprocess_env(MLOPS_HOME=str(tmp_path))
    halted = mlops(env, "trading", "halt", "--reason", "earnings week")
    assert halted.returncode == 0 and last_json(halted.stdout)["halted"] is True
    status = last_json(mlops(env, "trading", "status").stdout)
    assert status == {
        "halted": True,
        "database_flag": True,
        "reason": "earnings week",
        "by": status["by"],
        "setting_TRADING_HALTED": False,
    }
    assert status["by"].startswith("cli:")
    traded = mlops(env, "trade", "--as-of", "2017-06-01")
    assert traded.returncode == 0 and "earnings week" in last_json(traded.stdout)["halted"]
    assert last_json(traded.stdout)["orders"] == []
    assert last_json(mlops(env, "trading", "resume").stdout)["halted"] is False
    resumed = last_json(mlops(env, "trade", "--as-of", "2017-06-01").stdout)
    assert resumed["decisions"]["AAPL"] == "buy" and len(resumed["orders_placed"]) == 1


def test_backtest_benchmark_runs_on_a_small_universe():
    folder = str(Path(__file__).resolve().parents[2] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        from backtest_benchmark import child
    finally:
        sys.path.remove(folder)
    figures = child(symbols=5, years=1)
    assert figures["symbols"] == 5 and figures["sessions"] == 252 and figures["trades"] > 10
