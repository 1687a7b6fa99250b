"""A small world for the dashboard: a real MLflow registry (SQLite) with three model
names and their versions, monitoring rows for each version and walk-forwards
(:mod:`.walkforward_seed`), without training.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from mlops.context import Context, open_context
from mlops.contracts.models import CHALLENGER_ALIAS, move_champion
from mlops.db import migrate
from mlops.db.engine import make_engine
from mlops.db.schema import equity_snapshots, monitoring_metrics, retrain_requests
from mlops.runs import utcnow

from .walkforward_seed import seed_walkforwards

# name -> versions (holdout MAPE, the naive forecast's on the same holdout).
MODELS: dict[str, list[tuple[float, float]]] = {
    "stock-close": [(0.0100, 0.0110), (0.0098, 0.0105), (0.0120, 0.0105)],
    "stock-close-mlp": [(0.0105, 0.0110), (0.0101, 0.0104)],
    "stock-close-pooled": [(0.0099, 0.0110), (0.0097, 0.0102)],
}
CHAMPIONS = {"stock-close": "1", "stock-close-mlp": "1", "stock-close-pooled": "1"}
CHALLENGERS = {"stock-close": "2", "stock-close-mlp": "2", "stock-close-pooled": "2"}
DAYS = [date(2017, 6, 1) + timedelta(days=d) for d in range(14) if (d + 3) % 7 < 5]
TOKEN = "s3cret-dashboard-token"
# Equity snapshots: (strategy, broker, account, cash) of each book, one a day each; the
# strategy red trades paper beside the default strategy.
SNAPSHOT_BOOKS = (
    ("default", "paper", "paper", 100_000.0),
    ("default", "alpaca", "PA1", 5e3),
    ("red", "paper", "paper", 20_000.0),
)
# The browser tests' user: an operator (name, password).
OPERATOR = ("tester", "tester-password-1")


def users_setting() -> str:
    """DASHBOARD_USERS holding OPERATOR (a cheap pbkdf2 hash: tests need not pay scrypt)."""
    from werkzeug.security import generate_password_hash

    name, password = OPERATOR
    return f"{name}:operator:{generate_password_hash(password, 'pbkdf2:sha256:1000')}"


def seed(settings: Any) -> Context:
    """Migrate the database, register the models, write monitoring and equity rows."""
    migrate.upgrade(make_engine(settings.db_url))
    ctx = open_context(settings)
    client = ctx.mlflow
    source = Path(settings.mlops_home, "model-source").resolve()
    source.mkdir(parents=True, exist_ok=True)
    for name, versions in MODELS.items():
        client.create_registered_model(name)
        for mape, naive in versions:
            tags = {
                "model_name": name,
                "holdout_mape": str(mape),
                "baseline_holdout_mape": str(naive),
                "dm_p_value_naive": "0.04" if mape < naive else "0.7",
                "dataset_version": "2017-05-31-abc",
                "train_end": "2017-04-28",
            }
            client.create_model_version(name, source.as_uri(), tags=tags)
        move_champion(client, name, settings.champion_alias, CHAMPIONS[name])
        client.set_registered_model_alias(name, CHALLENGER_ALIAS, CHALLENGERS[name])
    _metrics(ctx)
    seed_walkforwards(ctx)
    return ctx


WINDOW = 20


def day_mape(name: str, version: str, n: int) -> float:
    """The MAPE of version ``version`` of ``name`` on the ``n``-th session alone."""
    m = list(MODELS).index(name)
    return MODELS[name][int(version) - 1][0] + 0.001 * ((n + m) % 4)


def window_mape(name: str, version: str, n: int) -> float:
    """Its MAPE over the trailing window ending on the ``n``-th session (here: the mean of
    the sessions' own, every session with as many rows)."""
    days = range(max(0, n + 1 - WINDOW), n + 1)
    return sum(day_mape(name, version, d) for d in days) / len(days)


def _figures(base: float, n: int) -> dict[str, float]:
    return {
        "mape": base,
        "wmape": base * 0.98,
        "mae": base * 150,
        "rmse": base * 190,
        "directional_accuracy": 0.5 + 0.01 * (n % 4),
        "naive_mape": 0.0115,
        "naive_wmape": 0.0113,
        "naive_mae": 1.7,
        "naive_rmse": 2.2,
        "n": 5.0,
    }


def _metrics(ctx: Context) -> None:
    """Each session's own figures (window 1) and the trailing window's (window 20); a
    challenger's window also beside its champion on the same rows."""
    now, rows = utcnow(), []
    for n, day in enumerate(DAYS):
        for name in MODELS:
            champion, challenger = CHAMPIONS[name], CHALLENGERS[name]
            for version in (champion, challenger):
                rows += [
                    (day, 1, name, version, k, v)
                    for k, v in _figures(day_mape(name, version, n), n).items()
                ]
                window = _figures(window_mape(name, version, n), n)
                if version == challenger:
                    window |= {
                        "paired_n": 5.0 * min(n + 1, WINDOW),
                        "paired_mape": window["mape"],
                        "paired_champion_mape": window_mape(name, champion, n),
                        "paired_naive_mape": 0.0115,
                        "paired_diff_low": -0.002,
                        "paired_diff_high": 0.001,
                    }
                rows += [(day, WINDOW, name, version, k, v) for k, v in window.items()]
        flags = {
            "drift_share": 0.2 + 0.05 * (n % 5),
            "drift_threshold": 0.35,
            "trigger_drift": 1.0 if 0.2 + 0.05 * (n % 5) > 0.35 else 0.0,
            "trigger_mape": 0.0,
            "trigger_naive_ratio": 1.0 if n == 3 else 0.0,
        }
        rows += [(day, WINDOW, "stock-close", "1", k, v) for k, v in flags.items()]
        drift = {f"drift_p:{feature}": drift_p(feature, n) for feature in FEATURES}
        rows += [(day, WINDOW, "stock-close", "1", k, v) for k, v in drift.items()]
    with ctx.engine.begin() as conn:
        conn.execute(
            monitoring_metrics.insert(),
            [
                {
                    "metric_date": day,
                    "model_name": name,
                    "model_version": version,
                    "symbol": symbol,
                    "metric": metric,
                    "value": value,
                    "window_days": window,
                    "created_at": now,
                }
                for day, window, name, version, metric, value, symbol in [
                    *((*row, "ALL") for row in rows),
                    *_symbol_rows(),
                ]
            ],
        )
        for n, day in enumerate(DAYS):
            for strategy, broker, account, cash in SNAPSHOT_BOOKS:
                conn.execute(
                    equity_snapshots.insert().values(
                        snapshot_date=day,
                        broker=broker,
                        account=account,
                        strategy=strategy,
                        cash=cash,
                        positions_value=0.0,
                        equity=cash * (1 + 0.001 * n),
                        benchmark_equity=cash * (1 + 0.002 * n),
                        positions="{}",
                        created_at=now,
                    )
                )
        conn.execute(
            retrain_requests.insert().values(
                requested_date=DAYS[3],
                model_version="1",
                reason="MAPE worse than 1.25 x the naive forecast's",
                status="open",
                created_at=now,
            )
        )


# Each version's window figures per symbol, and the drift test's p-value per feature.
SYMBOLS = ("AAA", "BBB", "CCC")
FEATURES = ("rsi_14", "return_1d", "range_pct")


def symbol_mape(name: str, version: str, symbol: str, n: int) -> float:
    return window_mape(name, version, n) * (1 + 0.1 * SYMBOLS.index(symbol))


def drift_p(feature: str, n: int) -> float:
    return 0.5 / (1 + n + 3 * FEATURES.index(feature))


def _symbol_rows() -> list[tuple[Any, ...]]:
    return [
        (day, WINDOW, name, version, metric, value, symbol)
        for n, day in enumerate(DAYS)
        for name in MODELS
        for version in (CHAMPIONS[name], CHALLENGERS[name])
        for symbol in SYMBOLS
        for metric, value in (
            ("mape", symbol_mape(name, version, symbol, n)),
            ("naive_mape", 0.0115),
            ("directional_accuracy", 0.5 + 0.05 * SYMBOLS.index(symbol)),
            ("n", 3.0),
        )
    ]


def expected_drift_days() -> int:
    return sum(1 for n in range(len(DAYS)) if 0.2 + 0.05 * (n % 5) > 0.35)
