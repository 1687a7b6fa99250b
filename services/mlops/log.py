"""Logging to stderr: readable lines at a terminal, one JSON object per line in the cluster.

Stdout is left to the command's result alone, so ``mlops data-prep > result.json`` is
valid JSON. Every record carries the stage and the run id of the command that wrote it.
An unexpected failure's traceback goes to a file (:func:`save_traceback`, folder
``ERROR_LOG_DIR``, default ``<temp dir>/mlops-errors``), and in JSON format also into one
log record, never as a bare traceback on the terminal.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import tempfile
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path

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


_format: list[str] = ["text"]


def configure(fmt: str = "text", level: str = "INFO") -> None:
    """Send all logs to stderr in the chosen format."""
    _format[0] = fmt
    handler = logging.StreamHandler(sys.stderr)
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


def current_run_id() -> str:
    """The (short) run id bound to the records of this command, "-" when none."""
    return _run_id.get()


def error_log_dir() -> Path:
    """Where tracebacks of unexpected failures go: ``ERROR_LOG_DIR`` or the temp folder."""
    configured = os.environ.get("ERROR_LOG_DIR", "").strip()
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "mlops-errors"


def save_traceback(exc: BaseException, command: str) -> Path | None:
    """Write the traceback of ``exc`` to a new file; its path, or None if it cannot be written.

    In JSON format the traceback also goes into one log record (a pod's files vanish
    with it); at a terminal only the file's path is shown.
    """
    text = "".join(traceback.format_exception(exc))
    if _format[0] == "json":
        logging.getLogger("mlops").error("%s failed", command, exc_info=exc)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = error_log_dir()
    path = folder / f"mlops-{command or 'command'}-{stamp}-{os.getpid()}.log"
    header = (
        f"command: mlops {' '.join(sys.argv[1:])}\n"
        f"time: {datetime.now(UTC).isoformat()}\npid: {os.getpid()}\n"
        f"stage: {_stage.get()}\nrun: {_run_id.get()}\n\n"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(header + text)
    except OSError:
        return None
    return path
