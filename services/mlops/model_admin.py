"""Model management: promote, roll back, archive, pause and resume registered models.

One implementation for ``mlops models`` and the dashboard's buttons. Every action holds
the model's lock (:func:`mlops.db.locks.model_lock`, the one training's promotion gate
holds too) while it reads the registry, checks (one sentence and
:class:`~mlops.errors.ConfigError` or :class:`~mlops.errors.ModelError` when refused),
changes the MLflow registry and writes one row to the audit table ``model_actions`` (who,
what, when, why; a refusal is a row too, ``outcome`` refused): two actions sent at once
run one after the other, the second deciding on what the first left. The registry
conventions (aliases, tags, the champion stack) are those of :mod:`mlops.contracts.models`.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, insert

from mlops import alerts
from mlops.contracts import live_figures
from mlops.contracts.models import (
    ARCHIVED,
    CHALLENGER_ALIAS,
    CHAMPION_STACK_TAG,
    PAUSED_TAG,
    PROMOTED,
    PROMOTED_BY_TAG,
    PROMOTION_DECISION_TAG,
    PROMOTION_METRIC_TAG,
    PROMOTION_REASON_TAG,
    PROMOTION_TAG,
    ROLLED_BACK,
    STATUS_TAG,
    ModelRef,
    champion,
    champion_stack,
    is_archived,
    move_champion,
    registered_tags,
    version_ref,
)
from mlops.db.locks import model_lock
from mlops.db.schema import model_actions
from mlops.errors import AlreadyRunning, ConfigError, ModelError
from mlops.runs import utcnow

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops.settings import Settings

log = logging.getLogger(__name__)


DONE, REFUSED = "done", "refused"
# The refusals an action's own checks raise (a setting, a state, a model that loses);
# an unreachable server is a failure, not a refusal.
REFUSALS = (ConfigError, ModelError, AlreadyRunning)


@dataclass(frozen=True)
class Action:
    """What an action did, as recorded in ``model_actions``."""

    action: str
    model_name: str
    model_version: str | None
    actor: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = DONE

    def sentence(self) -> str:
        version = f" version {self.model_version}" if self.model_version else ""
        against = f" ({self.details['comparison']})" if self.details.get("comparison") else ""
        return f"{self.action} {self.model_name}{version}: {self.reason}{against}"


def default_actor(channel: str = "cli") -> str:
    """``cli:<login>``: who ran the command, as far as the process can tell."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{channel}:{user}"


def signed_in_actor(
    engine: Engine,
    settings: Settings,
    action: str,
    name: str,
    version: str = "",
    *,
    ask_password: Callable[[], str] | None = None,
) -> str:
    """Who runs ``mlops models ACTION``: with named users (``DASHBOARD_USERS``), the user
    ``MLOPS_USER`` signed in with ``MLOPS_PASSWORD`` (or ``ask_password()``), if their
    role may take the action (``cli:<name>``); without, ``cli:<login>`` (the database's
    and the registry's credentials are then the only gate). A refusal is audited, then
    raised as ConfigError (one sentence, exit 2).
    """
    from mlops import access

    users = access.directory(settings)
    if users.mode != "users":
        return default_actor("cli")
    user = (settings.mlops_user or "").strip()
    secret = settings.mlops_password
    password = secret.get_secret_value() if secret is not None else ""
    principal = None
    if not user:
        why = "Named users are configured (DASHBOARD_USERS): set MLOPS_USER to act."
    else:
        if not password and ask_password is not None:
            password = ask_password()
        principal = users.authenticate(user, password) if password else None
        why = (
            access.refusal(principal, action)
            if principal is not None
            else f"Refused: no password for user {user[:64]} or a wrong one (MLOPS_PASSWORD)."
        )
    if principal is not None and principal.may(action):
        return principal.actor("cli")
    actor = principal.actor("cli") if principal is not None else "cli:anonymous"
    details = {"claimed_user": user[:64]} if principal is None and user else {}
    record_refusal(engine, action, name, version, actor=actor, reason=why, details=details)
    error = ConfigError(why)
    error.audited = True
    raise error


def record(engine: Engine, action: Action) -> Action:
    """Append ``action`` to the audit table."""
    with engine.begin() as conn:
        conn.execute(
            insert(model_actions).values(
                created_at=utcnow(),
                actor=action.actor[:128],
                action=action.action,
                model_name=action.model_name,
                model_version=action.model_version,
                reason=action.reason,
                details=json.dumps(action.details, default=str, sort_keys=True),
                outcome=action.outcome,
            )
        )
    log.info("Model action %s: %s (by %s)", action.outcome, action.sentence(), action.actor)
    return action


def record_refusal(
    engine: Engine,
    action: str,
    name: str,
    version: str | None,
    *,
    actor: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Audit a refused action (who, what, the refusal's sentence). A database that cannot
    take the row is logged, never raised: the refusal itself still stands and is shown.
    """
    try:
        record(
            engine,
            Action(action[:32], name[:128], version or None, actor, reason, details or {}, REFUSED),
        )
    except Exception as exc:  # the caller reports the refusal; the log says the audit failed
        log.error("The refusal of %s %s could not be audited: %s", action, name, exc)


def audited(exc: BaseException) -> bool:
    """Whether ``exc`` is a refusal already in the audit table."""
    return bool(getattr(exc, "audited", False))


def _require_model(client: MlflowClient, name: str) -> dict[str, str]:
    tags = registered_tags(client, name)
    if tags is None:
        raise ConfigError(f"No registered model named {name!r}: train it first (mlops train).")
    return tags


def _require_version(client: MlflowClient, name: str, version: str) -> ModelRef:
    _require_model(client, name)
    ref = version_ref(client, name, version)
    if ref is None:
        raise ConfigError(f"Model {name!r} has no version {version}.")
    return ref


def holdout_figures(client: MlflowClient, ref: ModelRef) -> dict[str, float]:
    """The version's holdout figures and the naive forecast's on the same holdout, as its
    training run logged them (``holdout_mape``, ``baseline_holdout_mape``, p-values...).
    """
    try:
        metrics = dict(client.get_run(ref.run_id).data.metrics) if ref.run_id else {}
    except Exception as exc:  # the run was deleted: the version's own tags are all there is
        log.warning("Training run of %s v%s cannot be read: %s", ref.name, ref.version, exc)
        metrics = {}
    for tag, value in ref.tags.items():
        if tag.startswith(("holdout_", "dm_", "baseline_")) and tag not in metrics:
            try:
                metrics[tag] = float(value)
            except ValueError:
                continue
    return metrics


def promote(
    client: MlflowClient,
    engine: Engine,
    name: str,
    version: str,
    *,
    alias: str,
    reason: str,
    actor: str,
    force: bool = False,
    max_p_value: float | None = None,
) -> Action:
    """Move ``alias`` to ``version``. Refused for an archived version, and (unless
    ``force``) for one whose holdout MAPE does not beat the naive forecast's or, with
    ``max_p_value`` (``PROMOTION_MAX_P_VALUE``), whose Diebold-Mariano p-value against
    the naive forecast is missing or above it. The version's promotion tags say so
    (``promotion=promoted``, the reason, who).
    """
    if not reason.strip():
        raise ConfigError("A promotion needs a reason (--reason): it is kept in the registry.")
    with model_lock(engine, name):
        return _promote(client, engine, name, version, alias, reason, actor, force, max_p_value)


def _promote(
    client: MlflowClient,
    engine: Engine,
    name: str,
    version: str,
    alias: str,
    reason: str,
    actor: str,
    force: bool,
    max_p_value: float | None,
) -> Action:
    ref = _require_version(client, name, version)
    if is_archived(ref):
        raise ConfigError(f"Model {name} version {version} is archived; it cannot be promoted.")
    current = champion(client, name, alias)
    if current is not None and current.version == ref.version:
        raise ConfigError(f"Model {name} version {version} is already the {alias}.")
    figures = holdout_figures(client, ref)
    # The figure its gate compared: MAPE, or a direction classifier's log loss.
    metric = ref.tags.get(PROMOTION_METRIC_TAG) or "mape"
    mape, naive = figures.get(f"holdout_{metric}"), figures.get(f"baseline_holdout_{metric}")
    loses = mape is None or naive is None or not mape < naive
    if loses and not force:
        shown = "MAPE" if metric == "mape" else metric.replace("_", " ")
        why = (
            "has no holdout figures to compare with the naive forecast"
            if mape is None or naive is None
            else f"loses to the naive forecast on its holdout ({shown} {mape:.6f} vs {naive:.6f})"
        )
        raise ModelError(
            f"Model {name} version {version} {why}; not promoted (use --force to promote it "
            "anyway)."
        )
    live = live_figures.read(engine, [name]).get((name, ref.version))
    window = live.window if live else {}
    holdout_p, live_p = figures.get("dm_p_value_naive"), window.get("dm_p_naive")
    # The holdout's p-value decides, as in training's gate; the live window's is shown as
    # information (the smaller of two looks would double the chance of a false promotion).
    # A version without a holdout test is judged on its live window alone.
    p_value, decides = (holdout_p, "holdout") if holdout_p is not None else (live_p, "live")
    doubtful = max_p_value is not None and (p_value is None or not p_value <= max_p_value)
    comparison = _comparison(client, current, figures, live, decides)
    if doubtful and not force:
        raise ModelError(
            f"Model {name} version {version} is not significantly better than the naive "
            f"forecast ({comparison}; PROMOTION_MAX_P_VALUE {max_p_value}); not promoted (use "
            "--force to promote it anyway)."
        )
    forced = bool(force and (loses or doubtful))
    # The tags first: from the moment it serves, the version says why.
    _set_tags(
        client, name, ref.version,
        {
            PROMOTION_TAG: PROMOTED,
            PROMOTION_DECISION_TAG: f"manual{' forced' if forced else ''} promotion: {reason}",
            PROMOTION_REASON_TAG: reason,
            PROMOTED_BY_TAG: actor[:250],
        },
    )  # fmt: skip
    move_champion(client, name, alias, ref.version)
    details = {
        "previous": current.version if current else None,
        "forced": forced,
        "p_value_decides": decides if p_value is not None else None,
        "comparison": comparison,
        **{k: v for k, v in figures.items() if k.startswith(("holdout_", "baseline_", "dm_"))},
        **({"live": live.as_dict()} if live else {}),
    }
    return record(engine, Action("promote", name, ref.version, actor, reason, details))


def _comparison(
    client: MlflowClient,
    current: ModelRef | None,
    figures: dict[str, float],
    live: live_figures.LiveFigures | None,
    decides: str,
) -> str:
    """The candidate against the naive forecast and the current champion, with the
    p-values and which one decides: what a promotion's confirmation and output say.
    """
    mape, naive = figures.get("holdout_mape"), figures.get("baseline_holdout_mape")
    parts = [
        f"holdout MAPE {_figure(mape, True)} vs naive {_figure(naive, True)}, p "
        f"{_p(figures.get('dm_p_value_naive'))}{' decides' if decides == 'holdout' else ''}"
    ]
    if current is not None:
        theirs = holdout_figures(client, current).get("holdout_mape")
        parts.append(f"champion v{current.version} holdout MAPE {_figure(theirs, True)}")
    if live is not None and live.window:
        w = live.window
        parts.append(
            f"live {live.window_days}-session window to {live.window_date}: MAPE "
            f"{_figure(w.get('mape'), True)} vs naive {_figure(w.get('naive_mape'), True)}, "
            f"p {_p(w.get('dm_p_naive'))}"
            + (" decides" if decides == "live" else " (information only)")
        )
    return "; ".join(parts)


def _set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:5000])


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def rollback(
    client: MlflowClient, engine: Engine, name: str, *, alias: str, reason: str, actor: str
) -> Action:
    """Point ``alias`` back at the previous champion (the stack's one before the current,
    skipping archived versions); the stack's last entry is popped, the audit keeps all.
    The version rolled back from is tagged ``promotion=rolled_back`` (its promoted-by and
    reason tags cleared); the one rolled back to ``promotion=promoted`` if it was not.
    """
    with model_lock(engine, name):
        return _rollback(client, engine, name, alias, reason or "rollback", actor)


def _rollback(
    client: MlflowClient, engine: Engine, name: str, alias: str, reason: str, actor: str
) -> Action:
    _require_model(client, name)
    current = champion(client, name, alias)
    if current is None:
        raise ConfigError(f"Model {name!r} has no {alias}; there is nothing to roll back.")
    stack = champion_stack(client, name)
    while stack and stack[-1] == current.version:
        stack.pop()
    previous: ModelRef | None = None
    while stack:
        candidate = version_ref(client, name, stack[-1])
        if candidate is not None and not is_archived(candidate):
            previous = candidate
            break
        stack.pop()
    if previous is None:
        raise ConfigError(
            f"Model {name} has no earlier champion to roll back to (version {current.version} "
            "is the first, or every earlier one is archived)."
        )
    if previous.tags.get(PROMOTION_TAG) != PROMOTED:
        restored = f"restored by a rollback from version {current.version}: {reason}"
        _set_tags(
            client, name, previous.version,
            {PROMOTION_TAG: PROMOTED, PROMOTION_DECISION_TAG: restored},
        )  # fmt: skip
    client.set_registered_model_alias(name, alias, previous.version)
    client.set_registered_model_tag(name, CHAMPION_STACK_TAG, ",".join(stack))
    challenger = champion(client, name, CHALLENGER_ALIAS)
    if challenger is not None and challenger.version == previous.version:
        client.delete_registered_model_alias(name, CHALLENGER_ALIAS)
    back = f"rolled back to version {previous.version} by {actor}: {reason}"
    _set_tags(
        client, name, current.version, {PROMOTION_TAG: ROLLED_BACK, PROMOTION_DECISION_TAG: back}
    )
    for tag in (PROMOTED_BY_TAG, PROMOTION_REASON_TAG):
        if tag in current.tags:
            client.delete_model_version_tag(name, current.version, tag)
    details = {"from": current.version}
    return record(engine, Action("rollback", name, previous.version, actor, reason, details))


def archive(
    client: MlflowClient,
    engine: Engine,
    name: str,
    version: str,
    *,
    alias: str,
    reason: str,
    actor: str,
) -> Action:
    """Mark a version archived (never scored or promoted again); never the champion."""
    with model_lock(engine, name):
        ref = _require_version(client, name, version)
        current = champion(client, name, alias)
        if current is not None and current.version == ref.version:
            raise ConfigError(
                f"Model {name} version {version} is the {alias}; promote or roll back to "
                "another version before archiving it."
            )
        if is_archived(ref):
            raise ConfigError(f"Model {name} version {version} is already archived.")
        client.set_model_version_tag(name, ref.version, STATUS_TAG, ARCHIVED)
        challenger = champion(client, name, CHALLENGER_ALIAS)
        if challenger is not None and challenger.version == ref.version:
            client.delete_registered_model_alias(name, CHALLENGER_ALIAS)
        return record(engine, Action("archive", name, ref.version, actor, reason or "archived"))


def set_paused(
    client: MlflowClient, engine: Engine, name: str, paused: bool, *, reason: str, actor: str
) -> Action:
    """Pause (or resume) the model's scheduled training."""
    word = "pause" if paused else "resume"
    with model_lock(engine, name):
        tags = _require_model(client, name)
        already = tags.get(PAUSED_TAG) == "true"
        if already == paused:
            raise ConfigError(f"Model {name} is already {'paused' if paused else 'active'}.")
        if paused:
            client.set_registered_model_tag(name, PAUSED_TAG, "true")
        else:
            client.delete_registered_model_tag(name, PAUSED_TAG)
        return record(engine, Action(word, name, None, actor, reason or word))


# `mlops models list`: every version of every catalog model, with its figures.

# Holdout figures shown (run metrics, else version tags of the same names).
HOLDOUT_FIGURES = (
    "holdout_mape",
    "holdout_wmape",
    "baseline_holdout_mape",
    "dm_p_value_naive",
    "dm_p_value_champion",
    # A direction classifier's: log loss (its gate's metric), AUC, accuracy, the base rate's.
    "holdout_log_loss",
    "baseline_holdout_log_loss",
    "holdout_auc",
    "holdout_accuracy",
)


@dataclass(frozen=True)
class VersionRow:
    """One line of ``mlops models list``: a registered version (or a model never trained)."""

    name: str
    version: str | None
    status: str  # champion | challenger | archived | candidate | not trained
    paused: bool
    aliases: list[str]
    dataset_version: str | None
    train_window: str | None
    holdout: dict[str, float]
    # The latest session's and trailing window's live figures, each with its date and
    # window (mlops.contracts.live_figures.LiveFigures.as_dict); {} when never monitored.
    live: dict[str, Any]


# The registry actions by name, as `mlops models ACTION` and the dashboard's buttons say them.
REGISTRY_ACTIONS = ("promote", "rollback", "archive", "pause", "resume")
CHAMPION_MOVES = ("promote", "rollback")  # the ones that send an alert


def perform(
    client: MlflowClient,
    engine: Engine,
    settings: Settings,
    action: str,
    name: str,
    version: str = "",
    *,
    reason: str,
    actor: str,
    force: bool = False,
) -> Action:
    """One registry action with the settings' champion alias and promotion rule: the one
    entry ``mlops models`` and the dashboard share, so both refuse the same things. A
    refusal is audited (``outcome`` refused, its sentence as the reason), then raised.
    """
    try:
        done = _perform(client, engine, settings, action, name, version, reason, actor, force)
    except REFUSALS as exc:
        record_refusal(engine, action, name, version, actor=actor, reason=str(exc))
        exc.audited = True
        raise
    if done.action in CHAMPION_MOVES:  # a new champion trades tomorrow: someone should know
        alerts.send(
            settings,
            "promotion" if done.action == "promote" else "rollback",
            f"{name} version {done.model_version} is the new {settings.champion_alias} "
            f"({done.action} by {actor}: {done.reason})",
        )
    return done


def _perform(
    client: MlflowClient,
    engine: Engine,
    settings: Settings,
    action: str,
    name: str,
    version: str,
    reason: str,
    actor: str,
    force: bool,
) -> Action:
    alias = settings.champion_alias
    if action == "promote":
        return promote(
            client, engine, name, version, alias=alias, reason=reason, actor=actor,
            force=force, max_p_value=settings.promotion_max_p_value,
        )  # fmt: skip
    if action == "rollback":
        return rollback(client, engine, name, alias=alias, reason=reason, actor=actor)
    if action == "archive":
        return archive(client, engine, name, version, alias=alias, reason=reason, actor=actor)
    if action in ("pause", "resume"):
        return set_paused(client, engine, name, action == "pause", reason=reason, actor=actor)
    raise ConfigError(f"Unknown model action {action!r}; known: {', '.join(REGISTRY_ACTIONS)}.")


def version_status(aliases: list[str], tags: dict[str, str], alias: str) -> str:
    if alias in aliases:  # an archived champion is refused by batch-infer and serve: say so
        return "champion (archived)" if tags.get(STATUS_TAG) == ARCHIVED else "champion"
    if tags.get(STATUS_TAG) == ARCHIVED:
        return ARCHIVED
    if CHALLENGER_ALIAS in aliases:
        return "challenger"
    return "candidate"


def inventory(
    client: MlflowClient, engine: Engine, names: list[str], *, alias: str
) -> list[VersionRow]:
    """Every registered version of the models ``names`` (the catalog), newest first within
    a model; a model never trained is one row without a version.
    """
    live = live_figures.read(engine, names)
    rows: list[VersionRow] = []
    for name in names:
        model = _registered(client, name)
        paused = model is not None and dict(model.tags or {}).get(PAUSED_TAG) == "true"
        by_version: dict[str, list[str]] = {}
        for alias_name, version in dict(getattr(model, "aliases", None) or {}).items():
            by_version.setdefault(str(version), []).append(alias_name)
        versions = [] if model is None else _versions(client, name)
        if not versions:
            rows.append(VersionRow(name, None, "not trained", paused, [], None, None, {}, {}))
        for mv in versions:
            ref = ModelRef(name, str(mv.version), mv.run_id, dict(mv.tags))
            aliases = sorted(by_version.get(ref.version, []))
            lineage = ref.lineage
            figures = holdout_figures(client, ref)
            measured = live.get((name, ref.version))
            rows.append(
                VersionRow(
                    name=name,
                    version=ref.version,
                    status=version_status(aliases, ref.tags, alias),
                    paused=paused,
                    aliases=aliases,
                    dataset_version=lineage.dataset_version if lineage else None,
                    train_window=(
                        f"{lineage.train_start}..{lineage.train_end}"
                        if lineage and lineage.train_start
                        else None
                    ),
                    holdout={k: figures[k] for k in HOLDOUT_FIGURES if k in figures},
                    live=measured.as_dict() if measured else {},
                )
            )
    return rows


def _registered(client: MlflowClient, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    from mlops.contracts.models import MISSING_CODES

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in MISSING_CODES:
            return None
        raise ModelError(f"The MLflow registry could not be read: {exc.message}.") from None


def _versions(client: MlflowClient, name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}'", max_results=10000)
    except MlflowException as exc:
        raise ModelError(f"The MLflow registry could not be read: {exc.message}.") from None
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


def _figure(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.3%}" if percent else f"{value:.3f}"


def _live_cells(live: dict[str, float]) -> tuple[str, str]:
    """The LIVE MAPE and LIVE NAIVE cells: a direction classifier's log loss and the base
    rate's instead, marked ``LL``.
    """
    if "log_loss" in live:
        naive = live.get("naive_log_loss")
        return f"LL {live['log_loss']:.4f}", "-" if naive is None else f"LL {naive:.4f}"
    return _figure(live.get("mape"), True), _figure(live.get("naive_mape"), True)


def _holdout_cells(holdout: dict[str, float]) -> tuple[str, str]:
    """The HOLDOUT MAPE and NAIVE cells: a direction classifier's log loss and the base
    rate's instead, marked ``LL``.
    """
    if "holdout_log_loss" in holdout:
        mine, naive = holdout["holdout_log_loss"], holdout.get("baseline_holdout_log_loss")
        return f"LL {mine:.4f}", "-" if naive is None else f"LL {naive:.4f}"
    return _figure(holdout.get("holdout_mape"), True), _figure(
        holdout.get("baseline_holdout_mape"), True
    )


def table(rows: list[VersionRow]) -> str:
    """``rows`` as a plain text table, one line per version: the holdout, the latest
    session's own live figures (DAY) and the trailing window's (WINDOW, its length in
    sessions and its last day)."""
    header = (
        "MODEL",
        "VERSION",
        "STATUS",
        "SCHEDULE",
        "TRAINED ON",
        "DATASET",
        "HOLDOUT MAPE",
        "NAIVE",
        "P(NAIVE)",
        "P(CHAMPION)",
        "DAY",
        "DAY MAPE",
        "DAY NAIVE",
        "DAY IC",
        "WINDOW",
        "WINDOW MAPE",
        "WINDOW NAIVE",
        "WINDOW P(NAIVE)",
    )
    lines = [header]
    for r in rows:
        h = r.holdout
        day, window = r.live.get("session", {}), r.live.get("window", {})
        span = (
            f"{r.live['window_days']} to {r.live['window_date']}"
            if r.live.get("window_date")
            else "-"
        )
        lines.append(
            (
                r.name,
                r.version or "-",
                r.status,
                "paused" if r.paused else "active",
                r.train_window or "-",
                r.dataset_version or "-",
                *_holdout_cells(h),
                _figure(h.get("dm_p_value_naive")),
                _figure(h.get("dm_p_value_champion")),
                r.live.get("session_date") or "-",
                *_live_cells(day),
                _figure(day.get("ic")),
                span,
                *_live_cells(window),
                _figure(window.get("dm_p_naive")),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
