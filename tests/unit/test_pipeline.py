"""The daily pipeline's one definition: stage order and the retrain rule with its cool-down."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import insert

from mlops.db import migrate
from mlops.db.engine import make_engine
from mlops.db.schema import retrain_requests, stage_runs
from mlops.pipeline import DAILY_STAGES, TRAIN_STAGE, plan_retraining, retrain_rule


def test_the_day_runs_data_prep_then_scoring_trading_and_monitoring() -> None:
    assert DAILY_STAGES == ("data-prep", "batch-infer", "trade", "monitor")
    assert TRAIN_STAGE not in DAILY_STAGES


def test_no_request_no_training() -> None:
    plan = retrain_rule([], date(2017, 6, 1), date(2017, 6, 30), cooldown_days=5)
    assert not plan.retrain
    assert plan.reason == "no open retrain request"


def test_a_request_trains_when_never_trained_or_the_cool_down_has_passed() -> None:
    assert retrain_rule(["drift"], None, date(2017, 6, 1), cooldown_days=5).retrain
    # Wednesday 2017-05-31 to Wednesday 2017-06-07: five weekdays (May 31, Jun 1, 2, 5, 6).
    plan = retrain_rule(["a", "drift"], date(2017, 5, 31), date(2017, 6, 7), cooldown_days=5)
    assert plan.retrain
    assert plan.reason == "drift"
    assert plan.open_requests == 2


def test_a_request_inside_the_cool_down_waits_and_says_why() -> None:
    plan = retrain_rule(["drift"], date(2017, 5, 31), date(2017, 6, 6), cooldown_days=5)
    assert not plan.retrain
    assert "4 weekday(s) ago, under the cool-down of 5" in plan.reason


def test_a_weekend_does_not_count_towards_the_cool_down() -> None:
    friday, next_friday = date(2017, 6, 2), date(2017, 6, 9)
    assert not retrain_rule(["x"], friday, date(2017, 6, 8), cooldown_days=5).retrain
    assert retrain_rule(["x"], friday, next_friday, cooldown_days=5).retrain


def test_plan_reads_open_requests_and_the_last_successful_training(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'mlops.db'}")
    migrate.upgrade(engine)
    now = datetime.now(UTC)
    requests = [
        (date(2017, 6, 1), "old", "done"),
        (date(2017, 6, 7), "drift", "open"),
        (date(2017, 6, 20), "later", "open"),
    ]
    runs = [  # the last successful training, a later failed one, another stage
        ("a", "train", date(2017, 6, 1), "succeeded"),
        ("b", "train", date(2017, 6, 6), "failed"),
        ("c", "monitor", date(2017, 6, 7), "succeeded"),
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(retrain_requests),
            [
                {"requested_date": d, "reason": r, "status": st, "created_at": now}
                for d, r, st in requests
            ],
        )
        conn.execute(
            insert(stage_runs),
            [
                {"run_id": r, "stage": s, "run_date": d, "status": st, "started_at": now}
                for r, s, d, st in runs
            ],
        )
    early = plan_retraining(engine, date(2017, 6, 7), cooldown_days=5)
    assert (early.retrain, early.open_requests, early.last_training) == (False, 1, date(2017, 6, 1))
    due = plan_retraining(engine, date(2017, 6, 8), cooldown_days=5)
    assert (due.retrain, due.reason) == (True, "drift")
    engine.dispose()
