"""Overall per-request deadlines and a minimum rate for `requests`, on top of its
between-bytes timeout.

``requests``' read timeout is per ``recv``: a server sending one byte every two seconds never
trips it. Here every request gets a :class:`Deadline`; the connection it is sent on (urllib3
connection classes instrumented by :class:`DeadlineAdapter`) is registered with it, and one
watchdog thread shuts that socket down when the deadline passes, whatever phase the request is
in (headers or body). The blocked reader then fails, and ``expired`` tells the caller why.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()   # the Deadline of the request this thread is sending


class Deadline:
    """One request's overall deadline, and its minimum-rate rule: with ``window`` set, after a
    grace of one window, every ``window`` seconds the body must have brought at least
    ``min_bytes`` more bytes (counted by :meth:`progress`), else the request is cut (``slow``
    says so), as curl's ``--speed-limit``/``--speed-time``."""

    def __init__(self, seconds: float, *, window: float | None = None,
                 min_bytes: int = 0) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.window = window
        self.min_bytes = min_bytes
        self.received = 0
        self._mark = 0
        self.expired = False
        self.slow = False
        self.done = False
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    def progress(self, n: int) -> None:
        self.received += n

    def check_rate(self) -> bool:
        """At the end of a window: True (and the request is cut) when it brought too little."""
        got, self._mark = self.received - self._mark, self.received
        if self.done or got >= self.min_bytes:
            return False
        self.slow = True
        self.fire()
        return True

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conns.append(conn)
            conn._bundler_deadline = self

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._conns.clear()

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            conns = list(self._conns)
        for conn in conns:
            # only a connection still serving this request (not one reused by another)
            sock = getattr(conn, "sock", None)
            if getattr(conn, "_bundler_deadline", None) is self and sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Watchdog:
    """One thread firing deadlines in time order."""

    def __init__(self) -> None:
        # (when, seq, deadline, is a rate check)
        self._heap: list[tuple[float, int, Deadline, bool]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float, *, window: float | None = None,
              min_bytes: int = 0) -> Deadline:
        d = Deadline(seconds, window=window, min_bytes=min_bytes)
        with self._cv:
            heapq.heappush(self._heap, (d.at, next(self._seq), d, False))
            if window is not None:   # the first check after a grace of one window
                heapq.heappush(self._heap, (time.monotonic() + 2 * window, next(self._seq), d,
                                            True))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bundler-deadlines",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
        return d

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    if self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                        continue
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout=wait)
                _, _, d, rate = heapq.heappop(self._heap)
                if rate and d.window is not None and not d.done:
                    heapq.heappush(self._heap, (time.monotonic() + d.window, next(self._seq), d,
                                                True))
            if rate:
                d.check_rate()
            else:
                d.fire()


def set_current(deadline: Deadline | None) -> None:
    _current.deadline = deadline


def _register(conn: Any) -> None:
    d = getattr(_current, "deadline", None)
    if d is not None:
        d.attach(conn)


class _HTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _HTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections register with the sending thread's Deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
