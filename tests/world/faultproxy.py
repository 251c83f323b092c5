"""A fault-injecting HTTP proxy in front of the real registry (or any loopback HTTP server).

What it does: forwards every request (method, headers incl. ``Range``, streamed body) to the
upstream and streams the answer back, unless a rule added with :meth:`FaultProxy.add_rule`
matches; then it injects one of these faults:

- ``("status", 503)``: answer that status itself (upstream never sees the request);
- ``("reset",)``: abort the TCP connection (RST) before any response byte;
  ``("reset", n)``: send the upstream headers and ``n`` body bytes, then RST;
- ``("stall", seconds)``: wait that long before relaying (clients with a shorter read timeout
  give up);
- ``("truncate", n)``: correct headers (incl. Content-Length) but close after ``n`` body bytes;
- ``("corrupt",)``: flip one byte in the middle of the body (same length, wrong digest);
- ``("slow", bytes_per_second)``: relay the body at that rate.

Each request is logged (method, path, Range header, status sent, fault applied, body bytes sent)
so tests can assert that retries and resumes happened. Thread-safe.

What it does not do: TLS towards its clients (it listens on plain http).
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Self, Sequence

from .httpbase import (
    CHUNK,
    LoopbackServer,
    QuietHandler,
    ServerLifecycle,
    drain_request_body,
    has_request_body,
    open_upstream,
    send_upstream_head,
)

FAULT_KINDS = {"status": 1, "reset": (0, 1), "stall": 1, "truncate": 1, "corrupt": 0, "slow": 1}


@dataclass
class Rule:
    """One fault rule; ``remaining`` is None for "forever"."""

    pattern: re.Pattern[str]
    fault: tuple[Any, ...]
    remaining: int | None
    method: str | None
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        return ((self.remaining is None or self.remaining > 0)
                and (self.method is None or self.method == method)
                and self.pattern.search(target) is not None)


@dataclass
class LoggedRequest:
    """What the proxy did with one request. ``status`` is None when nothing was sent.

    Appended when the request arrives and updated before each byte goes out, so a client
    that has its answer always finds the entry complete."""

    method: str
    path: str
    range: str | None
    status: int | None = None
    fault: str | None = None
    body_bytes: int = 0


def _check_fault(fault: Sequence[Any]) -> tuple[Any, ...]:
    fault = tuple(fault)
    if not fault or fault[0] not in FAULT_KINDS:
        raise ValueError(f"unknown fault {fault!r}; kinds: {sorted(FAULT_KINDS)}")
    arity = FAULT_KINDS[fault[0]]
    allowed = arity if isinstance(arity, tuple) else (arity,)
    if len(fault) - 1 not in allowed:
        raise ValueError(f"fault {fault!r} takes {arity} argument(s)")
    return fault


class FaultProxy(ServerLifecycle):
    """HTTP proxy on 127.0.0.1 with scripted faults. Attributes: ``url``, ``host``, ``port``,
    ``upstream_url``, ``connections``; see :meth:`add_rule`, :meth:`clear`, :attr:`log`."""

    def __init__(self, upstream_url: str, *, upstream_ca_file: str | None = None) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream_ca_file = upstream_ca_file
        self._rules: list[Rule] = []
        self._log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = LoopbackServer(_FaultHandler, self)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        self._stopping.clear()
        return super().start()

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled handlers
        super().stop()

    # -- rules and log ---------------------------------------------------------------------
    def add_rule(self, path_regex: str, fault: Sequence[Any], count: int | None = 1,
                 method: str | None = None) -> Rule:
        """Inject ``fault`` into the next ``count`` requests whose target (path and query)
        matches ``path_regex`` (``re.search``) and, if given, whose method is ``method``.
        Rules are tried in the order added; the first live match wins."""
        rule = Rule(re.compile(path_regex), _check_fault(fault), count,
                    method.upper() if method else None)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule and forget the log (and the connection count)."""
        with self._lock:
            self._rules.clear()
            self._log.clear()
        self._server.reset_connections()

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    @property
    def log(self) -> list[LoggedRequest]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def requests(self, path_regex: str = "", method: str | None = None) -> list[LoggedRequest]:
        """Logged requests whose path matches ``path_regex`` (and method, if given)."""
        pattern = re.compile(path_regex)
        return [r for r in self.log
                if pattern.search(r.path) and (method is None or r.method == method.upper())]

    def faults_applied(self) -> list[LoggedRequest]:
        return [r for r in self.log if r.fault is not None]

    def _take_rule(self, method: str, target: str) -> tuple[Any, ...] | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    rule.hits += 1
                    return rule.fault
        return None

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)


class _FaultHandler(QuietHandler):
    def _proxy(self) -> FaultProxy:
        return self.owner  # type: ignore[return-value]

    def _dispatch(self) -> None:
        proxy = self._proxy()
        fault = proxy._take_rule(self.command, self.path)
        kind = fault[0] if fault else None
        entry = LoggedRequest(self.command, self.path, self.headers.get("Range"), fault=kind)
        proxy._record(entry)
        if kind == "status":
            if has_request_body(self):
                drain_request_body(self)
            entry.status = int(fault[1])  # type: ignore[index]
            body = (f'{{"errors":[{{"code":"UNAVAILABLE","message":"injected {entry.status}"}}]}}'
                    .encode())
            entry.body_bytes = len(body)
            self.send_simple(entry.status, body, content_type="application/json")
            return
        if kind == "reset" and len(fault) == 1:  # type: ignore[arg-type]
            self._abort()
            return
        if kind == "stall" and proxy._stopping.wait(float(fault[1])):  # type: ignore[index]
            self._abort()
            return
        self._forward(fault, entry)

    def _forward(self, fault: tuple[Any, ...] | None, entry: LoggedRequest) -> None:
        proxy = self._proxy()
        kind = fault[0] if fault else None
        conn, resp = open_upstream(self, proxy.upstream_url, self.path,
                                   ca_file=proxy.upstream_ca_file)
        entry.status = resp.status
        sent = 0
        try:
            upstream = proxy.upstream_url

            def rewrite(location: str) -> str:
                return proxy.url + location[len(upstream):] if location.startswith(upstream) \
                    else location

            writer = send_upstream_head(self, resp, rewrite_location=rewrite)
            length = resp.getheader("Content-Length")
            limit: int | None = None
            if kind in ("truncate", "reset"):
                limit = int(fault[1])  # type: ignore[index]
            flip_at = (int(length) // 2 if length else 0) if kind == "corrupt" else -1
            rate = float(fault[1]) if kind == "slow" else 0.0  # type: ignore[index]
            piece = max(1, int(rate // 20)) if rate else CHUNK
            started = time.monotonic()
            while self.command != "HEAD":
                want = piece if limit is None else min(piece, limit - sent)
                if want <= 0:
                    break
                data = resp.read(want)
                if not data:
                    break
                if sent <= flip_at < sent + len(data):
                    i = flip_at - sent
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                if rate:
                    due = started + (sent + len(data)) / rate
                    if proxy._stopping.wait(max(0.0, due - time.monotonic())):
                        break
                sent += len(data)
                entry.body_bytes = sent
                writer.write(data)
            if kind == "reset":
                self.wfile.flush()
                self._abort()
            elif kind == "truncate":
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            else:
                writer.finish()
        finally:
            conn.close()

    def _abort(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch
