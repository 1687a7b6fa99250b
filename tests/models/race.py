"""A worker of the registry race test: a process of its own, forked from a fork server
that imported the CLI and MLflow once for all workers.

It runs ``mlops models ARGS`` as the CLI runs it, once per round, with the round's
environment: the commands of all workers are released together by a barrier, so they
reach the registry within milliseconds of each other, as two dashboard clicks 15 ms
apart did in issue 19.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
from typing import Any

# What the fork server imports before forking the workers.
PRELOAD = [
    "mlops.cli",
    "mlops.context",
    "mlops.model_admin",
    "mlops.tracking",
    "mlflow",
    "models.race",
]


def work(barrier: Any, commands: Any, results: Any) -> None:
    """Run each ``(environment, args)`` from ``commands`` (None: stop) after the barrier;
    report ``(args, exit code, stdout, stderr)`` to ``results``."""
    from mlops.cli import main

    while (command := commands.get()) is not None:
        env, args = command
        os.environ.clear()
        os.environ.update(env)
        out, err = io.StringIO(), io.StringIO()
        barrier.wait(timeout=120)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["models", *args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                logging.getLogger().handlers[:] = []
        gc.collect()  # each command's engine (and its pooled connections) goes now
        results.put((args, code, out.getvalue(), err.getvalue()))
