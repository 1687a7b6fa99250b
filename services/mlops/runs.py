"""Stage runs: every command records when it started, how it ended and why."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, update

from mlops import log as mlops_log
from mlops.db.schema import stage_runs

if TYPE_CHECKING:
    from mlops.context import Context

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class StageRun:
    """Handle of a running stage; put results in ``details`` to store them with the run."""

    run_id: str
    stage: str
    run_date: date | None
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def record_stage_run(engine: Engine, stage: str, run_date: date | None) -> Iterator[StageRun]:
    """Insert a ``running`` row, then mark it ``succeeded`` or ``failed`` with the error."""
    run = StageRun(run_id=uuid.uuid4().hex, stage=stage, run_date=run_date)
    mlops_log.bind(stage=stage, run_id=run.run_id[:8])
    with engine.begin() as conn:
        conn.execute(
            stage_runs.insert().values(
                run_id=run.run_id,
                stage=stage,
                run_date=run_date,
                started_at=utcnow(),
                status="running",
            )
        )
    try:
        yield run
    except BaseException as exc:
        message = str(exc) or type(exc).__name__
        _finish(engine, run, "failed", message)
        raise
    else:
        _finish(engine, run, "succeeded", None)


def run_stage(
    ctx: Context, name: str, fn: Callable[..., Any], as_of: date | None, **kwargs: Any
) -> Any:
    """Call a stage's ``run(ctx, as_of=...)`` inside its stage-run record, result as details."""
    with record_stage_run(ctx.engine, name, as_of) as run:
        result = fn(ctx, as_of=as_of, **kwargs)
        payload = (
            asdict(result) if is_dataclass(result) and not isinstance(result, type) else result
        )
        run.details = payload if isinstance(payload, dict) else {"result": payload}
    return result


def _finish(engine: Engine, run: StageRun, status: str, error: str | None) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(
                update(stage_runs)
                .where(stage_runs.c.run_id == run.run_id)
                .values(
                    finished_at=utcnow(),
                    status=status,
                    error=error,
                    details=json.dumps(run.details, default=str),
                )
            )
    except Exception:  # the stage's own error matters more than the bookkeeping's
        logger.exception("Could not record the end of stage run %s", run.run_id)
