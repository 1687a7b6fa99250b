"""The second core for data prep: file reads ahead of, and Parquet writes behind, the main loop.

Arrow reads and decodes Parquet, and encodes and writes it, without holding Python's
GIL; so while one thread checks and featurizes a batch, another can read the next files
or write the last row group. Both helpers keep the order of the work, hold a bounded
amount of it (``depth`` items), and raise a failure of the thread in the caller, at the
latest when it waits for the end; their one worker thread ends with the helper (it is
not a daemon left behind by a failed run).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_cpu: defaultdict[str, float] = defaultdict(float)  # CPU seconds of the threads' work, by kind
_cpu_lock = threading.Lock()


def thread_cpu() -> dict[str, float]:
    """CPU seconds spent so far in this process by the threads' work: ``read``, ``write``."""
    with _cpu_lock:
        return dict(_cpu)


def _timed[R](kind: str, fn: Callable[..., R]) -> Callable[..., R]:
    def run(*args: Any) -> R:
        began = time.thread_time()
        try:
            return fn(*args)
        finally:
            with _cpu_lock:
                _cpu[kind] += time.thread_time() - began

    return run


def read_ahead[T, R](fn: Callable[[T], R], items: Iterable[T], depth: int = 8) -> Iterator[R]:
    """``fn(item)`` for each item, in order, up to ``depth`` of them computed ahead in a thread."""
    timed = _timed("read", fn)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-prep-read") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(timed, item))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # the consumer stopped early: nothing more to read
                future.cancel()


class WriteBehind:
    """Calls run one at a time, in order, in a thread; at most ``depth`` wait to run."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[Any]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-prep-write")
        self._pending.append(self._pool.submit(_timed("write", fn), *args))
        while len(self._pending) > self.depth:
            self._pending.popleft().result()  # its failure, if any, is raised here

    def wait(self) -> None:
        """Until every call submitted has run; raises the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for the calls submitted, then end the thread (also when one failed)."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
