"""The kill switch: `mlops trading halt` / `resume`, a row each in ``trading_halts``.

``mlops trade`` checks it before deciding or sending anything; the setting
``TRADING_HALTED=true`` halts as well (for a cluster-wide stop through the ConfigMap).
"""

from __future__ import annotations

import logging
from typing import Any

from mlops.context import Context
from mlops.trading import book

log = logging.getLogger(__name__)


def set_halted(ctx: Context, halted: bool, reason: str = "") -> dict[str, Any]:
    """Halt or resume trading; returns the state in force afterwards."""
    book.set_halt(ctx.engine, halted, reason.strip())
    if halted:
        log.warning("Trading halted%s.", f": {reason}" if reason else "")
    else:
        log.info("Trading resumed%s.", f": {reason}" if reason else "")
    return status(ctx)


def status(ctx: Context) -> dict[str, Any]:
    halted, reason = book.halt_state(ctx.engine)
    return {
        "halted": halted or ctx.settings.trading_halted,
        "database_flag": halted,
        "reason": reason,
        "setting_TRADING_HALTED": ctx.settings.trading_halted,
    }
