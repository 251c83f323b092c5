"""An HTTP forward proxy on 127.0.0.1 (what ``http_proxy=`` points at on a site network):
takes absolute-URI requests (``GET http://host:port/path``), relays them with
``httpbase.relay`` and logs every URL. Only loopback upstreams are forwarded (anything else is
answered 403 and logged), so nothing leaves the machine."""

from __future__ import annotations

import threading
import urllib.parse

from installer.sources.ocidist import is_loopback

from .httpbase import LoopbackServer, QuietHandler, ServerLifecycle, relay


class _ProxyHandler(QuietHandler):
    def _forward(self) -> None:
        proxy: ForwardProxy = self.owner  # type: ignore[assignment]
        parts = urllib.parse.urlsplit(self.path)
        proxy.record(self.command, self.path)
        if parts.scheme != "http" or not parts.hostname or not is_loopback(parts.netloc):
            self.send_simple(403, b"this proxy forwards to loopback only\n")
            return
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        relay(self, f"http://{parts.netloc}", path)

    do_GET = do_HEAD = _forward


class ForwardProxy(ServerLifecycle):
    """``url`` is what to put in ``http_proxy``; ``log`` lists ``(method, absolute URL)``."""

    def __init__(self) -> None:
        self._log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(_ProxyHandler, self)

    def record(self, method: str, url: str) -> None:
        with self._lock:
            self._log.append((method, url))

    @property
    def log(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._log)
