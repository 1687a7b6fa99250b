"""`mlops walk-forward` end to end on the bundled sample (real Ludwig trainings, MLflow on
SQLite, the local store): point in time, the gate replayed, figures from one definition,
the process pool equal to the sequential run, reruns that train nothing.

Two homes: one whose dataset reaches 2017-12-29, walked sequentially; one whose only
dataset was published as of 2017-11-15 (the bars after it never seen), walked by a
pool of two processes. Both retrain on 2017-06-30 and 2017-09-29.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import clean_environ, run_in_process

pytestmark = pytest.mark.slow

START, CUT = "2017-07-03", "2017-11-15"
MODELS = "stock-close,stock-close-mlp"


class Home:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = clean_environ(
            {"MLOPS_HOME": str(root), "TRAIN_EPOCHS": "2", "TRADE_THRESHOLD": "0.001"}
        )

    def cli(self, *args: str) -> Any:
        return run_in_process(self.env, *args)

    def settings(self) -> Any:
        from mlops.settings import load_settings

        return load_settings(MLOPS_HOME=str(self.root), TRAIN_EPOCHS=2, TRADE_THRESHOLD=0.001)

    def read(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.root / "store" / key)


def _walk(home: Home, *args: str) -> dict[str, Any]:
    done = home.cli("walk-forward", "--from", START, "--retrain-every", "63", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> dict[str, Any]:
    full, cut = Home(tmp_path_factory.mktemp("wf-full")), Home(tmp_path_factory.mktemp("wf-cut"))
    for home, day in ((full, "2017-12-29"), (cut, CUT)):
        assert home.cli("migrate").returncode == 0
        assert home.cli("data-prep", "--as-of", day).returncode == 0
    return {
        "full": full,
        "cut": cut,
        "sequential": _walk(full, "--models", MODELS),
        "pool": _walk(cut, "--models", "stock-close", "--workers", "2", "--to", CUT),
    }


def test_every_prediction_was_made_by_a_version_trained_before_its_session(walked):
    result, home = walked["sequential"], walked["full"]
    assert result["status"] == "finished" and result["in_sample_sessions"] == 0
    assert result["points"] == 2 and result["trained_points"] == [0, 1]
    served = home.read(result["keys"]["predictions"])
    assert set(served["model"]) == set(MODELS.split(","))
    assert (served["trained_to"] < served["day"]).all()
    assert served["day"].min() == pd.Timestamp(START)
    champions = home.read(result["keys"]["champions"])
    assert len(champions) == 4  # 2 points x 2 models
    assert (champions["trained_to"] < champions["first"]).all()
    # The champion of a period serves its sessions only: each row's trained_to is the
    # serving point's, and a period's rows come from one version per role.
    periods = champions.set_index(["model", "point"])
    for (model, role, point), rows in served.groupby(["model", "role", "point"]):
        served_periods = periods.loc[model]
        column = "champion" if role == "champion" else "challenger"
        owners = served_periods[served_periods[column] == point]
        assert not owners.empty
        assert rows["day"].min() >= owners["first"].min()


def test_truncating_the_bars_after_a_day_changes_nothing_before_it(walked):
    """Pool of two against sequential, and bars after 2017-11-15 against none: the same
    versions, the same predictions and the same gate decisions up to that day.
    """
    full, cut = walked["full"], walked["cut"]
    a = full.read(walked["sequential"]["keys"]["predictions"])
    b = cut.read(walked["pool"]["keys"]["predictions"])
    a = a[(a["model"] == "stock-close") & (a["day"] <= pd.Timestamp(CUT))].reset_index(drop=True)
    assert len(a) > 300
    pd.testing.assert_frame_equal(a, b.reset_index(drop=True), check_exact=True)
    gate = ["point", "champion", "challenger", "promoted", "reason", "candidate_mape"]
    ca = full.read(walked["sequential"]["keys"]["champions"])
    cb = cut.read(walked["pool"]["keys"]["champions"])
    ca = ca[ca["model"] == "stock-close"].reset_index(drop=True)
    pd.testing.assert_frame_equal(ca[gate], cb[gate], check_exact=True)
    ta = full.read(walked["sequential"]["keys"]["trades"])
    tb = cut.read(walked["pool"]["keys"]["trades"])
    ta = ta[(ta["model"] == "stock-close") & (ta["simulation"] == "model")]
    tb = tb[tb["simulation"] == "model"]
    decided = pd.Timestamp(CUT) - pd.Timedelta(days=1)
    before = [t[pd.to_datetime(t["decided"]) < decided].reset_index(drop=True) for t in (ta, tb)]
    assert len(before[0]) > 0
    pd.testing.assert_frame_equal(before[0], before[1], check_exact=True)


def test_ic_equals_a_scipy_recomputation(walked):
    from mlops.context import open_context
    from mlops.contracts import datasets

    result, home = walked["sequential"], walked["full"]
    ctx = open_context(home.settings())
    _, frame = datasets.load(ctx.store, result["dataset_version"])
    ctx.engine.dispose()
    served = home.read(result["keys"]["predictions"])
    mine = served[(served["model"] == "stock-close") & (served["role"] == "champion")]
    rows = mine.merge(frame, left_on=["day", "symbol"], right_on=["date", "symbol"])
    rows = rows[rows["target_date"] <= pd.Timestamp("2017-12-29")]
    daily, ranked = [], []
    for _, day in rows.groupby("day"):
        p = day["prediction"] / day["close"] - 1
        r = day["next_close"] / day["close"] - 1
        daily.append(stats.pearsonr(p, r)[0])
        ranked.append(stats.spearmanr(p, r)[0])
    forecast = result["summary"]["models"]["stock-close"]["forecast"]
    assert forecast["ic_sessions"] == len(daily)
    assert forecast["ic_mean"] == pytest.approx(np.mean(daily), abs=1e-12)
    assert forecast["rank_ic_mean"] == pytest.approx(np.mean(ranked), abs=1e-12)
    assert forecast["ic_t"] == pytest.approx(stats.ttest_1samp(daily, 0.0).statistic, rel=1e-9)


def test_walk_forward_trainings_are_nested_runs_not_registry_versions(walked):
    from mlops import tracking

    result, home = walked["sequential"], walked["full"]
    client = tracking.connect(home.settings())
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert "stock-close.forecast.ic_mean" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    assert len(children) == 4
    assert {c.data.tags["promotion"] for c in children} <= {"promoted", "rejected"}
    assert client.search_registered_models() == []


def test_a_rerun_answers_with_the_finished_run_and_trains_nothing(walked):
    from sqlalchemy import select

    from mlops.db.engine import make_engine
    from mlops.db.schema import walkforward_runs

    home = walked["full"]
    again = _walk(home, "--models", MODELS)
    assert again["run_key"] == walked["sequential"]["run_key"]
    assert again["trained_points"] == [] and again["summary"] == walked["sequential"]["summary"]
    engine = make_engine(home.settings().db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(walkforward_runs)).all()
    engine.dispose()
    assert (again["run_key"], "succeeded") in [(r.run_key, r.status) for r in rows]
    assert all(r.status == "succeeded" for r in rows)


def test_other_strategy_rules_reuse_the_trained_points(walked):
    """The trainings do not depend on the threshold: a walk-forward that differs only in
    TRADE_THRESHOLD is a new run (its own key and outputs) that trains nothing.
    """
    home, first = walked["full"], walked["sequential"]
    done = run_in_process(
        {**home.env, "TRADE_THRESHOLD": "0.003"},
        "walk-forward",
        "--from",
        START,
        "--retrain-every",
        "63",
        "--models",
        MODELS,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    other = json.loads(done.stdout)
    assert other["run_key"] != first["run_key"] and other["trained_points"] == []
    assert other["summary"]["threshold"] == 0.003
    pd.testing.assert_frame_equal(
        home.read(other["keys"]["predictions"]), home.read(first["keys"]["predictions"])
    )


def test_the_report_states_sessions_in_sample_costs_and_trades(walked):
    result, home = walked["sequential"], walked["full"]
    page = (home.root / "store" / result["keys"]["report"]).read_text()
    assert "0 of 125 sessions in sample" in page
    assert "risk-free rate 0" in page and "bp slippage" in page
    trades = home.read(result["keys"]["trades"])
    fills = result["summary"]["models"]["stock-close"]["trading"]["trades"]
    mine = trades[(trades["model"] == "stock-close") & (trades["simulation"] == "model")]
    assert len(mine) == fills and f"stock-close: {int(fills)} fills" in page


def test_bad_options_end_in_one_sentence(walked):
    home = walked["full"]
    done = home.cli(
        "walk-forward", "--from", "2017-09-01", "--to", "2017-08-01", "--retrain-every", "20"
    )
    assert done.returncode == 2 and "--from 2017-09-01 is after --to 2017-08-01" in done.stderr
    done = home.cli("walk-forward", "--from", START, "--retrain-every", "20", "--models", "nope")
    assert done.returncode == 2 and "No model named 'nope'" in done.stderr
    done = home.cli("walk-forward", "--from", START, "--retrain-every", "20", "--window", "x")
    assert done.returncode == 2 and "--window must be expanding or rolling:SESSIONS" in done.stderr


def test_its_trades_and_curves_equal_mlops_backtest_over_the_same_predictions(walked):
    """`mlops backtest --walk-forward KEY` trades the served predictions with the same
    simulation: the same fills, the same equity, session by session.
    """
    result, home = walked["sequential"], walked["full"]
    done = home.cli("backtest", "--walk-forward", result["run_key"])
    assert done.returncode == 0, done.stderr[-2000:]
    backtest = json.loads(done.stdout)
    assert backtest["start"] == START and backtest["end"] == "2017-12-29"
    assert backtest["in_sample_sessions"] == 0
    ours = home.read(result["keys"]["trades"])
    ours = ours[ours["model"] == "stock-close"].drop(columns="model").reset_index(drop=True)
    theirs = home.read(backtest["trades_key"])
    assert len(theirs[theirs["simulation"] == "model"]) > 0
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    curves = home.read(result["keys"]["curves"])
    theirs_curves = home.read(backtest["trades_key"].replace("trades.parquet", "curves.parquet"))
    np.testing.assert_array_equal(curves["stock-close"], theirs_curves["model"])
    np.testing.assert_array_equal(curves["buy_and_hold"], theirs_curves["buy_and_hold"])
    summary = result["summary"]["models"]["stock-close"]["trading"]
    assert summary == backtest["figures"]["model"]
    mlp = home.cli("backtest", "--walk-forward", f"{result['run_key']}:nope")
    assert mlp.returncode == 2 and "did not train 'nope'" in mlp.stderr
    outside = home.cli("backtest", "--walk-forward", result["run_key"], "--from", "2017-01-03")
    assert outside.returncode == 2 and "reaches outside them" in outside.stderr
