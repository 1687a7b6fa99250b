"""A database that freezes mid-query: the statement was sent, the proxy passes nothing more
(and still acknowledges, so TCP keepalives see nothing wrong), Postgres never even gets it,
so its own statement_timeout cannot help.

The client gives up after DATABASE_STATEMENT_TIMEOUT_SECONDS plus
DATABASE_CONNECT_TIMEOUT_SECONDS (exit 6, one sentence naming them), and SIGTERM ends a
process blocked in that read (exit 143, the run recorded as terminated) instead of waiting
for the kubelet's SIGKILL. Neither test ever releases the frozen statement.
"""

from __future__ import annotations

import os
import signal
import threading

from faults.conftest import DAYS, DEADLINE, assert_fails
from mlops.db.schema import trade_decisions

TRADE = ["trade", "--as-of", DAYS[1].isoformat()]  # 2017-06-01: predictions, no trade yet
READ = b"FROM predictions"  # the trade stage's read of the day's predictions


def test_a_frozen_read_fails_at_the_statement_limit_and_sigterm_ends_it(world, cli) -> None:
    # The client's own limit: DATABASE_STATEMENT_TIMEOUT_SECONDS plus
    # DATABASE_CONNECT_TIMEOUT_SECONDS without an answer (here 1 + 1 s).
    env = world.with_env(DATABASE_STATEMENT_TIMEOUT_SECONDS=1, DATABASE_CONNECT_TIMEOUT_SECONDS=1)
    frozen = world.pg.hold_when(READ)
    outcome = cli(env, *TRADE)
    assert frozen.is_set()
    assert_fails(
        outcome,
        6,
        "sent no answer for 2 s",
        "DATABASE_STATEMENT_TIMEOUT_SECONDS plus DATABASE_CONNECT_TIMEOUT_SECONDS",
    )
    (run,) = world.runs("trade")
    assert run.status == "failed" and "sent no answer for 2 s" in run.error

    # SIGTERM while blocked in the read (the statement limit is now 60 s): in this process
    # (no interpreter to start), sent by a thread once the read is frozen, so the stage's
    # handler is installed and the main thread is in libpq, exactly as in a pod.
    frozen = world.pg.hold_when(READ)

    def terminate_once_frozen() -> None:
        if frozen.wait(timeout=DEADLINE):
            os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=terminate_once_frozen, daemon=True)
    sender.start()
    outcome = cli(world.env, *TRADE)
    sender.join()
    assert outcome.code == 143, str(outcome)
    assert outcome.seconds < 30, "within the pod's grace period"
    assert outcome.sentence == (
        "error: mlops trade was terminated by SIGTERM; the run is recorded as failed, rerun it."
    )
    latest = world.runs("trade")[-1]
    assert (latest.status, latest.error) == ("failed", "terminated by SIGTERM")
    assert world.count(trade_decisions) == 0
