"""Ctrl-C (SIGINT) of a stage in a real process, while its write is held in flight: the
same contract as SIGTERM, with the shell's exit code for an interrupt (130)."""

from __future__ import annotations

import signal

from faults.conftest import DAYS, assert_no_run_left_running, assert_ok, wait_until
from mlops.db.schema import trade_decisions


def test_ctrl_c_during_the_write_is_recorded_and_the_rerun_converges(
    make_world, cli, spawn
) -> None:
    world = make_world()
    args = ["trade", "--as-of", DAYS[1].isoformat()]
    held = world.pg.hold_when(b"INTO trade_decisions")
    spawned = spawn(world.env, *args)
    wait_until(lambda: held.is_set() or spawned.process.poll() is not None, "the held write")
    assert spawned.process.poll() is None, spawned.err.read_text()
    spawned.signal(signal.SIGINT)
    world.pg.release()

    outcome = spawned.wait()
    assert outcome.code == 130, str(outcome)
    assert outcome.stdout == "" and "Traceback" not in outcome.stderr
    assert outcome.sentence == (
        "error: mlops trade was terminated by SIGINT; the run is recorded as failed, rerun it."
    )
    (run,) = world.runs("trade")
    assert (run.status, run.error) == ("failed", "terminated by SIGINT")
    assert world.count(trade_decisions) == 0

    first = assert_ok(cli(world.env, *args))
    again = assert_ok(cli(world.env, *args))
    assert first["decisions"] and again["decisions"] == first["decisions"] and again["rerun"]
    assert world.count(trade_decisions) == len(first["decisions"])
    assert_no_run_left_running(world)
