"""Batch inference on the fast predictor, and the bulk insert it writes with."""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, select

from inference.trained_model import INPUTS, Trained
from mlops.db import migrate
from mlops.db.engine import make_engine
from mlops.db.schema import predictions
from mlops.db.upsert import COPY_MIN_ROWS, insert_new, insert_new_bulk

KEY = ["symbol", "prediction_date", "model_name", "model_version"]


@pytest.mark.slow
def test_batch_infer_scores_with_the_portable_export_and_writes_once(trained: Trained) -> None:
    from ludwig.api import LudwigModel

    from mlops.context import open_context
    from mlops.inference import stage

    ctx = open_context(trained.settings())
    try:
        first = stage.run(ctx, as_of=date(2017, 5, 31))
        again = stage.run(ctx, as_of=date(2017, 5, 31))
        with ctx.engine.connect() as conn:
            stored = pd.read_sql(
                select(predictions).where(predictions.c.model_version == first.model_version),
                conn,
            )
    finally:
        ctx.engine.dispose()
    assert first.model_version == trained.versions[0]
    assert first.new_rows == len(first.symbols) == 5
    assert again.new_rows == 0
    assert len(stored) == 5
    # The stored closes are Ludwig's own predictions.
    rows = trained.scorable
    rows = rows[rows["date"] == rows["date"].max()].sort_values("symbol").reset_index(drop=True)
    model = LudwigModel.load(
        str(trained.model_dirs[first.model_version] / "model"),
        backend="local",
        logging_level=logging.ERROR,
    )
    ludwig, _ = model.predict(rows[INPUTS])
    expected = rows["close"].to_numpy() * (1 + ludwig["next_return_predictions"].to_numpy())
    stored = stored.sort_values("symbol").reset_index(drop=True)
    assert stored["symbol"].tolist() == rows["symbol"].tolist()
    # Scored by the portable export (NumPy float32): Ludwig's numbers to float32 rounding of
    # the predicted return (about 1e-10; training refuses an export off by 1e-6).
    np.testing.assert_allclose(stored["predicted_close"], expected, rtol=1e-8)


# insert_new_bulk on SQLite and on PostgreSQL.


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Engine:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bulk.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_database")
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _rows(n: int, start: int = 0, version: str = "1") -> pd.DataFrame:
    rng = np.random.default_rng(start)
    close = rng.uniform(10, 500, n)
    return pd.DataFrame(
        {
            "symbol": [f"S{i:06d}" for i in range(start, start + n)],
            "prediction_date": date(2017, 6, 1),
            "model_name": "stock-close",
            "model_version": version,
            "predicted_close": close * 1.001,
            "last_close": close,
            "expected_change": np.full(n, 0.001),
            "dataset_version": "2017-06-01-abc",
            "created_at": datetime(2017, 6, 1, 22, 0, tzinfo=UTC),
        }
    )


def _stored(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(select(predictions).order_by(predictions.c.symbol), conn)
    return frame.drop(columns=["id"])


@pytest.mark.parametrize("n", [3, COPY_MIN_ROWS + 500])
def test_bulk_insert_counts_new_rows_like_insert_new(engine: Engine, n: int) -> None:
    rows = _rows(n)
    with engine.begin() as conn:
        assert insert_new_bulk(conn, predictions, rows, keys=KEY) == n
    with engine.begin() as conn:
        assert insert_new_bulk(conn, predictions, rows, keys=KEY) == 0
    # Half known, half new, and the new half twice in the same batch.
    mixed = pd.concat([rows.tail(n // 2 + 1), _rows(n, start=n), _rows(n, start=n)])
    with engine.begin() as conn:
        assert insert_new_bulk(conn, predictions, mixed, keys=KEY) == n
    with engine.begin() as conn:
        assert insert_new_bulk(conn, predictions, [], keys=KEY) == 0
        assert insert_new_bulk(conn, predictions, _rows(0), keys=KEY) == 0
    stored = _stored(engine)
    assert len(stored) == 2 * n
    assert stored["symbol"].is_unique


def test_bulk_insert_stores_the_same_values_as_insert_new(engine: Engine) -> None:
    rows = _rows(COPY_MIN_ROWS + 10)
    rows["model_name"] = ["tab\there", "back\\slash\\N", "new\nline", "quote'\"", "ünï"] * (
        len(rows) // 5
    )
    rows.loc[1, "expected_change"] = math.inf
    rows.loc[2, "predicted_close"] = 1 / 3
    small = rows.head(40).copy()
    small["model_version"] = "2"
    with engine.begin() as conn:
        assert insert_new_bulk(conn, predictions, rows, keys=KEY) == len(rows)  # COPY on PG
        assert insert_new_bulk(conn, predictions, small.to_dict("records"), keys=KEY) == 40
        reference = small.copy()
        reference["model_version"] = "3"
        assert insert_new(conn, predictions, reference.to_dict("records"), keys=KEY) == 40
    stored = _stored(engine)
    by_version = {v: part.reset_index(drop=True) for v, part in stored.groupby("model_version")}
    value_columns = [c for c in stored.columns if c != "model_version"]
    # Bulk (small batch) and per-row inserts store identical values.
    pd.testing.assert_frame_equal(by_version["2"][value_columns], by_version["3"][value_columns])
    first = by_version["1"]
    pd.testing.assert_frame_equal(
        first.head(40)[value_columns], by_version["3"][value_columns], check_exact=True
    )
    assert first.loc[1, "expected_change"] == math.inf
    assert first.loc[2, "predicted_close"] == 1 / 3
    assert first["model_name"].head(5).tolist() == rows["model_name"].head(5).tolist()
