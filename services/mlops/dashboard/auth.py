"""Who may act: every action needs the token of the setting ``DASHBOARD_TOKEN``.

The token is checked on the server, in the callback that performs the action, with a
constant-time comparison. It may come from the page's token field, an
``Authorization: Bearer <token>`` header, or HTTP basic auth (any user name, the token as
password; the user name then names the actor in the audit table). Without a configured
token every action is refused: the dashboard is read-only.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from mlops.errors import ConfigError
from mlops.settings import PLACEHOLDER_SECRETS, Settings

NO_TOKEN = (
    "Actions are disabled: the dashboard has no DASHBOARD_TOKEN (set it from the Secret "
    "to enable promote, rollback, archive, pause, resume, retrain and the kill switch)."
)
WRONG_TOKEN = "Refused: the dashboard token is missing or wrong; nothing was changed."


class Refused(Exception):
    """An action the caller may not take; its message is the sentence to show."""


def configured_token(settings: Settings) -> str | None:
    """The token actions need; None when unset or blank (read-only dashboard).

    Raises ConfigError for the template's placeholder value.
    """
    secret = settings.dashboard_token
    value = secret.get_secret_value().strip() if secret is not None else ""
    if not value:
        return None
    if value.lower() in PLACEHOLDER_SECRETS:
        raise ConfigError("Setting DASHBOARD_TOKEN is still the template's placeholder value.")
    return value


@dataclass(frozen=True)
class Credentials:
    """What a request presented: the token field and the Authorization header."""

    field_token: str = ""
    authorization: str = ""

    @classmethod
    def from_headers(cls, field_token: str | None, headers: Mapping[str, str]) -> Credentials:
        return cls(field_token or "", headers.get("Authorization", "") or "")

    def candidates(self) -> list[tuple[str, str]]:
        """(token, user name) pairs presented; the user name may be empty."""
        found = []
        if self.field_token.strip():
            found.append((self.field_token.strip(), ""))
        scheme, _, value = self.authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            found.append((value.strip(), ""))
        elif scheme.lower() == "basic" and value.strip():
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, sep, password = decoded.partition(":")
            if sep and password:
                found.append((password, user))
        return found


def authorize(expected: str | None, credentials: Credentials) -> str:
    """The authenticated user name ('' when anonymous but holding the token); raises
    :class:`Refused` when no token is configured or none presented matches it.
    """
    if expected is None:
        raise Refused(NO_TOKEN)
    want = expected.encode()
    matched = None
    for token, user in credentials.candidates():
        # Every candidate is compared (constant time each), whichever matches.
        if secrets.compare_digest(token.encode(), want) and matched is None:
            matched = user
    if matched is None:
        raise Refused(WRONG_TOKEN)
    return matched
