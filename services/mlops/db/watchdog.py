"""The client's own limit on a Postgres statement in flight, and signals heard during one.

Postgres's ``statement_timeout`` is the server's: a server, or a network path, that stops
answering after the statement was sent never sends the cancellation, and TCP keepalives
and ``tcp_user_timeout`` see nothing wrong while something in between (a proxy, a NAT, a
paused VM's host) still acknowledges the packets. libpq then waits in ``poll()`` for as
long as that lasts, and Python cannot run a signal handler in the meantime: the process
does not hear SIGTERM, and only the kubelet's SIGKILL ends it.

So every statement a Postgres engine of :func:`mlops.db.engine.make_engine` runs is
registered here (SQLAlchemy's cursor events), and one watcher thread shuts the
connection's socket down (libpq then returns at once with an error) when:

* the statement has had no answer for the statement limit plus the connect limit
  (``DATABASE_STATEMENT_TIMEOUT_SECONDS`` + ``DATABASE_CONNECT_TIMEOUT_SECONDS``): the
  statement fails with :class:`~mlops.errors.DatabaseError` naming those settings (exit 6);
* SIGTERM or SIGINT arrives while the main thread is blocked in a statement, during a
  stage run (:func:`hear_signals`: Python's C-level handler writes the signal's number
  to this module's pipe, ``signal.set_wakeup_fd``, even while the main thread is in C):
  the stage's handler then runs, the run is recorded as terminated and the process exits
  143, within the pod's grace period.

SQLite needs none of it: its waits are local and bounded by its busy timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

from mlops.errors import DatabaseError

log = logging.getLogger(__name__)

_HEARD = {signal.SIGTERM.value, signal.SIGINT.value}


@dataclass
class _Flight:
    """One statement in flight on one thread."""

    connection: Any  # the DBAPI connection
    fd: int
    thread: int
    deadline: float | None
    limit: str  # the settings behind the deadline, for the sentence
    where: str
    cut: str = ""  # "timeout" or "signal" once its socket was shut down


class _Watcher:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flights: dict[int, _Flight] = {}  # thread ident -> its statement
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.thread: threading.Thread | None = None
        self.handler_ran = False  # the stage's signal handler has run (Python heard it)

    def begin(self, flight: _Flight) -> None:
        with self.lock:
            self.flights[flight.thread] = flight
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="mlops-db-watchdog", daemon=True
                )
                self.thread.start()
        if flight.deadline is not None:
            self._poke()

    def end(self, thread: int) -> _Flight | None:
        with self.lock:
            return self.flights.pop(thread, None)

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.write_fd, b"\0")

    def _next_wait(self) -> float | None:
        with self.lock:
            deadlines = [f.deadline for f in self.flights.values() if f.deadline and not f.cut]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self.read_fd], [], [], self._next_wait())
            heard = False
            if ready:
                with contextlib.suppress(BlockingIOError, OSError):
                    heard = any(byte in _HEARD for byte in os.read(self.read_fd, 512))
            now = time.monotonic()
            main = threading.main_thread().ident
            with self.lock:
                for flight in self.flights.values():
                    if flight.cut:
                        continue
                    if heard and flight.thread == main and not self.handler_ran:
                        _shut(flight, "signal")
                    elif flight.deadline is not None and now >= flight.deadline:
                        _shut(flight, "timeout")


def _shut(flight: _Flight, why: str) -> None:
    """Shut the statement's socket down: libpq's wait returns at once with an error."""
    if getattr(flight.connection, "closed", 1):
        return
    flight.cut = why
    try:
        sock = socket.socket(fileno=os.dup(flight.fd))
    except OSError:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    if why == "timeout":
        log.warning("No answer from the database at %s; its connection was closed", flight.where)


_watcher = _Watcher()


def _after_fork() -> None:
    """A forked child (a server's worker) has no watcher thread: start afresh."""
    global _watcher
    _watcher = _Watcher()


os.register_at_fork(after_in_child=_after_fork)


def watch(engine: Engine, statement_timeout: float, connect_timeout: int) -> None:
    """Register every statement of ``engine``; past the limits, its socket is shut down.

    ``statement_timeout`` 0 means no limit: the statement is then only ended by a signal.
    """
    where = engine.url.render_as_string(hide_password=True)
    limit = float(statement_timeout) + float(connect_timeout) if statement_timeout else None
    settings = "DATABASE_STATEMENT_TIMEOUT_SECONDS plus DATABASE_CONNECT_TIMEOUT_SECONDS"

    @event.listens_for(engine, "before_cursor_execute")
    def _begin(conn: Any, cursor: Any, *_args: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        try:
            fd = dbapi.fileno()
        except Exception:  # not a socket connection (never for psycopg2)
            return
        deadline = time.monotonic() + limit if limit is not None else None
        _watcher.begin(_Flight(dbapi, fd, threading.get_ident(), deadline, settings, where))

    @event.listens_for(engine, "after_cursor_execute")
    def _end(*_args: Any) -> None:
        _watcher.end(threading.get_ident())

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        flight = _watcher.end(threading.get_ident())
        if flight is not None and flight.cut == "timeout" and limit is not None:
            raise DatabaseError(
                f"The database at {where} sent no answer for {limit:g} s ({settings}): "
                "it, or the network to it, stopped mid-query; the connection was closed "
                "and nothing of the statement was kept."
            )


@contextlib.contextmanager
def hear_signals() -> Iterator[None]:
    """While the stage's handler is installed: a signal also reaches the watcher, which
    frees a main thread blocked in a statement so that the handler can run.

    Call :func:`handler_ran` from the handler. Main thread only.
    """
    _watcher.handler_ran = False
    try:
        previous = signal.set_wakeup_fd(_watcher.write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread, or the fd refused: nothing to add
        yield
        return
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        _watcher.handler_ran = False


def handler_ran() -> None:
    """The stage's signal handler ran: the main thread is not blocked (no lock taken)."""
    _watcher.handler_ran = True
