"""Runs at the same time, leases, and the day a stage asks for.

Two ``mlops migrate`` at once wait for each other; a second run of the same stage and
day stops at once while the first holds the lease; data prep's shards race to finalize
and one dataset comes out; a run whose heartbeat stopped is marked abandoned by the next
command; a stage asked for a day data prep did not publish says which day it found.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import create_engine, text

from faults.conftest import DAYS, assert_fails, assert_no_run_left_running, assert_ok, wait_until
from mlops.db import migrate
from mlops.db.schema import datasets, stage_runs

NEW_DAY = date(2017, 6, 5)


def test_two_migrations_at_once_wait_for_each_other(world, postgres_server, spawn) -> None:
    url = postgres_server.create_database(prefix="mig")
    name = url.rsplit("/", 1)[1]
    env = world.with_env(DATABASE_URL=f"postgresql+psycopg2://postgres@{world.pg.host_port}/{name}")
    held = world.pg.hold_when(b"CREATE TABLE stage_runs")  # the first one, mid-migration
    first = spawn(env, "migrate")
    wait_until(held.is_set, "the first migration to be under way")
    second = spawn(env, "migrate")
    wait_until(
        lambda: "Another `mlops migrate` is running" in second.err.read_text(),
        "the second migration to wait",
    )
    world.pg.release()
    done = [first.wait(), second.wait()]
    assert [o.code for o in done] == [0, 0], [str(o) for o in done]
    head = migrate.head_revision()
    assert "(was empty)" in done[0].stdout and f"(was {head})" in done[1].stdout
    assert "Traceback" not in done[0].stderr + done[1].stderr
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            head
        ]
    engine.dispose()


def test_a_second_run_of_the_same_stage_and_day_stops_at_once(world, cli, spawn) -> None:
    day = DAYS[-1].isoformat()
    held = world.pg.hold_when(b"INTO predictions")
    first = spawn(world.env, "batch-infer", "--as-of", day)
    wait_until(held.is_set, "the first run to be writing")
    second = cli(world.env, "batch-infer", "--as-of", day)
    assert_fails(second, 11, f"Stage batch-infer for {day} is already running", "nothing was done")
    assert f"pid {first.pid}" in second.sentence
    world.pg.release()
    assert first.wait().code == 0
    assert world.predictions_on(DAYS[-1]) == 5
    assert [r.status for r in world.runs("batch-infer")] == ["succeeded"]
    # Another day is another lease.
    assert_ok(cli(world.env, "batch-infer", "--as-of", DAYS[1].isoformat()))


def test_shards_side_by_side_publish_one_dataset(world, spawn) -> None:
    shards = [
        spawn(
            world.with_env(DATA_PREP_SHARDS="2", JOB_COMPLETION_INDEX=str(i)),
            "data-prep",
            "--as-of",
            NEW_DAY.isoformat(),
        )
        for i in (0, 1)
    ]
    results = [s.wait() for s in shards]
    assert [r.code for r in results] == [0, 0], [str(r) for r in results]
    payloads = [json.loads(r.stdout) for r in results]
    assert sum(p["new"] for p in payloads) == 1  # exactly one of them published it
    versions = {p["version"] for p in payloads if p["version"]}
    assert len(versions) == 1
    assert world.count(datasets, datasets.c.as_of == NEW_DAY) == 1
    manifests = [k for k in world.s3_keys(f"datasets/features/{NEW_DAY}") if "manifest" in k]
    assert manifests == [f"datasets/features/{versions.pop()}/manifest.json"]
    assert_no_run_left_running(world)


def test_two_finalizes_of_one_day_are_serialised_by_the_lease(world, cli, spawn) -> None:
    for i in (0, 1):
        env = world.with_env(DATA_PREP_SHARDS="2", JOB_COMPLETION_INDEX=str(i))
        assert_ok(cli(env, "data-prep", "--as-of", NEW_DAY.isoformat()))
    with world.engine.begin() as conn:  # as if the last shard had not finalized
        conn.execute(datasets.delete().where(datasets.c.as_of == NEW_DAY))
    env = world.with_env(DATA_PREP_SHARDS="2")
    held = world.pg.hold_when(b"INTO datasets")
    first = spawn(env, "data-prep", "--finalize", "--as-of", NEW_DAY.isoformat())
    wait_until(held.is_set, "the first finalize to claim the dataset")
    second = cli(env, "data-prep", "--finalize", "--as-of", NEW_DAY.isoformat())
    assert_fails(second, 11, "is already running")
    world.pg.release()
    assert first.wait().code == 0
    assert world.count(datasets, datasets.c.as_of == NEW_DAY) == 1


def test_a_run_silent_past_its_lease_is_marked_abandoned_by_the_next_command(world, cli) -> None:
    day = DAYS[-1]
    stale = datetime.now(UTC) - timedelta(minutes=10)
    with world.engine.begin() as conn:
        conn.execute(
            stage_runs.insert().values(
                run_id="gone-node-run",
                stage="batch-infer",
                run_date=day,
                started_at=stale,
                heartbeat_at=stale,
                status="running",
                host="node-that-vanished",
                pid=4242,
                lease_key=f"batch-infer|{day}",
            )
        )
    assert_ok(cli(world.env, "batch-infer", "--as-of", day.isoformat()))
    gone, mine = world.runs("batch-infer")
    assert gone.status == "abandoned"
    assert "no heartbeat for" in gone.error and "node-that-vanished" in gone.error
    assert "STAGE_LEASE_SECONDS" in gone.error
    assert mine.status == "succeeded"


def test_a_run_with_a_fresh_heartbeat_elsewhere_is_left_running(world, cli) -> None:
    day = DAYS[-1]
    now = datetime.now(UTC)
    with world.engine.begin() as conn:
        conn.execute(
            stage_runs.insert().values(
                run_id="live-elsewhere",
                stage="batch-infer",
                run_date=day,
                started_at=now,
                heartbeat_at=now,
                status="running",
                host="another-node",
                pid=4242,
                lease_key=f"batch-infer|{day}",
            )
        )
    outcome = cli(world.env, "batch-infer", "--as-of", day.isoformat())
    assert_fails(outcome, 11, "already running (run live-els on another-node, pid 4242")
    assert [r.status for r in world.runs("batch-infer")] == ["running"]
    assert world.predictions_on(day) == 0


def test_no_silent_fallback_to_an_older_dataset(world, cli) -> None:
    # Data prep fails for the day (the object store is down)...
    world.s3.kill()
    assert_fails(cli(world.env, "data-prep", "--as-of", NEW_DAY.isoformat()), 7)
    world.s3.restore()
    found = world.template.dataset_versions[DAYS[-1]]
    # ... then every stage asked for that day refuses, naming the day it found.
    for stage in ("batch-infer", "monitor", "train", "trade"):
        outcome = cli(world.env, stage, "--as-of", NEW_DAY.isoformat())
        assert_fails(
            outcome,
            3,
            f"No dataset was published for {NEW_DAY}; the newest before it is {found} "
            f"(as of {DAYS[-1]})",
            "--allow-older-dataset",
        )
    assert world.predictions_on(DAYS[-1]) == 0
    # On purpose, it is allowed, with a warning.
    allowed = cli(world.env, "batch-infer", "--as-of", NEW_DAY.isoformat(), "--allow-older-dataset")
    result = assert_ok(allowed)
    assert result["dataset_version"] == found and result["prediction_date"] == str(DAYS[-1])
    assert "as --allow-older-dataset asks" in allowed.stderr
    assert_no_run_left_running(world)
