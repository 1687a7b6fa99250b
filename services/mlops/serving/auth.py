"""The bearer token: with ``SERVE_API_TOKEN`` set, the guarded endpoints want
``Authorization: Bearer <token>`` (``/predict``, ``/batch_predict``, ``/model``,
``/metrics``); the probes stay open for the kubelet."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from mlops.errors import ConfigError
from mlops.serving.api_errors import ApiError
from mlops.settings import PLACEHOLDER_SECRETS, Settings


def api_token(settings: Settings) -> str | None:
    """The token the API wants, None when there is none (unset or blank).

    Raises ConfigError for the template's placeholder value.
    """
    return _token(settings.serve_api_token, "SERVE_API_TOKEN")


def admin_token(settings: Settings) -> str | None:
    """The token ``POST /admin/reload`` wants (``SERVE_ADMIN_TOKEN``), None when unset."""
    return _token(settings.serve_admin_token, "SERVE_ADMIN_TOKEN")


def _token(secret: SecretStr | None, setting: str) -> str | None:
    value = secret.get_secret_value().strip() if secret is not None else ""
    if not value:
        return None
    if value.lower() in PLACEHOLDER_SECRETS:
        raise ConfigError(f"Setting {setting} is still the template's placeholder value.")
    return value


def bearer_guard(
    token: str | None, *, setting: str = "SERVE_API_TOKEN", required: bool = False
) -> Callable[..., None]:
    """A FastAPI dependency refusing (401) a request without ``token``; with no token,
    none (or, ``required``, a 403 saying the endpoint is off until ``setting`` is set).
    """
    bearer = HTTPBearer(auto_error=False, description=f"{setting}, when it is set.")
    expected = token.encode() if token is not None else b""

    # (The dependency is a default: an annotation naming ``bearer`` could not be resolved.)
    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if token is None:
            if required:
                raise ApiError(403, f"this endpoint is disabled: set {setting} to use it")
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not secrets.compare_digest(given, expected):
            raise ApiError(401, "a valid bearer token is required")

    return authorize


def token_check(token: str | None) -> Callable[[Request], bool]:
    """Whether a request carries ``token`` (never, when there is none): such a request
    may see error details that public answers leave out."""
    expected = f"Bearer {token}".encode() if token is not None else b""

    def carries_token(request: Request) -> bool:
        if token is None:
            return False
        given = request.headers.get("authorization", "").strip().encode()
        return secrets.compare_digest(given, expected)

    return carries_token
