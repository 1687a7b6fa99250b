"""A TCP proxy on loopback that puts faults between a command and a real server.

The servers are real (PostgreSQL, moto's S3, the MLflow tracking server); the proxy in
front of each decides what the command meets, at a moment the test chooses, with no
timing guesswork:

* ``pass``: bytes flow both ways;
* ``kill()``: every open connection is reset and nothing listens any more (a crashed
  server: "connection refused" from then on); ``restore()`` listens again on the same port;
* ``blackhole()``: connections are accepted and never answered (a hung server, a
  firewall dropping replies);
* ``kill_when(pattern)`` / ``hold_when(pattern)``: when ``pattern`` appears in what the
  client sends (an SQL statement, an HTTP request line), the server dies just before it
  would have received it, or the connection stalls there until ``release()``; the
  returned event is set when it happened.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class _Trigger:
    pattern: bytes
    action: str  # "kill" or "hold"
    fired: threading.Event = field(default_factory=threading.Event)


def _reset(sock: socket.socket) -> None:
    """Drop the connection as a crashed peer would: now, even while a thread reads it.

    ``shutdown`` wakes a ``recv`` blocked in another thread (a plain ``close`` would not,
    and the connection would linger open); SO_LINGER 0 turns the close into a reset.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.triggers: list[_Trigger] = []
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.stopped = threading.Event()
        self.listener: socket.socket | None = None
        self.port = 0
        self.requests: list[bytes] = []  # the first line of each chunk sent (HTTP: requests)
        self._listen()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True, name="proxy")
        self.thread.start()

    # Control.

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """The server crashes: open connections reset, new ones refused."""
        with self.lock:
            self.mode = "down"
            listener, self.listener = self.listener, None
            sockets, self.sockets = list(self.sockets), set()
        if listener is not None:
            with contextlib.suppress(OSError):  # stop listening now, even mid-select
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            _reset(sock)

    def blackhole(self) -> None:
        """Connections are accepted and never answered (open ones stall too)."""
        with self.lock:
            self.mode = "blackhole"

    def restore(self) -> None:
        """The server is back: listening again on the same port, passing bytes."""
        with self.lock:
            self.mode = "pass"
            self.triggers = []
            if self.listener is None:
                self._listen(self.port)
        self.released.set()

    def kill_when(self, pattern: bytes) -> threading.Event:
        return self._trigger(pattern, "kill")

    def hold_when(self, pattern: bytes) -> threading.Event:
        self.released.clear()
        return self._trigger(pattern, "hold")

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.stopped.set()
        self.kill()
        self.released.set()
        self.thread.join(timeout=5)

    def _trigger(self, pattern: bytes, action: str) -> threading.Event:
        trigger = _Trigger(pattern, action)
        with self.lock:
            self.triggers.append(trigger)
        return trigger.fired

    # Plumbing.

    def _listen(self, port: int = 0) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            listener = self.listener
            if listener is None:
                self.stopped.wait(0.05)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], 0.05)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                continue
            with self.lock:
                mode = self.mode
                self.sockets.add(client)
            if mode == "down":
                _reset(client)
                continue
            if mode == "blackhole":
                continue  # accepted, never answered
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self.lock:
            if self.mode == "down":
                _reset(client)
                upstream.close()
                return
            self.sockets.add(upstream)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, upward: bool) -> None:
        tail = b""
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                for sock in (source, sink):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return
            if upward:
                self.requests.append(data.split(b"\r\n", 1)[0][:200])
                window = tail + data
                tail = window[-256:]
                if self._fire(window):
                    return
            while self.mode == "blackhole" and not self.stopped.is_set():
                self.stopped.wait(0.05)  # stalls: nothing passes any more
            try:
                sink.sendall(data)
            except OSError:
                return

    def _fire(self, window: bytes) -> bool:
        """Apply a trigger whose pattern is in ``window``; True when the stream must stop."""
        with self.lock:
            hit = next((t for t in self.triggers if t.pattern in window), None)
            if hit is not None:
                self.triggers.remove(hit)
        if hit is None:
            return False
        if hit.action == "kill":
            # Set before the kill: the command sees the reset at once and may return, and
            # the test check the event, before this thread runs again (CI saw exactly that).
            hit.fired.set()
            self.kill()
            return True
        hit.fired.set()
        self.released.wait(timeout=300)
        return False
