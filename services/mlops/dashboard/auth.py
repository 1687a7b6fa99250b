"""Who is asking: sign-in from the page's fields or the Authorization header, throttled
per client address; the users and roles themselves are :mod:`mlops.access`.

A request may carry credentials three ways: the page's user and password fields (the
password field takes the token in token mode), ``Authorization: Basic`` (user and
password; a browser sends it after its own sign-in prompt when anonymous viewing is
off), or ``Authorization: Bearer <token>`` (token mode). Each is checked on the server
(constant time). After ``DASHBOARD_MAX_FAILURES`` wrong ones from one client address
within ``DASHBOARD_FAILURE_WINDOW_SECONDS`` the client is refused (429) without any
check until the window has passed; each failure, and the first refusal of a throttled
client, is audited by the caller (:mod:`mlops.dashboard.actions`).

The client address is the connection's (``REMOTE_ADDR``): behind a proxy that does not
keep it (a port-forward, an ingress), every client shares the proxy's address, so the
throttle then protects the accounts rather than telling clients apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mlops.access import Directory, Principal, directory
from mlops.settings import Settings

NO_USERS = (
    "Actions are disabled: the dashboard has no users (set DASHBOARD_USERS from the Secret "
    "to enable promote, rollback, archive, pause, resume, retrain and the kill switch)."
)
NO_CREDENTIALS = "Refused: sign in (user and password) to act; nothing was changed."
WRONG_CREDENTIALS = "Refused: the user name or password is wrong; nothing was changed."
THROTTLED = (
    "Refused: too many wrong sign-ins from this address; try again in {seconds} s "
    "(nothing was checked or changed)."
)
BAD_ORIGIN = "Refused: the action was posted from another site ({origin}); nothing was changed."
# Verified credentials kept (a keyed digest of them, never the password) so that a signed-in
# browser's many requests do not each pay for a password hash.
_CACHE_SIZE = 64


class Refused(Exception):
    """A request the caller may not make; its message is the sentence to show.

    ``status`` is the HTTP answer (401 credentials, 403 role or origin, 429 throttled);
    ``audit`` whether the refusal is to be written to the audit table (a throttled
    client's repeated attempts are not, past the first).
    """

    def __init__(
        self, sentence: str, status: int = 403, *, audit: bool = True, retry_after: int = 0
    ) -> None:
        super().__init__(sentence)
        self.status = status
        self.audit = audit
        self.retry_after = retry_after


@dataclass(frozen=True)
class Credentials:
    """What a request presented: the page's fields and the Authorization header."""

    user: str = ""
    password: str = ""
    authorization: str = ""

    @classmethod
    def from_request(
        cls, user: str | None, password: str | None, headers: Mapping[str, str]
    ) -> Credentials:
        return cls(user or "", password or "", headers.get("Authorization", "") or "")

    def candidates(self) -> list[tuple[str, str]]:
        """(user name, password or token) pairs presented; the name may be empty."""
        found = []
        if self.password.strip():
            found.append((self.user.strip(), self.password.strip()))
        scheme, _, value = self.authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            found.append(("", value.strip()))
        elif scheme.lower() == "basic" and value.strip():
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, sep, password = decoded.partition(":")
            if sep and password:
                found.append((user, password))
        return found

    def claimed_user(self) -> str:
        """The user name the request claims (for the audit of a failure), cleaned."""
        names = [user for user, _ in self.candidates() if user]
        name = names[0] if names else ""
        return "".join(c for c in name if c.isprintable())[:64]


@dataclass
class Throttle:
    """Failed sign-ins per client address within a sliding window."""

    max_failures: int
    window_seconds: float
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _told: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            recent = self._recent(client)
            if len(recent) < self.max_failures:
                self._told.discard(client)
                return 0
            return max(1, int(recent[0] + self.window_seconds - self.clock()) + 1)

    def first_refusal(self, client: str) -> bool:
        """Whether this is the first time the throttled ``client`` is refused (audited)."""
        with self._lock:
            first = client not in self._told
            self._told.add(client)
            return first

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(self.clock())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
            self._told.discard(client)

    def _recent(self, client: str) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and recent[0] <= self.clock() - self.window_seconds:
            recent.popleft()
        return recent


class Gate:
    """The dashboard's sign-in: the configured users, the throttle, a cache of verified
    credentials. One per app (``create_app``)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory: Directory = directory(settings)
        self.throttle = Throttle(
            settings.dashboard_max_failures, settings.dashboard_failure_window_seconds, clock
        )
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, Principal] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.directory.enabled

    def sign_in(self, credentials: Credentials, client: str) -> Principal | None:
        """The signed-in user; None when no credentials were presented. Raises
        :class:`Refused` (429) for a throttled client, (401) for wrong credentials.
        """
        candidates = credentials.candidates()
        if not candidates or not self.enabled:
            return None
        wait = self.throttle.retry_after(client)
        if wait:
            first = self.throttle.first_refusal(client)
            raise Refused(THROTTLED.format(seconds=wait), 429, audit=first, retry_after=wait)
        for user, password in candidates:
            principal = self._check(user, password)
            if principal is not None:
                self.throttle.succeeded(client)
                return principal
        self.throttle.failed(client)
        raise Refused(WRONG_CREDENTIALS, 401)

    def known(self, credentials: Credentials) -> Principal | None:
        """The user these credentials signed in as before (the cache of verified ones);
        None otherwise. No throttle, no audit, no password check: for the page's frequent
        refreshes, which must neither cost a hash nor count as attempts."""
        for user, password in credentials.candidates() if self.enabled else []:
            with self._lock:
                found = self._verified.get(self._digest(user, password))
            if found is not None:
                return found
        return None

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()

    def _check(self, user: str, password: str) -> Principal | None:
        digest = self._digest(user, password)
        with self._lock:
            known = self._verified.get(digest)
        if known is not None:
            return known
        principal = self.directory.authenticate(user, password)
        if principal is not None:
            with self._lock:
                self._verified[digest] = principal
                while len(self._verified) > _CACHE_SIZE:
                    self._verified.popitem(last=False)
        return principal


def origin_allowed(origin: str, host: str, allowed: str) -> bool:
    """Whether a state-changing request may come from ``origin`` (its Origin header):
    none (not a browser's cross-site request), the dashboard's own host, or one of
    ``DASHBOARD_ALLOWED_ORIGINS``.
    """
    from urllib.parse import urlsplit

    origin = origin.strip()
    if not origin:
        return True
    if origin in {o.strip().rstrip("/") for o in allowed.split(",") if o.strip()}:
        return True
    return origin != "null" and urlsplit(origin).netloc.lower() == host.strip().lower()
