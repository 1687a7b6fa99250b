"""Who may act: named users with roles, for the dashboard and ``mlops models``.

The users come from a Secret of password hashes, ``DASHBOARD_USERS`` (inline) or
``DASHBOARD_USERS_FILE`` (the Secret mounted as a file), one entry per line (or
separated by commas)::

    alice:admin:scrypt:32768:8:1$<salt>$<hex digest>
    bob:operator:scrypt:32768:8:1$<salt>$<hex digest>

or the same as a JSON object, ``{"alice": {"role": "admin", "hash": "scrypt:..."}}``.
A hash is werkzeug's format (``werkzeug.security``, the library Flask is built on:
``method$salt$hex``, by default ``scrypt:32768:8:1``, i.e. :func:`hashlib.scrypt` with
N=32768, r=8, p=1 over a 16-character salt); ``mlops users hash NAME --role ROLE`` makes
an entry from a password read on stdin. A password is checked in constant time, and an
unknown user costs the same as a known one (a dummy hash is checked).

Roles (:data:`ROLE_ACTIONS`): a **viewer** sees the page (and, with
``DASHBOARD_ANONYMOUS_VIEW=false``, is one of the few who may); an **operator** may also
promote, roll back, retrain, run monitoring now and create a model (``mlops models
create``), and sees the stages' error texts; an **admin** may do everything (archive,
delete, pause and resume training, halt and resume trading too).

The older single shared token, ``DASHBOARD_TOKEN``, still works: it signs in as the
admin named ``token`` (every action then audited as ``dashboard:token``); at least
:data:`MIN_TOKEN_LENGTH` characters. Moving to named users: add ``DASHBOARD_USERS`` to
the Secret, remove ``DASHBOARD_TOKEN``; both at once are refused at start.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from mlops.errors import ConfigError
from mlops.settings import PLACEHOLDER_SECRETS, Settings

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
# Every action the dashboard or `mlops models` can take, and who may take it.
ALL_ACTIONS = frozenset(
    {
        "promote",
        "rollback",
        "archive",
        "pause",
        "resume",
        "retrain",
        "monitor",
        "halt",
        "unhalt",
        "create",
        "delete",
    }
)
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"promote", "rollback", "retrain", "monitor", "create"}),
    "admin": ALL_ACTIONS,
}
# The roles that see the stages' error texts (they may hold hosts, paths, SQL).
ERROR_ROLES = frozenset({"operator", "admin"})
MIN_TOKEN_LENGTH = 16
MIN_PASSWORD_LENGTH = 12
TOKEN_USER = "token"
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_HASH_METHODS = ("scrypt", "pbkdf2")


@dataclass(frozen=True)
class Principal:
    """An authenticated user and their role."""

    name: str
    role: Role

    def actor(self, channel: str) -> str:
        """The audit's name for them: ``dashboard:alice``, ``cli:bob``."""
        return f"{channel}:{self.name}"

    def may(self, action: str) -> bool:
        return action in ROLE_ACTIONS[self.role]

    @property
    def sees_errors(self) -> bool:
        return self.role in ERROR_ROLES


@dataclass(frozen=True)
class Directory:
    """How callers authenticate: named users, the one shared token, or nobody (read-only)."""

    mode: Literal["users", "token", "none"]
    users: dict[str, tuple[Role, str]] = field(default_factory=dict)  # name -> (role, hash)
    token: str | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def authenticate(self, name: str, password: str) -> Principal | None:
        """The user ``name`` if ``password`` is theirs (the token in token mode, whatever
        the name); None otherwise. Constant time per check; unknown names cost the same.
        """
        from werkzeug.security import check_password_hash

        if self.mode == "token" and self.token is not None:
            if secrets.compare_digest(password.encode(), self.token.encode()):
                return Principal(TOKEN_USER, "admin")
            return None
        if self.mode != "users":
            return None
        role, pwhash = self.users.get(name, ("viewer", _dummy_hash()))
        if check_password_hash(pwhash, password) and name in self.users:
            return Principal(name, role)
        return None


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(secrets.token_hex(16))


def directory(settings: Settings) -> Directory:
    """The configured users or token; raises ConfigError (one sentence) for a setting that
    cannot be used: two sources at once, a placeholder, a short token, a bad entry.
    """
    inline = _secret(settings.dashboard_users)
    token = _secret(settings.dashboard_token)
    path = settings.dashboard_users_file
    given = [n for n, v in (("DASHBOARD_USERS", inline), ("DASHBOARD_TOKEN", token)) if v]
    if path is not None:
        given.append("DASHBOARD_USERS_FILE")
    if len(given) > 1:
        raise ConfigError(
            f"Set one of {' and '.join(given)}, not both: named users replace the shared "
            "token (remove DASHBOARD_TOKEN once DASHBOARD_USERS is in the Secret)."
        )
    if token:
        if token.lower() in PLACEHOLDER_SECRETS:
            raise ConfigError("Setting DASHBOARD_TOKEN is still the template's placeholder value.")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"Setting DASHBOARD_TOKEN has {len(token)} characters; it needs at least "
                f"{MIN_TOKEN_LENGTH} (e.g. openssl rand -hex 24)."
            )
        return Directory("token", token=token)
    if path is not None:
        try:
            inline = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"DASHBOARD_USERS_FILE {path} cannot be read ({exc.strerror or exc})."
            ) from None
        source = "DASHBOARD_USERS_FILE"
    else:
        source = "DASHBOARD_USERS"
    if not inline or not inline.strip():
        if path is not None:
            raise ConfigError(f"DASHBOARD_USERS_FILE {path} lists no user.")
        return Directory("none")
    if inline.strip().lower() in PLACEHOLDER_SECRETS:
        raise ConfigError(f"Setting {source} is still the template's placeholder value.")
    return Directory("users", users=parse_users(inline, source))


def _secret(value: object) -> str:
    from pydantic import SecretStr

    return value.get_secret_value().strip() if isinstance(value, SecretStr) else ""


def parse_users(text: str, source: str = "DASHBOARD_USERS") -> dict[str, tuple[Role, str]]:
    """``name:role:hash`` entries (lines or commas) or a JSON object, checked."""
    text = text.strip()
    entries: list[tuple[str, str, str]] = []
    if text.startswith("{"):
        try:
            found = json.loads(text)
            entries = [(n, str(v["role"]), str(v["hash"])) for n, v in found.items()]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ConfigError(
                f"{source} is not a JSON object of {{name: {{role, hash}}}}."
            ) from None
    else:
        for number, entry in enumerate(re.split(r"[\n,]", text), start=1):
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            parts = entry.split(":", 2)
            if len(parts) != 3:
                raise ConfigError(f"{source} entry {number} is not name:role:hash.")
            entries.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
    users: dict[str, tuple[Role, str]] = {}
    for name, role, pwhash in entries:
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{source} has a user name that is not 1 to 64 letters, digits or ._@-."
            )
        if role not in ROLES:
            raise ConfigError(
                f"{source} gives user {name} the role {role!r}; roles: {', '.join(ROLES)}."
            )
        if not pwhash.startswith(_HASH_METHODS) or pwhash.count("$") != 2:
            raise ConfigError(
                f"{source} holds no password hash for user {name} (want werkzeug's "
                "scrypt:N:r:p$salt$hex, as `mlops users hash` makes)."
            )
        if name in users:
            raise ConfigError(f"{source} lists user {name} twice.")
        users[name] = (role, pwhash)
    if not users:
        raise ConfigError(f"{source} lists no user.")
    return users


def hash_entry(name: str, role: str, password: str) -> str:
    """The ``name:role:hash`` entry for a user (``mlops users hash``)."""
    from werkzeug.security import generate_password_hash

    if not _NAME.fullmatch(name):
        raise ConfigError("A user name is 1 to 64 letters, digits or ._@-.")
    if role not in ROLES:
        raise ConfigError(f"Unknown role {role!r}; roles: {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            f"The password has {len(password)} characters; it needs at least {MIN_PASSWORD_LENGTH}."
        )
    return f"{name}:{role}:{generate_password_hash(password)}"


def refusal(principal: Principal, action: str) -> str:
    """Why ``principal`` may not take ``action`` (one sentence)."""
    allowed = [r for r in ROLES if action in ROLE_ACTIONS[r]]
    return (
        f"Refused: {principal.name} is a{'n' if principal.role[0] in 'aeiou' else ''} "
        f"{principal.role}; {action} needs the role {' or '.join(allowed)}; nothing was changed."
    )
