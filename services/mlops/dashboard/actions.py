"""The dashboard's buttons: the same code as ``mlops models ...`` and ``mlops trading``.

:func:`perform` checks the token first (:mod:`mlops.dashboard.auth`), then calls
:mod:`mlops.model_admin` (promote, rollback, archive, pause, resume: each writes its
audit row), :func:`mlops.orchestration.retrain_model` (retrain) or the trading kill
switch. A refusal (no or wrong token, a ConfigError or ModelError of the action, an
unreachable registry) comes back as its one sentence, with nothing changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from mlops import model_admin
from mlops.context import Context
from mlops.dashboard.auth import Credentials, Refused, authorize, configured_token
from mlops.errors import MlopsError
from mlops.trading import switch

log = logging.getLogger(__name__)

# Button id -> (what the confirmation asks, whether it needs a model, a version).
ACTIONS: dict[str, tuple[str, bool, bool]] = {
    "promote": ("Promote {model} version {version} to {alias}", True, True),
    "rollback": ("Roll {model}'s {alias} back to the previous one", True, False),
    "archive": ("Archive {model} version {version}", True, True),
    "pause": ("Pause the scheduled training of {model}", True, False),
    "resume": ("Resume the scheduled training of {model}", True, False),
    "retrain": ("Retrain {model} now", True, False),
    "halt": ("Halt trading (no decision and no order until resumed)", False, False),
    "unhalt": ("Resume trading", False, False),
}


@dataclass(frozen=True)
class ActionRequest:
    """One button press and the form's fields."""

    action: str
    model: str = ""
    version: str = ""
    reason: str = ""
    force: bool = False
    who: str = ""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    sentence: str


def question(request: ActionRequest, alias: str) -> str:
    """What the confirmation dialog asks."""
    text, _, _ = ACTIONS[request.action]
    asked = text.format(model=request.model or "?", version=request.version or "?", alias=alias)
    forced = " even if it loses to the naive forecast (force)" if request.force else ""
    why = f" Reason: {request.reason.strip()}." if request.reason.strip() else ""
    return f"{asked}{forced if request.action == 'promote' else ''}?{why}"


def perform(ctx: Context, request: ActionRequest, credentials: Credentials) -> Outcome:
    """Authorize, check the fields, act; every refusal is an Outcome with its sentence."""
    try:
        user = authorize(configured_token(ctx.settings), credentials)
        actor = _actor(user or request.who)
        sentence = _act(ctx, request, actor)
    except Refused as exc:
        log.warning("Dashboard action %s refused: %s", request.action, exc)
        return Outcome(False, str(exc))
    except MlopsError as exc:
        log.warning("Dashboard action %s refused: %s", request.action, exc)
        return Outcome(False, str(exc))
    except SQLAlchemyError as exc:
        log.error("Dashboard action %s failed on the database: %s", request.action, exc)
        return Outcome(False, f"The action failed on the database: {type(exc).__name__}.")
    except Exception as exc:  # shown, not swallowed: the page says it, the log has it all
        log.exception("Dashboard action %s failed unexpectedly", request.action)
        return Outcome(
            False,
            f"The action failed unexpectedly ({type(exc).__name__}); the dashboard's log "
            "has the details.",
        )
    log.info("Dashboard action by %s: %s", actor, sentence)
    return Outcome(True, sentence)


def _actor(name: str) -> str:
    name = "".join(c for c in name.strip() if c.isprintable())[:100]
    return f"dashboard:{name}" if name else model_admin.default_actor("dashboard")


def _act(ctx: Context, request: ActionRequest, actor: str) -> str:
    if request.action not in ACTIONS:
        raise Refused(f"Unknown action {request.action!r}.")
    _, needs_model, needs_version = ACTIONS[request.action]
    name, version = request.model.strip(), request.version.strip()
    if needs_model and not name:
        raise Refused(f"Choose a model to {request.action}.")
    if needs_version and not version:
        raise Refused(f"Give the version to {request.action}.")
    reason = request.reason.strip()
    if request.action == "halt" or request.action == "unhalt":
        halted = request.action == "halt"
        state = switch.set_halted(ctx, halted, reason, actor=actor, at_broker=False)
        return _trading_sentence(state)
    if request.action == "retrain":
        return f"Retrain of {name}: {retrain(ctx, name, actor=actor, reason=reason)}"
    done = model_admin.perform(
        ctx.mlflow, ctx.engine, ctx.settings, request.action, name, version,
        reason=reason, actor=actor, force=request.force,
    )  # fmt: skip
    return f"Done: {done.sentence()}"


def retrain(ctx: Context, name: str, *, actor: str, reason: str = "") -> str:
    """Retrain ``name`` now, as ``mlops models retrain NAME`` does (in the cluster: the
    training Job; on one machine: the training itself, in this request); its sentence.
    """
    from mlops import orchestration

    return orchestration.retrain_model(ctx, name, actor=actor, reason=reason).sentence()


def _trading_sentence(state: dict[str, Any]) -> str:
    if state["halted"] and not state["database_flag"]:
        return "Trading resumed in the database, but TRADING_HALTED=true still halts it."
    return str(state.get("message") or ("Trading is halted." if state["halted"] else "Resumed."))
