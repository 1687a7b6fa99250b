"""Walk-forwards for the dashboard, the cheap way: no training. Their output files and
``walkforward_runs`` rows have the layout ``mlops.walkforward.publish`` writes, with
figures computed from the bundled sample's closes and made-up but plausible predictions:

* :data:`KEY`, finished (two models, two retrain periods, every figure of today's summary);
* :data:`OLD_KEY`, finished before the Sharpe interval, the IC t-statistics, the count of
  sessions in sample and the period figures existed; its model name and a gate reason
  carry :data:`HOSTILE` markup, and its report is missing;
* :data:`RUNNING_KEY`, still training its points (no summary, no outputs).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlops.context import Context
from mlops.contracts.keys import walkforward_output_keys
from mlops.data_prep.sources import load_sample
from mlops.db.schema import walkforward_runs
from mlops.metrics import daily_ic, information_coefficients, regression_metrics
from mlops.store import put_json, put_parquet
from mlops.trading.performance import sharpe_interval

KEY = "20171229-every63-5eed0d45b1"
OLD_KEY = "20170929-every42-01d0d45b1e"
RUNNING_KEY = "20180629-every63-7a11ed0001"
MODELS = ("stock-close", "stock-close-mlp")
HOSTILE = '<script>alert("wf")</script>'
OLD_MODEL = f"stock-close{HOSTILE}"
START, END, RETRAIN_EVERY = date(2017, 7, 3), date(2017, 12, 29), 63
CASH, SLIPPAGE, THRESHOLD, HOLD = 100_000.0, 1e-4, 0.005, 5
REPORT = "<!doctype html><html><body><h1>Walk-forward report</h1></body></html>"


def seed_walkforwards(ctx: Context) -> dict[str, dict[str, Any]]:
    """Write the three runs (oldest first, so the newest has the highest id); returns
    what was written per key (summary and tables) for the tests to compare against."""
    old = _walk(ctx, OLD_KEY, (OLD_MODEL,), date(2017, 6, 1), date(2017, 9, 29), 42, old=True)
    new = _walk(ctx, KEY, MODELS, START, END, RETRAIN_EVERY)
    with ctx.engine.begin() as conn:
        conn.execute(
            walkforward_runs.insert().values(
                run_key=RUNNING_KEY,
                status="running",
                start_date=date(2018, 1, 2),
                end_date=date(2018, 6, 29),
                retrain_every=63,
                window="rolling:500",
                models=",".join(MODELS),
                points=2,
                dataset_version="2018-06-29-0a1b2c3d4e5f",
                created_at=datetime(2018, 7, 2, 6, 0, tzinfo=UTC),
            )
        )
    return {OLD_KEY: old, KEY: new}


def _walk(
    ctx: Context,
    key: str,
    models: tuple[str, ...],
    start: date,
    end: date,
    every: int,
    old: bool = False,
) -> dict[str, Any]:
    closes, opens = _market(start, end)
    days = list(closes.index)
    points = [days[i : i + every] for i in range(0, len(days), every)]
    curves = pd.DataFrame({"date": closes.index})
    trades, ics, predictions, champions, per_model = [], [], [], [], {}
    hold_equity, hold_fills = _buy_and_hold(closes, opens)
    for n, model in enumerate(models):
        predicted = _predictions(closes, seed=n)
        equity, fills = _model_trades(closes, opens, predicted)
        curves[model] = equity
        ic = _ic(closes, predicted)
        forecast = _forecast(closes, predicted)
        trading = _trading(equity, len(fills))
        per_model[model] = {
            "forecast": forecast,
            "trading": trading,
            "sessions_without_champion": 0,
            "promotions": 1 + n,
        }
        trades.append(pd.DataFrame(fills + hold_fills).assign(model=model))
        ics.append(ic.assign(model=model))
        predictions.append(_served(predicted, model, points))
        champions += _periods(model, n, points, closes, predicted, equity, hold_equity, fills)
    curves["naive"] = CASH
    curves["buy_and_hold"] = hold_equity
    hold, naive = _trading(hold_equity, len(hold_fills)), _trading(np.full(len(days), CASH), 0)
    summary = _summary(key, start, end, every, days, closes, points, per_model, naive, hold)
    table = pd.DataFrame(champions)
    if old:  # before the interval, the t-statistics, the in-sample count, period figures
        summary.pop("in_sample_sessions")
        for figures in [*per_model.values(), {"trading": hold}, {"trading": naive}]:
            for name in ("sharpe_ci_low", "sharpe_ci_high"):
                figures["trading"].pop(name)
            for name in ("ic_t", "rank_ic_t"):
                figures.get("forecast", {}).pop(name, None)
        table = table[[c for c in table.columns if not c.startswith("forecast_")]].copy()
        table.loc[len(table) - 1, "reason"] = f"holdout mape {HOSTILE} does not beat the naive"
    outputs = walkforward_output_keys(key)
    put_parquet(ctx.store, outputs["predictions"], pd.concat(predictions, ignore_index=True))
    put_parquet(ctx.store, outputs["champions"], table)
    put_parquet(ctx.store, outputs["trades"], pd.concat(trades, ignore_index=True))
    put_parquet(ctx.store, outputs["curves"], curves)
    put_parquet(ctx.store, outputs["ic"], pd.concat(ics, ignore_index=True))
    if not old:
        ctx.store.put_bytes(outputs["report"], REPORT.encode(), "text/html")
    put_json(ctx.store, outputs["summary"], summary)
    created = datetime(end.year, end.month, end.day, 22, 0, tzinfo=UTC) + timedelta(days=3)
    with ctx.engine.begin() as conn:
        conn.execute(
            walkforward_runs.insert().values(
                run_key=key,
                status="succeeded",
                start_date=start,
                end_date=end,
                retrain_every=every,
                window="expanding",
                models=",".join(models),
                points=len(points),
                dataset_version=f"{end}-9195ff992219",
                mlflow_run_id=f"{key[-10:]}{'0' * 22}",
                summary=json.dumps(summary),
                summary_key=outputs["summary"],
                report_key=None if old else outputs["report"],
                created_at=created,
                finished_at=created + timedelta(minutes=42),
            )
        )
    return {"summary": summary, "champions": table, "trades": pd.concat(trades), "curves": curves}


def _market(start: date, end: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Closes and opens per session (rows) and symbol (columns), sessions every symbol has."""
    bars = load_sample()
    bars = bars[(bars["date"] >= pd.Timestamp(start)) & (bars["date"] <= pd.Timestamp(end))]
    closes = bars.pivot(index="date", columns="symbol", values="close").dropna(axis=1, thresh=20)
    closes = closes.dropna()
    opens = bars.pivot(index="date", columns="symbol", values="open").loc[closes.index]
    return closes.astype("float64"), opens[closes.columns].astype("float64")


def _predictions(closes: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Next closes predicted: a 25th of the realised move plus noise (the last session's
    move is unknown: noise only)."""
    rng = np.random.default_rng(seed)
    move = (closes.shift(-1) / closes - 1).fillna(0.0)
    noise = rng.normal(0.0, 0.006, size=closes.shape)
    return closes * (1 + move / 25 + noise)


def _realised(closes: pd.DataFrame) -> pd.DataFrame:
    return closes.shift(-1) / closes - 1


def _ic(closes: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    long = _long(closes, predicted)
    ic = daily_ic(long["date"], long["predicted"], long["realised"])
    rank = daily_ic(long["date"], long["predicted"], long["realised"], rank=True)
    return pd.DataFrame({"date": ic.index, "ic": ic.to_numpy(), "rank_ic": rank.to_numpy()})


def _long(closes: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """One row per scored session and symbol: predicted and realised return, closes."""
    frame = pd.DataFrame(
        {
            "predicted": (predicted / closes - 1).stack(),
            "realised": _realised(closes).stack(),
            "close": closes.stack(),
            "next": closes.shift(-1).stack(),
            "prediction": predicted.stack(),
        }
    ).dropna()
    return frame.reset_index().rename(columns={"level_0": "date"})


def _forecast(closes: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, Any]:
    long = _long(closes, predicted)
    actual = long["next"].to_numpy()
    model = regression_metrics(actual, long["prediction"].to_numpy())
    naive = regression_metrics(actual, long["close"].to_numpy())
    same = np.sign(long["predicted"]) == np.sign(long["realised"])
    return {
        "rows": len(long),
        "sessions": int(long["date"].nunique()),
        "mape": model["mape"],
        "wmape": model["wmape"],
        "naive_mape": naive["mape"],
        "naive_wmape": naive["wmape"],
        "dm_p_value_naive": 0.0412 if model["mape"] < naive["mape"] else 0.7581,
        "directional_accuracy": float(same.mean()),
        **information_coefficients(long["date"], long["predicted"], long["realised"]),
    }


def _buy_and_hold(closes: pd.DataFrame, opens: pd.DataFrame) -> tuple[np.ndarray, list]:
    """Equal weights bought at the first session's open, held to the end."""
    day, share = closes.index[0], CASH / len(closes.columns)
    fills, shares = [], {}
    for symbol in closes.columns:
        price = float(opens.loc[day, symbol])
        cost = share * SLIPPAGE
        shares[symbol] = (share - cost) / price
        fills.append(_fill("buy_and_hold", day, day, symbol, "buy", shares[symbol], price, cost))
    equity = sum(closes[s].to_numpy() * q for s, q in shares.items())
    return np.asarray(equity, dtype="float64"), fills


def _model_trades(
    closes: pd.DataFrame, opens: pd.DataFrame, predicted: pd.DataFrame
) -> tuple[np.ndarray, list]:
    """Buy the symbol predicted to rise most (above the threshold) at the next open with
    a tenth of the equity, sell it at the open :data:`HOLD` sessions later."""
    days, cash, equity, fills = list(closes.index), CASH, [], []
    expected = predicted / closes - 1
    order: dict[str, Any] | None = None  # decided, to buy at the next open
    held: dict[str, Any] | None = None
    for i, day in enumerate(days):
        if held is not None and i == held["sell"]:
            price = float(opens.loc[day, held["symbol"]])
            cost = held["quantity"] * price * SLIPPAGE
            cash += held["quantity"] * price - cost
            pnl = held["quantity"] * (price - held["price"]) - cost - held["cost"]
            sell = ("sell", held["quantity"], price, cost, held["day"], pnl)
            fills.append(_fill("model", days[i - 1], day, held["symbol"], *sell))
            held = None
        if order is not None:
            price = float(opens.loc[day, order["symbol"]])
            held = {**order, "price": price, "cost": order["quantity"] * price * SLIPPAGE}
            held.update(day=day, sell=i + HOLD)
            cash -= held["quantity"] * price + held["cost"]
            buy = ("buy", held["quantity"], price, held["cost"])
            fills.append(_fill("model", days[i - 1], day, held["symbol"], *buy))
            order = None
        value = cash + (held["quantity"] * float(closes.loc[day, held["symbol"]]) if held else 0)
        equity.append(value)
        best = str(expected.loc[day].idxmax())
        if held is None and i + 1 < len(days) and expected.loc[day, best] > THRESHOLD:
            quantity = float(math.floor(0.1 * value / float(closes.loc[day, best])))
            order = {"symbol": best, "quantity": quantity}
    return np.asarray(equity, dtype="float64"), fills


def _fill(
    simulation: str,
    decided: pd.Timestamp,
    day: pd.Timestamp,
    symbol: str,
    side: str,
    quantity: float,
    price: float,
    cost: float,
    entry_day: pd.Timestamp | None = None,
    pnl: float | None = None,
) -> dict[str, Any]:
    return {
        "simulation": simulation,
        "decided": decided.date(),
        "day": day.date(),
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "price": price,
        "cost": cost,
        "entry_day": entry_day,
        "realised_pnl": pnl,
    }


def _trading(equity: np.ndarray, trades: int) -> dict[str, Any]:
    path = np.concatenate([[CASH], equity])
    returns = np.diff(path) / path[:-1]
    spread = float(np.std(returns, ddof=1))
    per_session = float(np.mean(returns)) / spread if spread > 0 else None
    low, high = sharpe_interval(per_session, len(returns)) if per_session else (None, None)
    return {
        "final_equity": float(path[-1]),
        "total_return": float(path[-1] / CASH - 1),
        "sharpe": per_session * math.sqrt(252) if per_session else None,
        "sharpe_ci_low": low,
        "sharpe_ci_high": high,
        "max_drawdown": float(np.min(path / np.maximum.accumulate(path) - 1)),
        "trades": float(trades),
    }


def _served(predicted: pd.DataFrame, model: str, points: list[list]) -> pd.DataFrame:
    parts = []
    for index, sessions in enumerate(points):
        trained_to = sessions[0] - pd.offsets.BDay(1)
        rows = predicted.loc[sessions].stack().rename("prediction").reset_index()
        rows.columns = ["day", "symbol", "prediction"]
        parts.append(rows.assign(model=model, point=index, trained_to=trained_to, role="champion"))
    return pd.concat(parts, ignore_index=True)


def _periods(
    model: str,
    n: int,
    points: list[list],
    closes: pd.DataFrame,
    predicted: pd.DataFrame,
    equity: np.ndarray,
    hold: np.ndarray,
    fills: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The timeline: point 0 promoted; point 1 rejected for the first model (point 0 keeps
    serving), promoted for the second."""
    rows, at = [], 0
    for index, sessions in enumerate(points):
        promoted = index == 0 or n == 1
        champion = index if promoted else 0
        inside = slice(at, at + len(sessions))
        before, held = (equity[at - 1], hold[at - 1]) if at else (CASH, CASH)
        forecast = _forecast(closes.loc[sessions], predicted.loc[sessions])
        candidate = 0.0109 + 0.0004 * index - 0.0002 * n
        rows.append(
            {
                "model": model,
                "point": index,
                "trained_to": sessions[0] - pd.offsets.BDay(1),
                "first": sessions[0],
                "last": sessions[-1],
                "sessions": len(sessions),
                "champion": champion,
                "champion_trained_to": points[champion][0] - pd.offsets.BDay(1),
                "challenger": pd.NA,
                "promoted": promoted,
                "reason": (
                    f"holdout mape {candidate:.6f} beats the naive 0.011100"
                    if promoted
                    else f"holdout mape {candidate:.6f} does not beat the naive 0.011100"
                ),
                "candidate_mape": candidate,
                "naive_mape": 0.0111,
                "champion_mape": None if index == 0 else 0.0112,
                "p_value_naive": 0.04 if promoted else 0.66,
                "p_value_champion": None if index == 0 else 0.31,
                "role": "champion",
                "return": float(equity[inside][-1] / before - 1),
                "buy_and_hold_return": float(hold[inside][-1] / held - 1),
                "trades": sum(
                    sessions[0].date() <= f["decided"] <= sessions[-1].date() for f in fills
                ),
                **{f"forecast_{k}": v for k, v in forecast.items()},
            }
        )
        at += len(sessions)
    return rows


def _summary(
    key: str,
    start: date,
    end: date,
    every: int,
    days: list,
    closes: pd.DataFrame,
    points: list[list],
    per_model: dict[str, Any],
    naive: dict[str, Any],
    hold: dict[str, Any],
) -> dict[str, Any]:
    return {
        "run_key": key,
        "dataset_version": f"{end}-9195ff992219",
        "from": str(days[0].date()),
        "to": str(days[-1].date()),
        "sessions": len(days),
        "symbols": len(closes.columns),
        "retrain_every": every,
        "window": "expanding",
        "retrain_points": [
            {
                "index": i,
                "trained_to": str((s[0] - pd.offsets.BDay(1)).date()),
                "first": str(s[0].date()),
                "last": str(s[-1].date()),
            }
            for i, s in enumerate(points)
        ],
        "models": per_model,
        "benchmarks": {"naive": naive, "buy_and_hold": hold},
        "in_sample_sessions": 0,
        "risk_free_rate": 0.0,
        "threshold": THRESHOLD,
        "costs": {"slippage_bps": SLIPPAGE * 1e4, "commission_per_share": 0.0},
        "fills": "next session's open",
        "promotion_max_p_value": None,
        "timings": {"load": 1.2, "train": 60.0, "gate": 0.1, "simulate": 0.1},
    }
