"""Overall per-request deadlines for `requests`, on top of its between-bytes timeout.

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
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self.done = False
        self._conns: list[Any] = []
        self._lock = threading.Lock()

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
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float) -> Deadline:
        d = Deadline(seconds)
        with self._cv:
            heapq.heappush(self._heap, (d.at, next(self._seq), d))
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
                _, _, d = heapq.heappop(self._heap)
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
