"""``mlops walk-forward``: what the system would have earned, retraining the way it runs live.

1. Plan (:mod:`~mlops.walkforward.plan`): the newest dataset that reaches ``--to``, the
   retrain points, the run key; the run is claimed in ``walkforward_runs`` with its MLflow
   parent run.
2. Train (:mod:`~mlops.walkforward.points`): every point not trained yet, in this
   process (``--workers 1``), in a pool of ``--workers`` processes, or one point per pod
   of an Indexed Job (``--point`` from ``JOB_COMPLETION_INDEX``); each point's models
   become nested MLflow runs.
3. Finalize, once every point is done (the pod that completes the set, or
   ``--finalize``): the promotion gate replayed (:mod:`~mlops.walkforward.timeline`), the
   figures (:mod:`~mlops.walkforward.figures`), and the outputs
   (:mod:`~mlops.walkforward.publish`).

A rerun with the same options has the same key: it trains only the missing points, and a
finished run answers with its summary.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import select, update

from mlops.context import Context
from mlops.contracts import catalog, datasets
from mlops.contracts.columns import require_inputs
from mlops.contracts.keys import walkforward_output_keys
from mlops.db.schema import walkforward_runs
from mlops.db.upsert import insert_new
from mlops.errors import ConfigError, Terminated
from mlops.runs import utcnow
from mlops.settings import Settings
from mlops.store import ObjectStore, open_store
from mlops.trading.backtest import rules_from
from mlops.training.model_config import input_names, is_classifier_config, load_model_config
from mlops.walkforward import experiment, points, publish
from mlops.walkforward.plan import Plan, Window, plan_key, retrain_points, sessions_of

log = logging.getLogger(__name__)

FINISHED, WAITING, PLANNED = "finished", "waiting", "planned"


@dataclass
class WalkForwardResult:
    run_key: str
    # finished; waiting: a point of an Indexed Job whose siblings are not done; planned
    status: str
    dataset_version: str
    start: date
    end: date
    retrain_every: int
    window: str
    models: list[str]
    points: int
    sessions: int
    trained_points: list[int] = field(default_factory=list)  # trained by this run
    in_sample_sessions: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def run(
    ctx: Context,
    as_of: date | None = None,
    *,
    start: date,
    end: date | None = None,
    retrain_every: int,
    window: str = "expanding",
    models: list[str] | None = None,
    workers: int = 1,
    point: int | None = None,
    finalize: bool = False,
    plan_only: bool = False,
) -> WalkForwardResult:
    """Run the walk-forward (see the module); ``point``: only that retrain point, then
    finalize when it completes the set; ``finalize``: combine the points, train nothing;
    ``plan_only``: say the plan (the retrain points: an Indexed Job's completions), do
    nothing else.
    """
    began = time.perf_counter()
    timings: dict[str, float] = {}
    end = end or as_of
    version = datasets.covering_version(ctx.engine, end, earliest=True)
    _, frame = datasets.load(ctx.store, version)
    plan = make_plan(
        ctx.settings, ctx.store, frame, version, start, end, retrain_every, window, models
    )
    timings["load"] = round(time.perf_counter() - began, 2)
    if plan_only:
        return _result(plan, PLANNED, [], {"plan": plan.to_dict()}, {}, None, timings)
    _check_point(plan, point)
    stored = _finished(ctx, plan)
    if stored is not None:
        log.info("Walk-forward %s is finished already: its summary is reused", plan.key)
        return stored
    client = ctx.mlflow
    exp = experiment.experiment_id(client, ctx.settings)
    parent = _claim(ctx, plan, client, exp)
    try:
        return _walk(ctx, plan, frame, (exp, parent), point, workers, finalize, timings, began)
    except BaseException as exc:  # the parent run says how it ended; a rerun finishes it
        ended = isinstance(exc, KeyboardInterrupt | SystemExit | Terminated)
        experiment.end_quietly(client, parent, "KILLED" if ended else "FAILED")
        raise


def _check_point(plan: Plan, point: int | None) -> None:
    if point is not None and not 0 <= point < len(plan.points):
        raise ConfigError(
            f"--point {point} is not a retrain point of this walk-forward: it has "
            f"{len(plan.points)} (0 to {len(plan.points) - 1}); its Indexed Job needs "
            f"completions: {len(plan.points)}."
        )


def _walk(
    ctx: Context,
    plan: Plan,
    frame: pd.DataFrame,
    runs: tuple[str, str],
    point: int | None,
    workers: int,
    finalize: bool,
    timings: dict[str, float],
    began: float,
) -> WalkForwardResult:
    """Train what is wanted and missing, then finalize when every point is done."""
    exp, parent = runs
    trained: list[int] = []
    train_began = time.perf_counter()
    if not finalize:
        wanted = [point] if point is not None else [p.index for p in plan.points]
        trained = _train(ctx, plan, frame, wanted, workers, parent, exp)
    timings["train"] = round(time.perf_counter() - train_began, 2)
    missing = [p.index for p in plan.points if not points.is_done(ctx.store, plan, p.index)]
    if missing:
        if finalize:
            raise ConfigError(
                f"Walk-forward {plan.key} cannot be finalized: retrain points {missing} are "
                "not trained yet."
            )
        log.info("Walk-forward %s: waiting for retrain points %s", plan.key, missing)
        return _result(plan, WAITING, trained, {}, {}, parent, timings)
    if point is not None and not _claim_finalize(ctx, plan):
        log.info("Walk-forward %s is being finalized by another runner", plan.key)
        return _result(plan, WAITING, trained, {}, {}, parent, timings)
    try:
        done = publish.finalize(ctx, plan, frame, rules_from(ctx.settings), timings)
    except BaseException:
        _release_finalize(ctx, plan)  # the next runner (a pod's retry) may finalize
        raise
    summary, keys = done.summary, done.keys
    experiment.record_gate(ctx.mlflow, exp, plan, done.periods)
    experiment.close_parent(ctx.mlflow, parent, summary, done.report, "FINISHED")
    _record_finished(ctx, plan, summary, keys)
    timings["total"] = round(time.perf_counter() - began, 2)
    result = _result(plan, FINISHED, trained, summary, keys, parent, timings)
    publish.log_summary(summary)
    log.info(
        "Walk-forward %s: %d retrain points x %d models (%d trained now) in %s",
        plan.key,
        len(plan.points),
        len(plan.models),
        len(trained),
        ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in timings.items()),
    )
    return result


def _regressors(
    names: list[str], configs: dict[str, dict[str, Any]], *, asked: bool
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The models a walk-forward replays: the regressors. A direction classifier (traded on
    probabilities, judged on log loss) is left out of the catalog's with an info line, and
    refused when named in ``--models``.
    """
    classifiers = [n for n in names if is_classifier_config(configs[n])]
    if classifiers and asked:
        raise ConfigError(
            f"The walk-forward replays regressors only; {', '.join(classifiers)} is a "
            "direction classifier: leave it out of --models."
        )
    if classifiers:
        log.info("Direction classifiers are not replayed: %s", ", ".join(classifiers))
    kept = [n for n in names if n not in classifiers]
    return kept, {n: configs[n] for n in kept}


def make_plan(
    settings: Settings,
    store: ObjectStore,
    frame: pd.DataFrame,
    version: str,
    start: date,
    end: date | None,
    retrain_every: int,
    window: str,
    models: list[str] | None,
) -> Plan:
    """The plan of a walk-forward over ``frame`` (dataset ``version``)."""
    days = sessions_of(frame)
    end = end or days[-1]
    if end > days[-1]:
        end = days[-1]
    names = models or catalog.model_names(settings, store)
    for name in names:
        catalog.spec(settings, store, name)  # an unknown name stops here, with the catalog listed
    parsed = Window.parse(window)
    needed = settings.validation_days + settings.holdout_days + 30
    if parsed.sessions is not None and parsed.sessions < needed + 1:
        raise ConfigError(
            f"--window {window} is shorter than one training needs: at least {needed + 1} "
            "sessions (VALIDATION_DAYS + HOLDOUT_DAYS + 30, and the day without a target)."
        )
    warmup = int(frame.groupby("symbol")["warmup"].sum().max()) if "warmup" in frame else 0
    found = retrain_points(days, start, end, retrain_every, needed + warmup + 1)
    configs = {
        n: load_model_config(settings, catalog.spec(settings, store, n).config_path) for n in names
    }
    names, configs = _regressors(names, configs, asked=models is not None)
    for name in names:  # a model the dataset cannot feed, before any training
        require_inputs(name, input_names(configs[name]), frame.columns, version)
    trainings = {
        "dataset": version,
        "from": start,
        "to": end,
        "retrain_every": retrain_every,
        "window": str(parsed),
        "models": configs,
        "seed": settings.random_seed,
        "validation_days": settings.validation_days,
        "holdout_days": settings.holdout_days,
    }
    results = {
        **trainings,
        "max_p_value": settings.promotion_max_p_value,
        # Regressors only: the classifier's threshold is not theirs (nor in the key).
        "rules": {
            k: v for k, v in asdict(rules_from(settings)).items() if k != "probability_threshold"
        },
    }
    return Plan(
        key=plan_key(results, end, retrain_every),
        points_key=plan_key(trainings, end, retrain_every),
        dataset_version=version,
        start=found[0].first,
        end=found[-1].last,
        retrain_every=retrain_every,
        window=str(parsed),
        models=names,
        points=found,
    )


# Training the points.


def _train(
    ctx: Context,
    plan: Plan,
    frame: pd.DataFrame,
    wanted: list[int],
    workers: int,
    parent: str,
    exp: str,
) -> list[int]:
    """Train the ``wanted`` points not done yet; each recorded in MLflow as it ends."""
    todo = [i for i in wanted if not points.is_done(ctx.store, plan, i)]
    for index in sorted(set(wanted) - set(todo)):  # a rerun: the MLflow runs may be missing
        experiment.record_point(
            ctx.mlflow, exp, parent, plan, points.load_result(ctx.store, plan, index)
        )

    def record(result: points.PointResult) -> None:
        experiment.record_point(ctx.mlflow, exp, parent, plan, result)

    if workers <= 1 or len(todo) <= 1:
        for index in todo:
            record(points.train_point(ctx.settings, ctx.store, plan, index, frame))
    else:
        _in_pool(ctx.settings, plan, todo, min(workers, len(todo)), record)
    return todo


def _in_pool(
    settings: Settings,
    plan: Plan,
    todo: list[int],
    workers: int,
    record: Callable[[points.PointResult], None],
) -> None:
    """The points in a pool of fresh processes (spawned: no torch state is inherited)."""
    spawn = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=spawn, initializer=_limit_threads, initargs=(threads,)
    )
    try:
        futures = [pool.submit(_point_in_worker, settings, plan.to_dict(), i) for i in todo]
        for future in as_completed(futures):
            record(future.result())
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _limit_threads(threads: int) -> None:
    """A worker's share of the cores for torch, so K workers do not each use them all."""
    import torch

    torch.set_num_threads(threads)


def _point_in_worker(settings: Settings, plan: dict[str, Any], index: int) -> points.PointResult:
    from mlops import log as mlops_log

    mlops_log.configure(settings.log_format, settings.log_level)
    return points.train_point(settings, open_store(settings), Plan.from_dict(plan), index)


# The database row: the claim, the finalize claim, the end.


def _claim(ctx: Context, plan: Plan, client: Any, exp: str) -> str:
    """The run's MLflow parent, from its row; the first runner creates both."""
    existing = _row(ctx, plan)
    if existing is not None and existing.mlflow_run_id:
        return str(existing.mlflow_run_id)
    parent = experiment.open_parent(client, exp, plan)
    row = {
        "run_key": plan.key,
        "status": "running",
        "start_date": plan.start,
        "end_date": plan.end,
        "retrain_every": plan.retrain_every,
        "window": plan.window,
        "models": ",".join(plan.models),
        "points": len(plan.points),
        "dataset_version": plan.dataset_version,
        "mlflow_run_id": parent,
        "created_at": utcnow(),
    }
    with ctx.engine.begin() as conn:
        new = insert_new(conn, walkforward_runs, [row], keys=["run_key"])
    if new:
        publish.write_plan(ctx.store, plan)
        return parent
    client.delete_run(parent)  # another runner claimed it first: nest under its parent
    winner = _row(ctx, plan)
    assert winner is not None
    return str(winner.mlflow_run_id)


def _row(ctx: Context, plan: Plan) -> Any:
    with ctx.engine.connect() as conn:
        return conn.execute(
            select(walkforward_runs).where(walkforward_runs.c.run_key == plan.key)
        ).first()


def _claim_finalize(ctx: Context, plan: Plan) -> bool:
    """Exactly one of the pods that find every point done finalizes."""
    with ctx.engine.begin() as conn:
        claimed = conn.execute(
            update(walkforward_runs)
            .where(walkforward_runs.c.run_key == plan.key, walkforward_runs.c.status == "running")
            .values(status="finalizing")
        ).rowcount
    return bool(claimed)


def _release_finalize(ctx: Context, plan: Plan) -> None:
    try:
        with ctx.engine.begin() as conn:
            conn.execute(
                update(walkforward_runs)
                .where(
                    walkforward_runs.c.run_key == plan.key,
                    walkforward_runs.c.status == "finalizing",
                )
                .values(status="running")
            )
    except Exception as exc:  # the failure itself matters more
        log.warning("Walk-forward %s could not release its finalize claim: %s", plan.key, exc)


def _finished(ctx: Context, plan: Plan) -> WalkForwardResult | None:
    row = _row(ctx, plan)
    if row is None or row.status != "succeeded" or not row.summary:
        return None
    summary = json.loads(row.summary)
    keys = walkforward_output_keys(plan.key)
    return _result(plan, FINISHED, [], summary, keys, row.mlflow_run_id, {})


def _record_finished(
    ctx: Context, plan: Plan, summary: dict[str, Any], keys: dict[str, str]
) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(
            update(walkforward_runs)
            .where(walkforward_runs.c.run_key == plan.key)
            .values(
                status="succeeded",
                summary=json.dumps(summary, default=str),
                summary_key=keys["summary"],
                report_key=keys["report"],
                finished_at=utcnow(),
            )
        )


def _result(
    plan: Plan,
    status: str,
    trained: list[int],
    summary: dict[str, Any],
    keys: dict[str, str],
    parent: str | None,
    timings: dict[str, float],
) -> WalkForwardResult:
    return WalkForwardResult(
        run_key=plan.key,
        status=status,
        dataset_version=plan.dataset_version,
        start=plan.start,
        end=plan.end,
        retrain_every=plan.retrain_every,
        window=plan.window,
        models=plan.models,
        points=len(plan.points),
        sessions=plan.sessions,
        trained_points=trained,
        in_sample_sessions=int(summary.get("in_sample_sessions", 0)),
        summary=summary,
        keys=keys,
        mlflow_run_id=parent,
        timings=timings,
    )
