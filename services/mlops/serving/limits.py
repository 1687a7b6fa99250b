"""Limits on request bodies, enforced while the body streams in (plain ASGI, before any
route reads it):

* **size**: a ``Content-Length`` above the limit is refused before any of the body is
  read; a body without one (``Transfer-Encoding: chunked``) is counted as its chunks
  arrive and refused (413, one sentence, ``Connection: close``) as soon as the count passes
  the limit, so the rest is never read nor buffered;
* **time** (``SERVE_BODY_TIMEOUT_SECONDS``): the whole body must arrive within that many
  seconds of its first read; a slow or stalled sender gets 408 and the connection is
  closed, so it holds no memory or slot for long (the idle time between requests on a
  kept-alive connection is uvicorn's ``timeout_keep_alive``, ``SERVE_IDLE_TIMEOUT_SECONDS``);
* **large bodies at once** (``SERVE_MAX_LARGE_BODIES``): a request announcing a body over
  ``SERVE_LARGE_BODY_BYTES``, or streaming one without a length, takes one of that many
  slots while it runs; with every slot taken it is answered 503 with ``Retry-After`` at
  once, so a burst of 64 MiB uploads cannot hold the process's memory hostage.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mlops.serving.api_errors import ApiError

MAX_BODY_BYTES = 64 * 1024 * 1024


LARGE_BODY_BYTES = 1024 * 1024
MAX_LARGE_BODIES = 2
BODY_TIMEOUT_SECONDS = 30.0


class BodyTooLarge(ApiError):
    """Raised by the counting ``receive`` once the body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_sentence(limit))


class BodyTooSlow(ApiError):
    """Raised by the counting ``receive`` when the body did not arrive in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


def too_large_sentence(limit: int) -> str:
    return f"the body is larger than the limit of {limit} bytes"


class BodyLimitMiddleware:
    """Refuses a request whose body passes ``max_bytes`` (413), does not arrive within
    ``body_timeout`` seconds (408), or is large while ``max_large`` large ones run (503)."""

    def __init__(
        self,
        app: Any,
        max_bytes: int = MAX_BODY_BYTES,
        *,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
        large_bytes: int = LARGE_BODY_BYTES,
        max_large: int = MAX_LARGE_BODIES,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.large_bytes = large_bytes
        self.max_large = max_large
        self.large_running = 0  # one event loop: no lock needed around the count

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await refuse(send, limit)
            return
        large = length > self.large_bytes if length is not None else _streams_body(scope)
        if large and self.large_running >= self.max_large:
            await answer(
                send,
                503,
                f"{self.max_large} large requests are being read already; retry shortly",
                [(b"retry-after", b"1")],
            )
            return
        self.large_running += large
        try:
            await self._limited(scope, receive, send)
        finally:
            self.large_running -= large

    async def _limited(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit, seconds = self.max_bytes, self.body_timeout
        received = 0
        started = False
        deadline: float | None = None
        body_done = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received, deadline, body_done
            if body_done:  # waiting for a disconnect, say: no time limit
                return dict(await receive())
            loop = asyncio.get_running_loop()
            deadline = deadline if deadline is not None else loop.time() + seconds
            try:
                message: dict[str, Any] = await asyncio.wait_for(
                    receive(), max(deadline - loop.time(), 0.0)
                )
            except TimeoutError:
                raise BodyTooSlow(seconds) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                body_done = not message.get("more_body", False)
            return message

        async def noting_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, noting_send)
        except BodyTooLarge:
            if started:
                raise
            await refuse(send, limit)
        except BodyTooSlow as slow:
            if started:
                raise
            await answer(send, 408, slow.message)


def _streams_body(scope: dict[str, Any]) -> bool:
    """A body sent without a length (chunked): its size is unknown until it is read."""
    return any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in scope.get("headers", [])
    )


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def refuse(send: Any, limit: int) -> None:
    """Answer 413 in the API's error format and close the connection."""
    await answer(send, 413, too_large_sentence(limit))


async def answer(
    send: Any, status: int, sentence: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``status`` with one sentence in the API's error format; close the connection."""
    body = json.dumps({"error": sentence, "detail": []}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
