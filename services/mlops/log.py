"""Logging to stdout: readable lines at a terminal, one JSON object per line in the cluster.

Every record carries the stage and the run id of the command that wrote it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import warnings
from datetime import UTC, datetime

_stage: contextvars.ContextVar[str] = contextvars.ContextVar("stage", default="-")
_run_id: contextvars.ContextVar[str] = contextvars.ContextVar("run_id", default="-")

NOISY_LOGGERS = ("ludwig", "mlflow", "alembic", "urllib3", "botocore", "evidently", "matplotlib")


def bind(stage: str | None = None, run_id: str | None = None) -> None:
    """Attach a stage name and run id to every following log record."""
    if stage is not None:
        _stage.set(stage)
    if run_id is not None:
        _run_id.set(run_id)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = _stage.get()
        record.run_id = _run_id.get()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "stage": getattr(record, "stage", "-"),
            "run_id": getattr(record, "run_id", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure(fmt: str = "text", level: str = "INFO") -> None:
    """Send all logs to stdout in the chosen format."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s [%(stage)s] %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Known harmless notices from libraries, printed on every run otherwise.
    warnings.filterwarnings("ignore", message=r".*R\^2 score is not well-defined.*")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
