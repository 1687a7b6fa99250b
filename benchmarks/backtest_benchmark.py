"""Benchmark of the backtest: 500 symbols x 10 years of sessions, model, naive and buy-and-hold.

Synthetic daily bars (a geometric random walk, open near the previous close, every NYSE
session of ten years, some symbols listed late or delisted early) and a synthetic
"model" whose forecasts are the close times 1 + N(0, 1 %): with the 0.5 % threshold it
finds a candidate nearly every session, so the strategy decides and trades every day,
the worst case for the walk-forward loop. What is timed is what ``mlops backtest`` does
after loading the dataset and predicting: pivoting the bars, the three simulations (the
live strategy and risk code per session) and the figures, as wall seconds and as CPU
seconds of the process (``time.process_time``: what the comparison costs, whatever else
runs on the machine). Each size runs in a fresh ``python`` subprocess so its peak RSS is
its own (``os.wait4``).

    .venv/bin/python benchmarks/backtest_benchmark.py                # 50 and 500 symbols
    .venv/bin/python benchmarks/backtest_benchmark.py --sizes 500 --years 10

Data generation is not timed. Goal: 500 symbols x 10 years in under 5 CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def child(symbols: int, years: int) -> dict[str, float]:
    """Generate the data, then time one full comparison; returns the figures."""
    from datetime import date

    import numpy as np
    import pandas as pd

    from mlops import market_calendar
    from mlops.settings import load_settings
    from mlops.trading.backtest import compare, rules_from

    end = date(2019, 12, 31)
    days = market_calendar.sessions(date(end.year - years + 1, 1, 1), end)
    frames = []
    for i in range(symbols):
        rng = np.random.default_rng(i)
        n = len(days)
        first, last = (rng.integers(0, n // 4), n) if i % 10 else (0, n - rng.integers(1, n // 3))
        close = 20.0 * np.exp(rng.uniform(0, 3)) * np.exp(np.cumsum(rng.normal(0, 0.018, n)))
        open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.004, n))
        guess = close * (1 + rng.normal(0, 0.01, n))
        part = slice(first, last)
        frames.append(
            pd.DataFrame(
                {
                    "date": pd.to_datetime(days[part]),
                    "symbol": f"S{i:05d}",
                    "open": open_[part],
                    "close": close[part],
                    "predicted": guess[part],
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    rules = rules_from(load_settings(MLOPS_HOME="/tmp/mlops-backtest-bench"))
    began, cpu = time.perf_counter(), time.process_time()
    comparison = compare(frame, frame["predicted"], rules)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    model = comparison.figures["model"]
    return {
        "symbols": symbols,
        "sessions": len(comparison.market.days),
        "rows": len(frame),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "trades": model["trades"] or 0,
        "total_return": round(model["total_return"] or 0.0, 4),
    }


def measure(symbols: int, years: int) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); from backtest_benchmark import child; "
        f"print(json.dumps(child({symbols}, {years})))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"benchmark child for {symbols} symbols failed (status {status})")
    figures = json.loads(out.strip().splitlines()[-1])
    figures["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 0)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,500", help="comma-separated symbol counts")
    parser.add_argument("--years", type=int, default=10)
    args = parser.parse_args()
    print(
        f"{'symbols':>8} {'sessions':>9} {'rows':>10} {'seconds':>8} {'cpu s':>6} "
        f"{'trades':>7} {'MiB':>6}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args.years)
        print(
            f"{r['symbols']:>8} {r['sessions']:>9} {r['rows']:>10} {r['seconds']:>8} "
            f"{r['cpu_seconds']:>6} {r['trades']:>7.0f} {r['peak_rss_mib']:>6.0f}"
        )


if __name__ == "__main__":
    main()
