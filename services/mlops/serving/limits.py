"""The body limit, enforced while the body streams in.

A ``Content-Length`` above the limit is refused before any of the body is read; a body
without one (``Transfer-Encoding: chunked``) is counted as its chunks arrive and refused
(413, one sentence, ``Connection: close``) as soon as the count passes the limit, so the
rest is never read nor buffered.
"""

from __future__ import annotations

import json
from typing import Any

from mlops.serving.api_errors import ApiError

MAX_BODY_BYTES = 64 * 1024 * 1024


class BodyTooLarge(ApiError):
    """Raised by the counting ``receive`` once the body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_sentence(limit))


def too_large_sentence(limit: int) -> str:
    return f"the body is larger than the limit of {limit} bytes"


class BodyLimitMiddleware:
    """Refuses (413) a request whose body passes ``max_bytes`` (plain ASGI)."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await refuse(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
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


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def refuse(send: Any, limit: int) -> None:
    """Answer 413 in the API's error format and close the connection."""
    body = json.dumps({"error": too_large_sentence(limit), "detail": []}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
