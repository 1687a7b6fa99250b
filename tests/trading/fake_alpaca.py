"""A local HTTP server answering like Alpaca's trading API, for the real alpaca-py client."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeAlpaca:
    """Keeps orders in memory; ``fill_all(price)`` fills every accepted order."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.posts = 0
        self.cash = 100_000.0
        self.positions: dict[str, float] = {}
        self.fail_account = False
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAlpaca:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fill_all(self, price: float) -> None:
        with self.lock:
            for order in self.orders.values():
                if order["status"] == "accepted":
                    qty = float(order["qty"])
                    sign = 1 if order["side"] == "buy" else -1
                    self.cash -= sign * qty * price
                    self.positions[order["symbol"]] = (
                        self.positions.get(order["symbol"], 0) + sign * qty
                    )
                    order.update(
                        status="filled",
                        filled_qty=order["qty"],
                        filled_avg_price=str(price),
                        filled_at=_now(),
                        updated_at=_now(),
                    )

    def _account(self) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "account_number": "PA0000TEST",
            "status": "ACTIVE",
            "currency": "USD",
            "cash": f"{self.cash:.2f}",
            "buying_power": f"{self.cash:.2f}",
            "equity": f"{self.cash:.2f}",
        }

    def _positions(self) -> list[dict[str, Any]]:
        return [
            {
                "asset_id": str(uuid.uuid4()),
                "symbol": sym,
                "exchange": "NASDAQ",
                "asset_class": "us_equity",
                "avg_entry_price": "100.0",
                "qty": str(qty),
                "side": "long",
                "cost_basis": str(qty * 100.0),
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
            "order_type": "market",
            "type": "market",
            "side": body["side"],
            "time_in_force": body["time_in_force"],
            "status": "accepted",
            "extended_hours": False,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("APCA-API-KEY-ID") and self.headers.get("APCA-API-SECRET-KEY"):
                    return True
                self._send(401, {"code": 40110000, "message": "request is not authorized"})
                return False

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                url = urlparse(self.path)
                with fake.lock:
                    if url.path == "/v2/account":
                        if fake.fail_account:
                            self._send(500, {"code": 50010000, "message": "internal error"})
                        else:
                            self._send(200, fake._account())
                    elif url.path == "/v2/positions":
                        self._send(200, fake._positions())
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
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if urlparse(self.path).path != "/v2/orders":
                    self._send(404, {"code": 40410000, "message": "not found"})
                    return
                with fake.lock:
                    fake.posts += 1
                    if body.get("client_order_id") in fake.orders:
                        self._send(
                            422, {"code": 40010001, "message": "client_order_id must be unique"}
                        )
                        return
                    order = fake._new_order(body)
                    fake.orders[order["client_order_id"]] = order
                    self._send(200, order)

        return Handler
