"""Shared plumbing for the in-process HTTP servers of the test world.

What it does: runs a ``ThreadingHTTPServer`` on a free 127.0.0.1 port in a daemon thread
(:class:`LoopbackServer`), counts TCP connections (tests assert connection reuse), reads request
bodies (Content-Length or chunked) as a stream, and forwards one request to an upstream HTTP(S)
server, relaying its response head and body without buffering whole bodies.

What it does not do: decide anything (auth, faults): the handlers in ``tokenauth.py``,
``faultproxy.py`` and ``release.py`` do.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator, Self

from .procs import LOOPBACK

CHUNK = 64 * 1024
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailers", "transfer-encoding", "upgrade", "host", "expect"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    owner: object = None
    connections = 0
    _count_lock = threading.Lock()

    def process_request(self, request: object, client_address: object) -> None:
        with self._count_lock:
            self.connections += 1
        super().process_request(request, client_address)  # type: ignore[arg-type]

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up (the point of several faults) are not errors worth a traceback.
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError, socket.timeout)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive) handler base that does not print an access log to stderr."""

    protocol_version = "HTTP/1.1"
    server_version = "world/1"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        return

    @property
    def owner(self) -> object:
        return self.server.owner  # type: ignore[attr-defined]

    def send_simple(self, status: int, body: bytes = b"", *, content_type: str = "text/plain",
                    headers: dict[str, str] | None = None) -> None:
        """Send a complete small response with a Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ServerLifecycle:
    """Lifecycle and address of a server object that owns a ``LoopbackServer`` as
    ``self._server``: start/stop, context manager, ``port``, ``host``, ``url``,
    ``connections``. Subclasses add their own behaviour around ``start``/``stop``."""

    _server: LoopbackServer

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def connections(self) -> int:
        return self._server.connections


class LoopbackServer:
    """A handler class served on ``127.0.0.1:<free port>`` from a background thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: object) -> None:
        self._handler = handler
        self._owner = owner
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        httpd = _Server((LOOPBACK, 0), self._handler)
        httpd.owner = self._owner
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"world-{type(self._owner).__name__}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return int(self._httpd.server_address[1])

    @property
    def connections(self) -> int:
        return self._httpd.connections if self._httpd else 0

    def reset_connections(self) -> None:
        if self._httpd is not None:
            with self._httpd._count_lock:
                self._httpd.connections = 0


def iter_request_body(handler: BaseHTTPRequestHandler) -> Iterator[bytes]:
    """Yield the request body in pieces, de-chunking ``Transfer-Encoding: chunked``."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        while True:
            size_line = handler.rfile.readline(1024)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            remaining = size
            while remaining:
                data = handler.rfile.read(min(remaining, CHUNK))
                if not data:
                    raise ConnectionError("client closed mid-chunk")
                remaining -= len(data)
                yield data
            handler.rfile.readline(16)
    remaining = int(handler.headers.get("Content-Length") or 0)
    while remaining:
        data = handler.rfile.read(min(remaining, CHUNK))
        if not data:
            raise ConnectionError("client closed mid-body")
        remaining -= len(data)
        yield data


def has_request_body(handler: BaseHTTPRequestHandler) -> bool:
    return ("chunked" in handler.headers.get("Transfer-Encoding", "").lower()
            or int(handler.headers.get("Content-Length") or 0) > 0)


def drain_request_body(handler: BaseHTTPRequestHandler) -> None:
    for _ in iter_request_body(handler):
        pass


def open_upstream(handler: BaseHTTPRequestHandler, upstream_url: str, path: str, *,
                  drop_headers: frozenset[str] = frozenset(), ca_file: str | None = None,
                  timeout: float = 60.0) -> tuple[http.client.HTTPConnection,
                                                  http.client.HTTPResponse]:
    """Send the handler's request (method, headers, streamed body) to ``upstream_url + path``.

    Returns the open connection and the response whose body is still unread; the caller
    closes the connection.
    """
    parts = urllib.parse.urlsplit(upstream_url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca_file)
        conn = http.client.HTTPSConnection(parts.hostname or LOOPBACK, parts.port,
                                           timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(parts.hostname or LOOPBACK, parts.port,
                                          timeout=timeout)
    # putheader, not a dict: Go clients send several Accept lines and all must reach upstream
    conn.putrequest(handler.command, path, skip_accept_encoding=True)
    for key, value in handler.headers.items():
        if key.lower() not in HOP_BY_HOP and key.lower() not in drop_headers:
            conn.putheader(key, value)
    chunked = "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    if chunked or int(handler.headers.get("Content-Length") or 0) > 0:
        for piece in iter_request_body(handler):
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
        if chunked:
            conn.send(b"0\r\n\r\n")
    return conn, conn.getresponse()


class BodyWriter:
    """Writes a response body either raw (known length) or chunked (unknown length)."""

    def __init__(self, handler: BaseHTTPRequestHandler, chunked: bool) -> None:
        self.handler = handler
        self.chunked = chunked

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.chunked:
            self.handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            self.handler.wfile.write(data)

    def finish(self) -> None:
        if self.chunked:
            self.handler.wfile.write(b"0\r\n\r\n")
        self.handler.wfile.flush()


def send_upstream_head(handler: BaseHTTPRequestHandler, resp: http.client.HTTPResponse, *,
                       rewrite_location: Callable[[str], str] | None = None,
                       extra_headers: dict[str, str] | None = None) -> BodyWriter:
    """Relay the upstream status line and end-to-end headers; return a body writer."""
    handler.send_response(resp.status, resp.reason)
    length = resp.getheader("Content-Length")
    bodiless = handler.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
    for key, value in resp.getheaders():
        low = key.lower()
        if low in HOP_BY_HOP or low in ("server", "date"):
            continue
        if low == "location" and rewrite_location is not None:
            value = rewrite_location(value)
        handler.send_header(key, value)
    for key, value in (extra_headers or {}).items():
        handler.send_header(key, value)
    chunked = length is None and not bodiless
    if chunked:
        handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    return BodyWriter(handler, chunked)


def relay(handler: BaseHTTPRequestHandler, upstream_url: str, path: str, *,
          drop_headers: frozenset[str] = frozenset(),
          rewrite_location: Callable[[str], str] | None = None,
          ca_file: str | None = None, on_status: Callable[[int], None] | None = None) -> int:
    """Forward one request upstream and stream the answer back; return the status.
    ``on_status`` is called with the status before any byte goes back to the client."""
    conn, resp = open_upstream(handler, upstream_url, path, drop_headers=drop_headers,
                               ca_file=ca_file)
    if on_status is not None:
        on_status(resp.status)
    try:
        writer = send_upstream_head(handler, resp, rewrite_location=rewrite_location)
        if handler.command != "HEAD":
            while data := resp.read(CHUNK):
                writer.write(data)
        writer.finish()
        return resp.status
    finally:
        conn.close()
