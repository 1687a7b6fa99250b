"""Batch benchmark: the NumPy and torch predictors against ``LudwigModel.predict``, and
end to end.

On the same registered model (see ``model_setup.py``):

1. Prediction alone, on the sample's scorable rows tiled to ``--rows`` (default 1,000,000):
   rows/s of ``PortablePredictor.predict_frame`` (the portable export evaluated with NumPy
   alone: what ``mlops batch-infer`` and ``mlops serve`` load), of
   ``FastPredictor.predict_frame`` (the same network on the Ludwig weights with torch: the
   fallback for a version without a portable export), best of ``--repeats`` each, and of
   ``LudwigModel.predict`` (on ``--ludwig-rows``, default 200,000: it runs at the same
   rate on more), and whether they give the same numbers on those rows. Single-row
   latency of each too.
2. End to end, what ``mlops batch-infer`` does, at scale: read a features Parquet file of
   ``--e2e-rows`` rows, predict the next close with the NumPy predictor, write the rows
   to the ``predictions``
   table of a PostgreSQL database (``insert_new_bulk``: COPY into a temporary table, then
   ``INSERT ... ON CONFLICT DO NOTHING``). The tiled copies get distinct symbols in the
   written rows (``AAPL.0001``, ...) so every key is new; the model sees the real symbol.
   Against it, the pipeline as it was before: ``LudwigModel.predict`` and ``insert_new``
   (one INSERT per row) on ``--baseline-rows`` rows.

PostgreSQL is a throwaway server started here (``initdb`` on 127.0.0.1) unless
``--database-url`` names one.

    .venv/bin/python benchmarks/batch_benchmark.py
    .venv/bin/python benchmarks/batch_benchmark.py --rows 200000 --e2e-rows 200000

Goal: the NumPy predictor (and the torch one) at least 10x ``LudwigModel.predict`` in
rows/s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_setup import Postgres, ensure_model, features


def tile(frame, rows: int):  # -> pd.DataFrame
    import pandas as pd

    copies = -(-rows // len(frame))
    big = pd.concat([frame] * copies, ignore_index=True).head(rows)
    copy = pd.Series(range(len(big))) // len(frame)
    return big.assign(listing=big["symbol"].astype(str) + "." + copy.map("{:04d}".format))


def batch_rows(frame, predicted, name: str, version: str):  # -> pd.DataFrame
    """The rows batch-infer writes (its columns), keyed by ``listing``."""
    import pandas as pd

    batch = pd.DataFrame(
        {
            "symbol": frame["listing"].to_numpy(),
            "prediction_date": frame["date"].dt.date.to_numpy(),
            "model_name": name,
            "model_version": version,
            "predicted_close": predicted,
            "last_close": frame["close"].to_numpy(dtype="float64"),
            "dataset_version": "bench",
            "created_at": datetime.now(UTC),
        }
    )
    batch["expected_change"] = batch["predicted_close"] / batch["last_close"] - 1.0
    return batch


def timed(fn, repeats: int = 1):
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return result, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ludwig-rows", type=int, default=200_000)
    parser.add_argument("--e2e-rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import numpy as np
    import pandas as pd
    from sqlalchemy import create_engine, delete, func, select

    from mlops.contracts.models import predict_close
    from mlops.contracts.portable import PortablePredictor
    from mlops.contracts.predictions import PREDICTION_KEY
    from mlops.contracts.predictor import FastPredictor
    from mlops.db import migrate
    from mlops.db.schema import predictions
    from mlops.db.upsert import insert_new, insert_new_bulk

    home = args.home or Path(tempfile.mkdtemp(prefix="mlops-batch-bench-"))
    model = ensure_model(home)
    sample = features(model.home)
    print(
        f"Model {model.name} v{model.version}; {len(sample):,} scorable sample rows; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    lean, lean_load = timed(lambda: PortablePredictor.from_dir(model.mlflow_dir))
    fast, load_times = timed(lambda: FastPredictor.from_dir(model.mlflow_dir))
    inputs = list(fast.input_features)
    big = tile(sample, args.rows)
    lean.predict_frame(big.head(10_000))  # warm up
    lean_out, lean_times = timed(lambda: lean.predict_frame(big), args.repeats)
    lean_rps = len(big) / min(lean_times)
    print(f"NumPy predictor: {len(big):,} rows in {min(lean_times):.3f} s", flush=True)
    fast.predict_frame(big.head(10_000))  # warm up
    fast_out, fast_times = timed(lambda: fast.predict_frame(big), args.repeats)
    fast_rps = len(big) / min(fast_times)
    print(f"torch predictor: {len(big):,} rows in {min(fast_times):.3f} s", flush=True)

    began = time.perf_counter()
    from ludwig.api import LudwigModel

    ludwig = LudwigModel.load(str(model.ludwig_dir), backend="local", logging_level=logging.ERROR)
    ludwig_load = time.perf_counter() - began
    part = big.head(args.ludwig_rows)
    ludwig.predict(part[inputs].head(1000))  # warm up
    (lud_pred, _), lud_times = timed(lambda: ludwig.predict(part[inputs]))
    lud_out = lud_pred["next_return_predictions"].to_numpy(dtype="float64")
    ludwig_rps = len(part) / lud_times[0]
    denom = np.maximum(np.abs(lud_out), 1e-12)
    same = int(np.sum(lud_out == fast_out[: len(part)]))
    worst = float(np.max(np.abs(lud_out - fast_out[: len(part)]) / denom))
    lean_same = int(np.sum(lud_out == lean_out[: len(part)]))
    lean_worst = float(np.max(np.abs(lud_out - lean_out[: len(part)]) / denom))
    print(f"LudwigModel.predict: {len(part):,} rows in {lud_times[0]:.3f} s", flush=True)

    records = sample[inputs].head(200).to_dict("records")
    _, single_lean = timed(lambda: [lean.predict_records([r]) for r in records])
    _, single_fast = timed(lambda: [fast.predict_records([r]) for r in records])
    _, single_lud = timed(lambda: [ludwig.predict(pd.DataFrame([r])) for r in records[:50]])
    single_lean_ms = single_lean[0] / len(records) * 1000
    single_fast_ms = single_fast[0] / len(records) * 1000
    single_lud_ms = single_lud[0] / 50 * 1000

    # End to end.
    server = None
    url = args.database_url
    if url is None:
        server = Postgres()
        url = server.url
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(delete(predictions).where(predictions.c.dataset_version == "bench"))
        work = Path(tempfile.mkdtemp(prefix="mlops-batch-bench-"))
        e2e_path = work / "features.parquet"
        tile(sample, args.e2e_rows).to_parquet(e2e_path, index=False)

        began = time.perf_counter()
        frame = pd.read_parquet(e2e_path)
        t_read = time.perf_counter() - began
        predicted = predict_close(lean, frame)
        t_predict = time.perf_counter() - began - t_read
        batch = batch_rows(frame, predicted, model.name, model.version)
        with engine.begin() as conn:
            written = insert_new_bulk(conn, predictions, batch, keys=PREDICTION_KEY)
        e2e_total = time.perf_counter() - began
        t_write = e2e_total - t_read - t_predict
        with engine.begin() as conn:
            again = insert_new_bulk(conn, predictions, batch, keys=PREDICTION_KEY)
            conn.execute(delete(predictions).where(predictions.c.dataset_version == "bench"))
        assert written == len(batch) and again == 0, (written, again)

        base = pd.read_parquet(e2e_path).head(args.baseline_rows)
        # The old pipeline: predict_close called LudwigModel.predict (now it takes the fast
        # path for a LudwigModel too, so call Ludwig directly).
        began = time.perf_counter()
        lud_frame, _ = ludwig.predict(base[inputs])
        base_pred = base["close"].to_numpy() * (1 + lud_frame["next_return_predictions"].to_numpy())
        t_base_predict = time.perf_counter() - began
        base_batch = batch_rows(base, base_pred, model.name, model.version)
        began = time.perf_counter()
        with engine.begin() as conn:
            base_written = insert_new(
                conn, predictions, base_batch.to_dict("records"), PREDICTION_KEY
            )
        t_base_write = time.perf_counter() - began
        with engine.begin() as conn:
            left = conn.execute(select(func.count()).select_from(predictions)).scalar_one()
            conn.execute(delete(predictions).where(predictions.c.dataset_version == "bench"))
        assert base_written == len(base_batch) and left == len(base_batch)
        base_total = t_base_predict + t_base_write
    finally:
        engine.dispose()
        if server is not None:
            server.stop()

    print()
    print("| prediction | rows | seconds | rows/s | vs LudwigModel.predict |")
    print("|---|---|---|---|---|")
    print(
        f"| NumPy predictor, portable export (best of {args.repeats}) | {len(big):,} | "
        f"{min(lean_times):.3f} | {lean_rps:,.0f} | {lean_rps / ludwig_rps:.0f}x |"
    )
    print(
        f"| torch predictor, Ludwig weights (best of {args.repeats}) | {len(big):,} | "
        f"{min(fast_times):.3f} | {fast_rps:,.0f} | {fast_rps / ludwig_rps:.0f}x |"
    )
    print(f"| LudwigModel.predict | {len(part):,} | {lud_times[0]:.2f} | {ludwig_rps:,.0f} | 1x |")
    print()
    print(
        f"Against LudwigModel.predict on the {len(part):,} rows: NumPy {lean_same:,} "
        f"bitwise equal, max relative difference {lean_worst:.1e}; torch {same:,} bitwise "
        f"equal, max relative difference {worst:.1e}. Single row: NumPy "
        f"{single_lean_ms * 1000:.0f} us, torch {single_fast_ms * 1000:.0f} us, "
        f"LudwigModel.predict {single_lud_ms:.1f} ms. Load: NumPy {lean_load[0]:.3f} s, "
        f"torch {load_times[0]:.2f} s (no Ludwig import), Ludwig {ludwig_load:.1f} s "
        "(import included)."
    )
    print()
    print(
        "| end to end (read, predict, write to PostgreSQL) | rows | read s | predict s "
        "| write s | total s | rows/s |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| NumPy predictor + COPY (insert_new_bulk) | {len(batch):,} | {t_read:.2f} | "
        f"{t_predict:.2f} | {t_write:.2f} | {e2e_total:.2f} | {len(batch) / e2e_total:,.0f} |"
    )
    print(
        f"| before: LudwigModel.predict + insert_new per row | {len(base_batch):,} | - | "
        f"{t_base_predict:.2f} | {t_base_write:.2f} | {base_total:.2f} | "
        f"{len(base_batch) / base_total:,.0f} |"
    )
    print()
    ratio = len(batch) / e2e_total / (len(base_batch) / base_total)
    print(f"End to end: {ratio:.0f}x the old pipeline.")


if __name__ == "__main__":
    main()
