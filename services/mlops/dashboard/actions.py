"""The dashboard's buttons: the same code as ``mlops models ...`` and ``mlops trading``.

:func:`perform` checks, in this order, that the dashboard has users, that the request
comes from the dashboard's own page (its Origin), who signs in
(:mod:`mlops.dashboard.auth`: throttled per client) and that their role may take the
action (:mod:`mlops.access`); then it calls :mod:`mlops.model_admin` (promote, rollback,
archive, pause, resume: each writes its audit row), :func:`mlops.orchestration.request_work`
(retrain, run monitoring now: a request row the dashboard answers at once; a background
process on one machine or the cluster's controller does the work, and the page's
"Requests" section shows how it goes), :mod:`mlops.model_catalog` (create a model from a
Ludwig YAML, delete a version or a model) or the trading kill switch. The dashboard itself
starts no pod and no training in its request. The actor in the audit is the signed-in user
(``dashboard:<name>``). Every refusal (no users, another site, no or wrong credentials, a
throttled client, a role that may not, a ConfigError or ModelError of the action) comes
back as its one sentence and HTTP status, with nothing changed, and is written to the
audit table as ``refused`` (a throttled client's attempts once per lockout).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from mlops import access, model_admin, model_catalog
from mlops.context import Context
from mlops.dashboard.auth import (
    BAD_ORIGIN,
    NO_CREDENTIALS,
    NO_USERS,
    Credentials,
    Gate,
    Refused,
    origin_allowed,
)
from mlops.errors import MlopsError
from mlops.trading import switch

log = logging.getLogger(__name__)
ANONYMOUS = "dashboard:anonymous"

# Button id -> (what the confirmation asks, whether it needs a model, a version).
ACTIONS: dict[str, tuple[str, bool, bool]] = {
    "promote": ("Promote {model} version {version} to {alias}", True, True),
    "rollback": ("Roll {model}'s {alias} back to the previous one", True, False),
    "archive": ("Archive {model} version {version}", True, True),
    "pause": ("Pause the scheduled training of {model}", True, False),
    "resume": ("Resume the scheduled training of {model}", True, False),
    "retrain": ("Retrain {model} now", True, False),
    "monitor": ("Run monitoring now (score, drift, retrain triggers)", False, False),
    "halt": ("Halt trading of {strategy} (no decision and no order until resumed)", False, False),
    "unhalt": ("Resume trading of {strategy}", False, False),
    "create": (
        "Create model {model} from the config in the box (checked, then stored in the catalog; "
        "train it with Retrain now)",
        True,
        False,
    ),
    # The version is optional: without one, the whole model.
    "delete": ("Delete {what}; this cannot be undone (the audit keeps its rows)", True, False),
}


@dataclass(frozen=True)
class ActionRequest:
    """One button press and the form's fields."""

    action: str
    model: str = ""
    version: str = ""
    reason: str = ""
    force: bool = False
    config: str = ""  # create: the model's Ludwig YAML
    strategy: str = ""  # halt, unhalt: one strategy (empty: every strategy)


@dataclass(frozen=True)
class Caller:
    """Who sent the request and from where: their credentials, their address (the
    throttle's key), the Origin header and the Host it was sent to."""

    credentials: Credentials
    client: str = ""
    origin: str = ""
    host: str = ""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    sentence: str
    status: int = 200
    retry_after: int = 0


def question(request: ActionRequest, alias: str) -> str:
    """What the confirmation dialog asks."""
    text, _, _ = ACTIONS[request.action]
    model, version = request.model or "?", request.version.strip()
    what = f"{model} version {version}" if version else f"the whole model {model} (every version)"
    strategy = request.strategy.strip()
    whose = f"strategy {strategy}" if strategy else "every strategy"
    asked = text.format(model=model, version=version or "?", alias=alias, what=what, strategy=whose)
    forced = " even if it loses to the naive forecast (force)" if request.force else ""
    why = f" Reason: {request.reason.strip()}." if request.reason.strip() else ""
    return f"{asked}{forced if request.action == 'promote' else ''}?{why}"


def perform(ctx: Context, gate: Gate, request: ActionRequest, caller: Caller) -> Outcome:
    """Authorize, check the fields, act; every refusal is an audited Outcome with its
    sentence and HTTP status."""
    actor = ANONYMOUS
    try:
        principal = _sign_in(ctx, gate, caller)
        actor = principal.actor("dashboard")
        if request.action not in ACTIONS:
            raise Refused(f"Unknown action {request.action[:32]!r}.", 400)
        if not principal.may(request.action):
            raise Refused(access.refusal(principal, request.action), 403)
        sentence = _act(ctx, request, actor)
    except Refused as exc:
        log.warning("Dashboard action %s by %s refused: %s", request.action, actor, exc)
        if exc.audit:
            audit_refusal(ctx, request, str(exc), caller, actor)
        return Outcome(False, str(exc), exc.status, exc.retry_after)
    except MlopsError as exc:
        log.warning("Dashboard action %s by %s refused: %s", request.action, actor, exc)
        if isinstance(exc, model_admin.REFUSALS) and not model_admin.audited(exc):
            audit_refusal(ctx, request, str(exc), caller, actor)
        return Outcome(False, str(exc), 409 if isinstance(exc, model_admin.REFUSALS) else 503)
    except SQLAlchemyError as exc:
        log.error("Dashboard action %s failed on the database: %s", request.action, exc)
        return Outcome(False, f"The action failed on the database: {type(exc).__name__}.", 503)
    except Exception as exc:  # shown, not swallowed: the page says it, the log has it all
        log.exception("Dashboard action %s failed unexpectedly", request.action)
        return Outcome(
            False,
            f"The action failed unexpectedly ({type(exc).__name__}); the dashboard's log "
            "has the details.",
            500,
        )
    log.info("Dashboard action by %s: %s", actor, sentence)
    return Outcome(True, sentence)


def _sign_in(ctx: Context, gate: Gate, caller: Caller) -> access.Principal:
    if not gate.enabled:
        raise Refused(NO_USERS, 403)
    if not origin_allowed(caller.origin, caller.host, ctx.settings.dashboard_allowed_origins):
        raise Refused(BAD_ORIGIN.format(origin=caller.origin[:100]), 403)
    principal = gate.sign_in(caller.credentials, caller.client)
    if principal is None:
        raise Refused(NO_CREDENTIALS, 401)
    return principal


def audit_refusal(
    ctx: Context, request: ActionRequest, sentence: str, caller: Caller, actor: str = ANONYMOUS
) -> None:
    """Write a refusal to the audit table: who (the signed-in user, else anonymous with
    the name they claimed), what, the sentence, the client's address."""
    details: dict[str, Any] = {"client": caller.client}
    if actor == ANONYMOUS and caller.credentials.claimed_user():
        details["claimed_user"] = caller.credentials.claimed_user()
    _, needs_model, needs_version = ACTIONS.get(request.action, ("", True, True))
    model_admin.record_refusal(
        ctx.engine,
        request.action or "-",
        request.model.strip() if needs_model else "",
        request.version.strip() if needs_version or request.action == "delete" else "",
        actor=actor,
        reason=sentence,
        details=details,
    )


def _act(ctx: Context, request: ActionRequest, actor: str) -> str:
    _, needs_model, needs_version = ACTIONS[request.action]
    name, version = request.model.strip(), request.version.strip()
    if needs_model and not name:
        raise Refused(f"Choose a model to {request.action}.", 400)
    if needs_version and not version:
        raise Refused(f"Give the version to {request.action}.", 400)
    reason = request.reason.strip()
    if request.action == "halt" or request.action == "unhalt":
        halted = request.action == "halt"
        state = switch.set_halted(
            ctx,
            halted,
            reason,
            actor=actor,
            at_broker=False,
            strategy=request.strategy.strip() or None,
        )
        return _trading_sentence(state)
    if request.action in ("retrain", "monitor"):
        return requested(ctx, request.action, name if needs_model else None, actor, reason)
    if request.action == "create":
        created = model_catalog.create(
            ctx.engine, ctx.store, ctx.settings, name, request.config,
            reason=reason, actor=actor, client=ctx.mlflow,
        )  # fmt: skip
        return f"Done: {created.sentence()}"
    if request.action == "delete":
        deleted = model_catalog.delete(
            ctx.mlflow, ctx.engine, ctx.store, ctx.settings, name, version,
            reason=reason, actor=actor,
        )  # fmt: skip
        return f"Done: {deleted.sentence()}"
    done = model_admin.perform(
        ctx.mlflow, ctx.engine, ctx.settings, request.action, name, version,
        reason=reason, actor=actor, force=request.force,
    )  # fmt: skip
    return f"Done: {done.sentence()}"


def requested(ctx: Context, kind: str, name: str | None, actor: str, reason: str) -> str:
    """Record the request (and, on one machine, start its background runner); its
    sentence. A duplicate of an open request is refused (409) with its sentence."""
    from mlops import orchestration

    request = orchestration.request_work(ctx, kind, name, actor=actor, reason=reason)
    where = (
        "it runs in the background"
        if request.runner == "local"
        else "the controller starts its Job within a minute"
    )
    return f"Queued request {request.id} to {request.what()}: {where}; see Requests below."


def _trading_sentence(state: dict[str, Any]) -> str:
    if state["halted"] and not state["database_flag"]:
        return "Trading resumed in the database, but TRADING_HALTED=true still halts it."
    return str(state.get("message") or ("Trading is halted." if state["halted"] else "Resumed."))
