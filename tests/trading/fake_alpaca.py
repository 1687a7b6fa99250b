"""A local HTTP server answering like Alpaca's trading API, for the real alpaca-py client.

Routes alpaca-py 0.44 calls: ``GET /v2/account``, ``GET /v2/positions``, ``GET
/v2/clock``, ``POST /v2/orders``, ``GET /v2/orders:by_client_order_id``, ``GET
/v2/orders`` (``status`` open|closed|all, ``limit``, ``direction``, ``after``, ``until``:
``get_orders``), ``DELETE /v2/orders/{id}`` (204, or 422 when the order is final:
``cancel_order_by_id``) and ``DELETE /v2/orders`` (207, one entry per open order:
``cancel_orders``). Orders start in ``initial_status`` (``accepted``, or ``new`` as
Alpaca answers outside market hours) and are filled later by :meth:`FakeAlpaca.fill`
(partially or whole), :meth:`fill_all`, or :meth:`trade_session` (a session's bar: market
orders at its open, limit orders, ``type=limit`` with ``limit_price``, as its range
allows, the rest of the day orders expire); positions and cash follow the fills.
Faults are injected per route (:meth:`FakeAlpaca.fail`): an HTTP status with a message,
``"drop"`` (the connection closes before any reply) or ``"lost"`` (the order is taken,
then the connection closes: a lost reply), or ``"hold"`` (the request waits until the test
calls :meth:`FakeAlpaca.release`).
One server keeps several accounts, one per API key (:meth:`FakeAlpaca.add_account`), each
with its own account number, orders, cash, positions and faults; the key of the first
account is any key not added.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from mlops import market_calendar

FINAL = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now() -> str:
    return _iso(datetime.now(UTC))


class FakeAlpaca:
    """Keeps orders, cash and positions in memory."""

    def __init__(self, account_number: str = "PA0000TEST", *, listen: bool = True) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.posts = 0
        self.cash = 100_000.0
        self.positions: dict[str, float] = {}
        self.marks: dict[str, float] = {}  # last prices, for equity and market values
        self.account_number = account_number
        self.initial_status = "accepted"
        self.clock_now: datetime | None = None  # None: the real time
        self.faults: dict[tuple[str, str], deque[Any]] = defaultdict(deque)
        self.fail_account = False
        self.slow_seconds = 2.0
        self.lock = threading.Lock()
        self.accounts: dict[str, FakeAlpaca] = {}  # API key -> another account
        self.root: FakeAlpaca = self  # the server's first account: its clock is everyone's
        self.held = threading.Event()  # a "hold" fault's request arrived
        self.released = threading.Event()
        if not listen:
            return
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAlpaca:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # Test controls.

    def add_account(self, api_key: str, account_number: str) -> FakeAlpaca:
        """Another account on this server, reached with ``api_key``."""
        account = FakeAlpaca(account_number, listen=False)
        account.root = self
        self.accounts[api_key] = account
        return account

    def for_key(self, api_key: str | None) -> FakeAlpaca:
        return self.accounts.get(api_key or "", self)

    def release(self) -> None:
        """Let the requests a ``"hold"`` fault keeps waiting go on."""
        self.released.set()

    def fail(self, method: str, path: str, *faults: Any) -> None:
        """Answer the next requests to ``method path`` with these faults, in order.

        A fault is an ``int`` status (message "internal server error"), a ``(status,
        message)`` pair, ``"drop"``, or for POST /v2/orders ``"lost"`` (taken, no reply)
        or ``"slow"`` (taken, the reply only after ``slow_seconds``: the client times out).
        """
        self.faults[(method, path)].extend(faults)

    def after_close_of(self, day: Any) -> None:
        """Set the clock to 30 minutes after the close of ``day``'s session."""
        self.clock_now = market_calendar.session_close(day) + timedelta(minutes=30)

    def fill(self, client_order_id: str, qty: float, price: float) -> None:
        """Fill ``qty`` more of an order at ``price`` (partially unless it completes it)."""
        with self.lock:
            order = self.orders[client_order_id]
            done = float(order["filled_qty"])
            total = float(order["qty"])
            qty = min(qty, total - done)
            old_price = float(order["filled_avg_price"] or 0.0)
            average = (old_price * done + price * qty) / (done + qty)
            sign = 1 if order["side"] == "buy" else -1
            self.cash -= sign * qty * price
            symbol = order["symbol"]
            self.positions[symbol] = self.positions.get(symbol, 0.0) + sign * qty
            self.marks[symbol] = price
            order.update(
                status="filled" if done + qty >= total else "partially_filled",
                filled_qty=f"{done + qty:g}",
                filled_avg_price=f"{average:.6f}",
                filled_at=_now(),
                updated_at=_now(),
            )

    def fill_all(self, price: float) -> None:
        for cid, order in list(self.orders.items()):
            if order["status"] in ("new", "accepted", "partially_filled"):
                self.fill(cid, float(order["qty"]), price)

    def trade_session(self, bars: dict[str, tuple[float, float, float]]) -> None:
        """A session passes: ``bars`` maps a symbol to its (open, high, low). Each open order
        on a symbol with a bar fills whole: a market order at the open; a buy limit at the
        open if the open is at or below it, else at the limit if the low reaches it; a sell
        limit the other way round (an ``opg`` limit only at the open). What does not fill
        expires, as a day order does at the close."""
        for cid, order in list(self.orders.items()):
            if order["status"] in FINAL or order["symbol"] not in bars:
                continue
            open_, high, low = bars[order["symbol"]]
            price: float | None = open_
            if order["type"] == "limit":
                limit = float(order["limit_price"])
                buy = order["side"] == "buy"
                if (open_ > limit) if buy else (open_ < limit):  # not through at the open
                    reached = low <= limit if buy else high >= limit
                    price = limit if reached and order["time_in_force"] != "opg" else None
            if price is None:
                self.set_status(cid, "expired")
            else:
                self.fill(cid, float(order["qty"]), price)

    def open_orders(self) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["status"] not in FINAL]

    def set_status(self, client_order_id: str, status: str) -> None:
        with self.lock:
            self.orders[client_order_id].update(status=status, updated_at=_now())

    # Answers.

    def _clock(self) -> dict[str, Any]:
        now = self.root.clock_now or datetime.now(UTC)
        today = now.date()
        is_open = market_calendar.is_session(today) and (
            market_calendar.session_open(today) <= now < market_calendar.session_close(today)
        )
        nxt = today if now < market_calendar.session_open(today) else today + timedelta(days=1)
        while not market_calendar.is_session(nxt):
            nxt += timedelta(days=1)
        return {
            "timestamp": _iso(now),
            "is_open": is_open,
            "next_open": _iso(market_calendar.session_open(nxt)),
            "next_close": _iso(market_calendar.session_close(nxt)),
        }

    def _account(self) -> dict[str, Any]:
        value = sum(q * self.marks.get(s, 100.0) for s, q in self.positions.items())
        return {
            "id": "5c7a0d6e-0000-4000-8000-000000000000",
            "account_number": self.account_number,
            "status": "ACTIVE",
            "currency": "USD",
            "cash": f"{self.cash:.2f}",
            "buying_power": f"{self.cash:.2f}",
            "equity": f"{self.cash + value:.2f}",
            "long_market_value": f"{value:.2f}",
        }

    def _positions(self) -> list[dict[str, Any]]:
        return [
            {
                "asset_id": str(uuid.uuid4()),
                "symbol": sym,
                "exchange": "NASDAQ",
                "asset_class": "us_equity",
                "avg_entry_price": "100.0",
                "qty": f"{qty:g}",
                "side": "long",
                "cost_basis": str(qty * 100.0),
                "market_value": f"{qty * self.marks.get(sym, 100.0):.2f}",
                "current_price": f"{self.marks.get(sym, 100.0):.2f}",
            }
            for sym, qty in self.positions.items()
            if qty > 0
        ]

    def _new_order(self, body: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        return {
            "id": str(uuid.uuid4()),
            "client_order_id": body["client_order_id"],
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "asset_id": str(uuid.uuid4()),
            "symbol": body["symbol"],
            "asset_class": "us_equity",
            "qty": str(body["qty"]),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "simple",
            "order_type": body.get("type", "market"),
            "type": body.get("type", "market"),
            "limit_price": None if body.get("limit_price") is None else str(body["limit_price"]),
            "side": body["side"],
            "time_in_force": body["time_in_force"],
            "status": self.initial_status,
            "extended_hours": False,
        }

    def _list(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """``GET /v2/orders``: Alpaca's filters, newest first unless ``direction=asc``."""
        status = query.get("status", ["open"])[0]
        found = list(self.orders.values())
        if status == "open":
            found = [o for o in found if o["status"] not in FINAL]
        elif status == "closed":
            found = [o for o in found if o["status"] in FINAL]
        for name, keep in (("after", lambda t, c: t > c), ("until", lambda t, c: t < c)):
            if name in query:
                cut = datetime.fromisoformat(query[name][0])
                found = [o for o in found if keep(datetime.fromisoformat(o["submitted_at"]), cut)]
        found.sort(
            key=lambda o: o["submitted_at"], reverse=query.get("direction", ["desc"])[0] == "desc"
        )
        return found[: int(query.get("limit", ["50"])[0])]

    def _cancel(self, order_id: str) -> tuple[int, dict[str, Any] | None]:
        """``DELETE /v2/orders/{id}``: 204 and canceled, 422 when final, 404 when unknown."""
        order = next((o for o in self.orders.values() if o["id"] == order_id), None)
        if order is None:
            return 404, {"code": 40410000, "message": "order not found"}
        if order["status"] in FINAL:
            return 422, {"code": 42210000, "message": f"order is already {order['status']}"}
        order.update(status="canceled", canceled_at=_now(), updated_at=_now())
        return 204, None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.close()

            def _authorized(self) -> bool:
                if self.headers.get("APCA-API-KEY-ID") and self.headers.get("APCA-API-SECRET-KEY"):
                    return True
                self._send(401, {"code": 40110000, "message": "request is not authorized"})
                return False

            def _account(self) -> FakeAlpaca:
                return fake.for_key(self.headers.get("APCA-API-KEY-ID"))

            def _fault(self, method: str, path: str) -> Any:
                fake = self._account()
                with fake.lock:
                    fake.requests.append((method, path))
                    queue = fake.faults.get((method, path))
                    return queue.popleft() if queue else None

            def _answer_fault(self, fault: Any) -> bool:
                """Answer an injected fault; False for "lost" (the caller goes on)."""
                if fault == "drop":
                    self._drop()
                    return True
                if fault in ("lost", "slow"):
                    return False
                if fault == "hold":
                    account = self._account()
                    account.held.set()
                    account.released.wait(timeout=60)
                    return False
                status, message = fault if isinstance(fault, tuple) else (fault, "")
                self._send(status, {"code": status * 100000, "message": message or "internal"})
                return True

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                fake = self._account()
                url = urlparse(self.path)
                fault = self._fault("GET", url.path)
                if fault is not None and self._answer_fault(fault):
                    return
                with fake.lock:
                    if url.path == "/v2/account":
                        if fake.fail_account:
                            self._send(500, {"code": 50010000, "message": "internal error"})
                        else:
                            self._send(200, fake._account())
                    elif url.path == "/v2/positions":
                        self._send(200, fake._positions())
                    elif url.path == "/v2/clock":
                        self._send(200, fake._clock())
                    elif url.path == "/v2/orders":
                        self._send(200, fake._list(parse_qs(url.query)))
                    elif url.path == "/v2/orders:by_client_order_id":
                        cid = parse_qs(url.query).get("client_order_id", [""])[0]
                        if cid in fake.orders:
                            self._send(200, fake.orders[cid])
                        else:
                            self._send(404, {"code": 40410000, "message": "order not found"})
                    else:
                        self._send(404, {"code": 40410000, "message": "not found"})

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                fake = self._account()
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                path = urlparse(self.path).path
                if path != "/v2/orders":
                    self._send(404, {"code": 40410000, "message": "not found"})
                    return
                fault = self._fault("POST", path)
                with fake.lock:
                    fake.posts += 1
                if fault is not None and self._answer_fault(fault):
                    return
                with fake.lock:
                    if body.get("client_order_id") in fake.orders:
                        self._send(
                            422, {"code": 40010001, "message": "client_order_id must be unique"}
                        )
                        return
                    order = fake._new_order(body)
                    fake.orders[order["client_order_id"]] = order
                if fault == "lost":
                    self._drop()
                    return
                if fault == "slow":
                    time.sleep(fake.slow_seconds)
                self._send(200, order)

            def do_DELETE(self) -> None:
                if not self._authorized():
                    return
                fake = self._account()
                path = urlparse(self.path).path
                fault = self._fault("DELETE", path)
                if fault is not None and self._answer_fault(fault):
                    return
                with fake.lock:
                    if path == "/v2/orders":  # cancel_orders: every open order, 207
                        answers = [
                            {"id": o["id"], "status": fake._cancel(o["id"])[0], "body": None}
                            for o in fake.open_orders()
                        ]
                        self._send(207, [{**a, "status": 200} for a in answers])
                    elif path.startswith("/v2/orders/"):
                        self._send(*fake._cancel(path.rsplit("/", 1)[1]))
                    else:
                        self._send(404, {"code": 40410000, "message": "not found"})

        return Handler
