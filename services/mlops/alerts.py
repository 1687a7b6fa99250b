"""Alerts that reach a person: a Slack-compatible webhook (``ALERT_WEBHOOK_URL``).

One JSON POST ``{"text": "[mlops] <event>: <sentence>"}`` per event (Slack's incoming
webhooks, and Mattermost's, Rocket.Chat's and Discord's ``/slack`` ones, take it as is):
a stage ending non-zero (orders not placed among them), a halt and a resume, the
differences reconciliation finds, a retrain request, a promotion by the training stage.

Bounded: each attempt waits at most ``ALERT_TIMEOUT_SECONDS`` for the receiver; a
timeout, a dropped connection, HTTP 429 or 5xx is retried (tenacity) up to
``ALERT_MAX_ATTEMPTS`` attempts in all, waiting 0.5 s, 1 s, ... in between; any other
answer is final. Never failing: :func:`send` returns whether the alert was delivered and
raises nothing, so an alert never changes a stage's outcome; an undelivered one is a
warning in the log. The URL is a secret (Slack's carries its token in its path): it is a
``SecretStr`` setting, and the log shows only its scheme and host.

Recorded: every alert sent or attempted is a row of ``alerts`` (when, its kind, its text,
whether the receiver took it, and if not why), which the dashboard lists. The record is
as bounded and as harmless as the POST: its own short-lived connection (5 s limits on
Postgres), and a database that cannot take it is a warning, never the caller's failure. Without
``ALERT_WEBHOOK_URL`` nothing is sent and nothing recorded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from mlops.settings import Settings

log = logging.getLogger(__name__)
FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 4.0
MAX_TEXT = 3000  # Slack shows up to 40,000 characters; an alert is one sentence
RECORD_SECONDS = 5  # the most recording an alert may wait for the database
# The kind of a stage that ended with exit 12 (mlops.errors.ORDERS_NOT_PLACED_EXIT_CODE).
ORDERS_NOT_PLACED = "orders not placed"


class _Transient(Exception):
    """An answer worth asking again: HTTP 429 or 5xx."""


def send(settings: Settings, event: str, text: str) -> bool:
    """Post one alert; True when the receiver took it. Without ``ALERT_WEBHOOK_URL``:
    nothing, False."""
    if settings.alert_webhook_url is None:
        return False
    sentence = " ".join(text.split())
    delivered, why = _deliver(settings, event, sentence)
    record(settings, event, sentence, delivered, why)
    return delivered


def _deliver(settings: Settings, event: str, sentence: str) -> tuple[bool, str | None]:
    """POST the alert, retried; whether it was delivered, and if not why (redacted)."""
    assert settings.alert_webhook_url is not None
    url = settings.alert_webhook_url.get_secret_value()
    payload = {"text": f"[mlops] {event}: {sentence}"[:MAX_TEXT]}
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(settings.alert_max_attempts),
            wait=wait_exponential(multiplier=FIRST_WAIT_SECONDS, max=MAX_WAIT_SECONDS),
            retry=retry_if_exception_type((_Transient, requests.ConnectionError, requests.Timeout)),
            reraise=True,
        ):
            with attempt:
                _post(url, payload, settings.alert_timeout_seconds)
    except Exception as exc:  # never fails the caller: an alert is not the stage's work
        why = (
            f"no answer within ALERT_TIMEOUT_SECONDS={settings.alert_timeout_seconds:g} s"
            if isinstance(exc, requests.Timeout)
            else redact(_first_line(exc), url)
        )
        log.warning(
            "Alert %r not delivered to %s (%s; %d attempts at most); the command goes on.",
            event,
            where(url),
            why,
            settings.alert_max_attempts,
        )
        return False, why
    return True, None


def record(
    settings: Settings, kind: str, text: str, delivered: bool, why: str | None = None
) -> bool:
    """Keep the alert in ``alerts``; False (and a warning) when the database cannot take
    it (down, not migrated, a role without the grant): never raises."""
    from mlops.db.engine import make_engine, reason
    from mlops.db.schema import alerts

    row = {
        "created_at": datetime.now(UTC),
        "kind": kind[:64],
        "text": text[:MAX_TEXT],
        "delivered": delivered,
        "detail": None if delivered else (why or "not delivered"),
    }
    try:
        engine = make_engine(
            settings.db_url, connect_timeout=RECORD_SECONDS, statement_timeout=RECORD_SECONDS
        )
        try:
            with engine.begin() as conn:
                conn.execute(alerts.insert().values(**row))
        finally:
            engine.dispose()
    except Exception as exc:  # the alert went (or not) already; its record is a bonus
        log.warning("Alert %r not recorded in the database (%s).", kind, reason(exc))
        return False
    return True


def is_failure(kind: str) -> bool:
    """An alert about a failed command, whose text is the command's error sentence."""
    return kind.endswith(" failed") or kind == ORDERS_NOT_PLACED


def _post(url: str, payload: dict[str, str], timeout: float) -> None:
    response = requests.post(url, json=payload, timeout=timeout, allow_redirects=False)
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Transient(f"HTTP {status}")
    if status >= 300:
        raise RuntimeError(f"HTTP {status}: {response.text.strip()[:200]}")


def where(url: str) -> str:
    """The webhook as the log may show it: scheme and host, never the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or '?'}://{host}{port}/[redacted]"


def redact(text: str, url: str) -> str:
    """``text`` without the webhook's URL, path or query (a library's message may hold them)."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.password or ""):
        if secret and secret != "/":
            text = text.replace(secret, "/[redacted]")
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300] or type(exc).__name__
