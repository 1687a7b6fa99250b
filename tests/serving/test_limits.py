"""The body limits as ASGI middleware, driven message by message (no sockets, no clocks
but the body timeout itself): a stalled body gets 408, large bodies beyond the cap at once
get 503 with Retry-After, and a small request never waits for a large one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mlops.serving.limits import BodyLimitMiddleware


def _scope(length: int | None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if length is None:
        headers.append((b"transfer-encoding", b"chunked"))
    else:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": "/predict", "headers": headers}


class Echo:
    """An app that reads the whole body and answers 200 with its length."""

    def __init__(self) -> None:
        self.first_chunk = asyncio.Event()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            self.first_chunk.set()
        body = json.dumps({"size": size}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class Sender:
    """A client sending ``chunks`` in turn; ``None`` stalls until ``resume`` is set."""

    def __init__(self, *chunks: bytes | None) -> None:
        self.chunks = list(chunks)
        self.resume = asyncio.Event()
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        chunk = self.chunks.pop(0)
        if chunk is None:
            await self.resume.wait()
            chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])

    def error(self) -> str:
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return json.loads(body)["error"]


def test_a_stalled_body_gets_408_and_the_connection_closes() -> None:
    async def scenario() -> Sender:
        limits = BodyLimitMiddleware(Echo(), 10_000, body_timeout=0.2)
        slow = Sender(b"[{", None, b"}]")  # never resumed
        await limits(_scope(2000), slow.receive, slow.send)
        return slow

    slow = asyncio.run(scenario())
    assert slow.status == 408 and slow.headers()[b"connection"] == b"close"
    assert slow.error() == "the request body did not arrive within 0.2 s"


def test_large_bodies_beyond_the_cap_get_503_and_small_ones_pass() -> None:
    async def scenario() -> tuple[Sender, Sender, Sender, Sender, Sender]:
        app = Echo()
        limits = BodyLimitMiddleware(app, 10_000, large_bytes=1000, max_large=1)
        first = Sender(b"x" * 600, None, b"x" * 600)
        reading = asyncio.create_task(limits(_scope(1200), first.receive, first.send))
        await app.first_chunk.wait()  # the first large body holds the only slot
        refused, streamed, small = Sender(b"x" * 1200), Sender(b"x" * 10), Sender(b"[]")
        await limits(_scope(1200), refused.receive, refused.send)
        await limits(_scope(None), streamed.receive, streamed.send)  # chunked: large
        await limits(_scope(2), small.receive, small.send)
        first.resume.set()
        await reading
        again = Sender(b"x" * 1200)
        await limits(_scope(1200), again.receive, again.send)  # the slot is free again
        return first, refused, streamed, small, again

    first, refused, streamed, small, again = asyncio.run(scenario())
    assert (refused.status, streamed.status) == (503, 503)
    assert refused.headers()[b"retry-after"] == b"1"
    assert refused.error() == "1 large requests are being read already; retry shortly"
    assert (first.status, small.status, again.status) == (200, 200, 200)
