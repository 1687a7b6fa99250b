"""Errors that end a command with one clear sentence and a non-zero exit.

Every failure has a class and each class its exit code, so an operator (or a Kubernetes
Job's status) can tell "fix a setting" from "the database is down" without reading logs:

====  =====================  =====================================================
exit  class                  meaning
====  =====================  =====================================================
1     (unexpected)           a bug or an unforeseen failure; the traceback is saved
2     ConfigError            a setting, option or credential is missing or wrong
3     DataError              input data is unreadable, malformed, missing or stale
4     ModelError             a model cannot be trained, found, registered or loaded
5     BrokerError            the broker refused or failed an order, or (with
                             RECONCILE_STRICT) its account holds what the book
                             cannot explain
6     DatabaseError          the database is unreachable, not answering or not ready
7     StoreError             the object store is unreachable or failed
8     TrackingError          the MLflow tracking server is unreachable or failed
9     DiskFullError          no space left on a device
10    PermissionDeniedError  permission denied, or a read-only file system
11    AlreadyRunning         another run of the same stage and day holds the lease, or
                             another action on the model held its lock too long
130   Terminated (SIGINT)    interrupted with Ctrl-C
143   Terminated (SIGTERM)   terminated (Kubernetes deadline, eviction, ``kill``)
====  =====================  =====================================================

:func:`classify` turns the raw exceptions of the libraries underneath (SQLAlchemy,
botocore, MLflow, ``OSError``) into these classes; it imports none of them.
"""

from __future__ import annotations

import errno
import re
import signal
from urllib.parse import unquote


class MlopsError(Exception):
    """A failure the user can act on; its message is one sentence."""

    exit_code = 1
    # Whether the refusal this error says is already in the audit table (model_actions).
    audited = False

    def __init__(self, message: str) -> None:
        from mlops.web_safety import redact_credentials

        # Library messages often end with their own period: keep one.
        # One sentence on one line, whatever a library put into it, and no password of a
        # URI in it (it reaches stderr, stage_runs.error and the dashboard).
        message = redact_credentials(" ".join(str(message).split()))
        while message.endswith(".."):
            message = message[:-1]
        super().__init__(message)


class ConfigError(MlopsError):
    """A setting or option is missing or wrong."""

    exit_code = 2


class DataError(MlopsError):
    """Input data is unreadable, malformed or fails the quality gate."""

    exit_code = 3


class ModelError(MlopsError):
    """A model cannot be trained, found or loaded."""

    exit_code = 4


class BrokerError(MlopsError):
    """The broker refused or failed an order."""

    exit_code = 5


class InfrastructureError(MlopsError):
    """Something the command depends on is unreachable or failing (not the input)."""

    exit_code = 6


class DatabaseError(InfrastructureError):
    """The database cannot be reached, stopped answering or is not ready."""

    exit_code = 6


class StoreError(InfrastructureError):
    """The object store could not be read or written."""

    exit_code = 7


class TrackingError(InfrastructureError):
    """The MLflow tracking server cannot be reached or failed."""

    exit_code = 8


class DiskFullError(InfrastructureError):
    """No space left on a device."""

    exit_code = 9


class PermissionDeniedError(InfrastructureError):
    """Permission denied, or a read-only file system."""

    exit_code = 10


class AlreadyRunning(MlopsError):
    """Another run of the same stage and day holds the lease (or another action on the
    same model held its registry lock past the wait)."""

    exit_code = 11


class Terminated(BaseException):
    """The process was asked to stop by a signal (SIGTERM, SIGINT).

    A ``BaseException``, like ``KeyboardInterrupt``: ``except Exception`` blocks let it
    through, so the stage unwinds, records ``failed: terminated`` and closes its MLflow run.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"terminated by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# Raised by the trading stage (mlops.trading.broker.OrdersNotPlacedError).
ORDERS_NOT_PLACED_EXIT_CODE = 12

EXIT_CODES: dict[int, str] = {
    1: "unexpected failure (a bug); the traceback is saved to a file",
    ConfigError.exit_code: "configuration: a setting, option or credential",
    DataError.exit_code: "data: input missing, malformed, stale or refused by the quality gate",
    ModelError.exit_code: "model or registry: cannot train, find, register or load a model",
    BrokerError.exit_code: "broker: an order was refused or failed, or (RECONCILE_STRICT) the "
    "account holds what the book cannot explain",
    DatabaseError.exit_code: "database unreachable, not answering or schema not current",
    StoreError.exit_code: "object store unreachable or failing",
    TrackingError.exit_code: "MLflow tracking server unreachable or failing",
    DiskFullError.exit_code: "disk full",
    PermissionDeniedError.exit_code: "permission denied or read-only file system",
    AlreadyRunning.exit_code: "the same stage and day, or an action on the same model, is "
    "already running elsewhere",
    ORDERS_NOT_PLACED_EXIT_CODE: "trade: an order the strategy decided could not be placed",
    130: "interrupted (SIGINT, Ctrl-C)",
    143: "terminated (SIGTERM)",
}

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def _names(exc: BaseException) -> set[str]:
    """Fully qualified names of the exception's classes (no import needed to test them)."""
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}


def clause(text: str, limit: int = 200) -> str:
    """The first line of ``text``, cut to at most ``limit`` characters between clauses (or
    words) with an ellipsis, never inside a word: what a sentence quotes of a library."""
    lines = str(text).strip().splitlines()
    line = " ".join(lines[0].split()) if lines else ""
    if len(line) <= limit:
        return line
    head = line[: limit - 1]
    for separator in ("; ", ": ", " (", ", "):
        cut = head.rfind(separator)
        if cut >= limit // 3:
            return head[:cut].rstrip(" ,;:(") + "…"
    cut = head.rfind(" ")
    return (head[:cut] if cut > 0 else head).rstrip(" ,;:(") + "…"


# What a network failure's text says, in a few words (checked in this order).
_NETWORK_REASONS = (
    ("Connection refused", "connection refused"),
    ("Connection reset", "connection reset"),
    ("Connection aborted", "connection aborted"),
    ("RemoteDisconnected", "connection closed without an answer"),
    ("Remote end closed", "connection closed without an answer"),
    ("Read timed out", "no answer in time"),
    ("timed out", "no answer in time"),
    ("Name or service not known", "host name not found"),
    ("Temporary failure in name resolution", "host name not found"),
    ("No route to host", "no route to host"),
)
# Reasons that say the server itself cannot be reached (not what stands behind it).
_SERVER_GONE = ("connection refused", "host name not found", "no route to host")
_SERVER_ERRORS = re.compile(r"too many (5\d\d) error responses|\b(5\d\d) Server Error")


def network_reason(text: str) -> str | None:
    """A failed HTTP call's reason in a few words ("connection refused", "HTTP 500"), or
    None when the text names none of the known ones."""
    answered = _SERVER_ERRORS.search(text)
    if answered:
        return f"HTTP {answered.group(1) or answered.group(2)}"
    for marker, words in _NETWORK_REASONS:
        if marker in text:
            return words
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return clause(text, 300) if text else type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, then its causes and contexts (``raise ... from None`` keeps context)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _os_error(exc: BaseException) -> MlopsError | None:
    if not isinstance(exc, OSError):
        return None
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno in _DISK_FULL or "No space left on device" in str(exc):
        return DiskFullError(f"No space left on device{where}: free some space, then rerun.")
    if exc.errno in _NO_PERMISSION:
        what = "Read-only file system" if exc.errno == errno.EROFS else "Permission denied"
        return PermissionDeniedError(
            f"{what}{where}: the command cannot write there; check the folder's owner, "
            "mode and mount."
        )
    return None


def _database(exc: BaseException) -> MlopsError | None:
    names = _names(exc)
    text = _first_line(exc)
    if "database or disk is full" in text:
        return DiskFullError(f"The database could not write: {text}; free some space, then rerun.")
    if "attempt to write a readonly database" in text:
        return PermissionDeniedError(f"The database file is read-only: {text}.")
    if "psycopg2.errors.InsufficientPrivilege" in names:
        return ConfigError(
            f"The database refused the statement ({text}): the role this command logs in as "
            "(PGUSER) has no such grant (services/mlops/db/roles.py), or `mlops migrate` has "
            "not run since the grants changed."
        )
    if "psycopg2.errors.QueryCanceled" in names or "canceling statement due to statement" in text:
        return DatabaseError(
            f"A database query ran past DATABASE_STATEMENT_TIMEOUT_SECONDS and was cancelled: "
            f"{text}."
        )
    connection = {
        "sqlalchemy.exc.OperationalError",
        "sqlalchemy.exc.InterfaceError",
        "sqlalchemy.exc.TimeoutError",
        "psycopg2.OperationalError",
        "psycopg2.InterfaceError",
        "sqlite3.OperationalError",
    }
    if names & connection or getattr(exc, "connection_invalidated", False):
        return DatabaseError(f"The database stopped answering: {text}.")
    return None


def _store(exc: BaseException) -> MlopsError | None:
    names = _names(exc)
    if any(n.startswith("botocore.exceptions.") for n in names) and names & {
        "botocore.exceptions.EndpointConnectionError",
        "botocore.exceptions.ConnectTimeoutError",
        "botocore.exceptions.ReadTimeoutError",
        "botocore.exceptions.ConnectionClosedError",
        "botocore.exceptions.HTTPClientError",
    }:
        return StoreError(f"The object store is not answering: {_first_line(exc)}.")
    return None


# MLflow's REST routes and the route of its artifact proxy (``--serve-artifacts``).
_REST_ROUTE = "/api/2.0/mlflow/"
_ARTIFACTS_ROUTE = "/api/2.0/mlflow-artifacts/"
_URL = re.compile(r"(https?://\S+?)?(/api/2\.0/mlflow(?:-artifacts)?/[^\s'\")]*)")
_CREDENTIALS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"


def _route(text: str) -> str:
    """The MLflow route a failure's text names (``/api/2.0/mlflow/runs/get``), or "": the
    longest mention (urllib3's carries the query: which folder a listing asked for)."""
    routes = [unquote(found.group(2)) for found in _URL.finditer(text)]
    return max(routes, key=len, default="")


def _http_status(exc: BaseException, text: str) -> int | None:
    """The HTTP status MLflow's error reports: its error code, or its "error code NNN"."""
    found = re.search(r"failed with error code (\d{3})", text)
    if found:
        return int(found.group(1))
    code = str(getattr(exc, "error_code", ""))
    return {"UNAUTHENTICATED": 401, "CUSTOMER_UNAUTHORIZED": 401, "PERMISSION_DENIED": 403}.get(
        code
    )


def login_refused(status: int, where: str) -> ConfigError:
    """MLflow refused the credentials (401) or the user's permission (403)."""
    if status == 401:
        return ConfigError(
            f"The MLflow tracking server refused the login (HTTP 401 on {where}): check "
            f"{_CREDENTIALS}."
        )
    return ConfigError(
        f"The MLflow tracking server refused the user access (HTTP 403 on {where}): check "
        f"{_CREDENTIALS} and that user's permissions."
    )


def not_mlflow(answer: str, where: str, uri: str = "") -> ConfigError:
    """The tracking URI answers, but not as an MLflow tracking server."""
    named = f"MLFLOW_TRACKING_URI ({uri})" if uri else "MLFLOW_TRACKING_URI"
    return ConfigError(
        f"{named} does not point at an MLflow tracking server ({answer} on {where}): "
        "check MLFLOW_TRACKING_URI."
    )


def _tracking(exc: BaseException) -> MlopsError | None:
    names = _names(exc)
    http_error = "requests.exceptions.RequestException" in names
    if "mlflow.exceptions.MlflowException" not in names and not http_error:
        return None
    text = " ".join(str(exc).split())  # a download lists every file's failure
    route = _route(text)
    if http_error and not route:
        return None  # a request to somewhere else than MLflow
    where = route or "its API"
    status = _http_status(exc, text)
    if status in (401, 403):
        return login_refused(status, where)
    if route.startswith(_REST_ROUTE) and (
        (status is not None and 400 <= status < 500 and "Response body:" in text)
        or "response body was not in a valid JSON format" in text
    ):
        return not_mlflow(f"HTTP {status}" if status else "an answer that is not MLflow's", where)
    reason = network_reason(text)
    if route.startswith(_ARTIFACTS_ROUTE) and reason not in (None, *_SERVER_GONE):
        if reason.startswith("HTTP 5"):
            return StoreError(
                f"The MLflow server failed to move an artifact to or from its object store "
                f"({reason} on {route}): check the object store behind MLflow, then rerun."
            )
        return TrackingError(
            f"An artifact transfer through the MLflow server failed ({reason} on {route}): "
            "the MLflow server or the object store behind it failed; check both, then rerun."
        )
    unreachable = "API request to" in text and (
        "failed with exception" in text or "failed with timeout" in text
    )
    if unreachable or "TEMPORARILY_UNAVAILABLE" in str(getattr(exc, "error_code", "")):
        detail = reason or clause(text.partition("exception ")[2] or text, 120)
        return TrackingError(f"The MLflow tracking server is not answering ({detail} on {where}).")
    return None


def classify(exc: BaseException) -> MlopsError | None:
    """The failure class of ``exc`` as an :class:`MlopsError`, or None when unknown.

    An infrastructure failure anywhere in the chain of a ``ModelError`` or ``DataError``
    wins over the stage's reading of it (``ModelError("registry could not be read")``
    raised while handling a refused connection is the tracking server being down, not a
    model problem). Other ``MlopsError`` classes are kept as they are.
    """
    if isinstance(exc, MlopsError) and not isinstance(exc, ModelError | DataError):
        return exc  # already a sentence of the right class (a refused login: ConfigError)
    for item in _chain(exc):
        if isinstance(item, InfrastructureError):
            return item
        for check in (_os_error, _database, _store, _tracking):
            found = check(item)
            if found is not None:
                return found
    if isinstance(exc, MlopsError):
        return exc
    return None
