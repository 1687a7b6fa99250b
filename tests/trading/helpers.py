"""Shared by the trading tests: a migrated context and predictions written as batch-infer would."""

from __future__ import annotations

from datetime import date

import pandas as pd
from sqlalchemy import func, select

from mlops.context import Context, open_context
from mlops.contracts import datasets
from mlops.data_prep import stage as data_prep
from mlops.db import migrate
from mlops.db.engine import make_engine
from mlops.db.schema import predictions
from mlops.runs import utcnow

DAY1, DAY2, DAY3 = date(2017, 6, 1), date(2017, 6, 2), date(2017, 6, 5)


def make_ctx(make_settings, tmp_path, **env) -> Context:
    settings = make_settings(tmp_path, **env)
    migrate.upgrade(make_engine(settings.db_url))
    return open_context(settings)


def alpaca_env(fake, **env) -> dict[str, str]:
    return {
        "BROKER": "alpaca",
        "ALPACA_API_KEY": "test-key",
        "ALPACA_SECRET_KEY": "test-secret",
        "ALPACA_BASE_URL": fake.url,
        "ALPACA_RETRY_WAIT_SECONDS": "0",
        **env,
    }


def closes_on(ctx: Context, day: date) -> pd.Series:
    _, frame = datasets.load(ctx.store, datasets.latest_version(ctx.engine, day))
    return frame[frame["date"] == pd.Timestamp(day)].set_index("symbol")["close"]


def predict(
    ctx: Context,
    day: date,
    changes: dict[str, float],
    version: str = "1",
    *,
    model_name: str = "stock-close",
    role: str = "champion",
) -> None:
    """Publish the day's dataset and write predictions with chosen expected changes."""
    data_prep.run(ctx, as_of=day)
    closes = closes_on(ctx, day)
    rows = [
        {
            "symbol": symbol,
            "prediction_date": day,
            "model_name": model_name,
            "model_version": version,
            "role": role,
            "predicted_close": float(closes[symbol]) * (1 + change),
            "last_close": float(closes[symbol]),
            "expected_change": change,
            "dataset_version": "test",
            "created_at": utcnow(),
        }
        for symbol, change in changes.items()
    ]
    with ctx.engine.begin() as conn:
        conn.execute(predictions.insert(), rows)


def count(ctx: Context, table, *where) -> int:
    with ctx.engine.connect() as conn:
        query = select(func.count()).select_from(table)
        for clause in where:
            query = query.where(clause)
        return conn.execute(query).scalar_one()


def rows(ctx: Context, table, *where) -> list[dict]:
    with ctx.engine.connect() as conn:
        query = select(table).order_by(table.c.id)
        for clause in where:
            query = query.where(clause)
        return [dict(r) for r in conn.execute(query).mappings()]
