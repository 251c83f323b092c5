"""A hostile upstream: one stdlib HTTP server on 127.0.0.1 playing registry, chart repository
and K3s release server at once, with per-scenario content.

What it does: :class:`HostileUpstream` answers every request from a route table (exact path
-> :class:`Reply`, or a callable taking the :class:`Seen` request and returning one), on three
loopback ports: ``url`` (the main "host"), ``other_url`` (a second port: "another host") and
``tls_url`` (the same server over TLS, CA in ``ca_file``; pass ``tls`` to share one
certificate between instances, e.g. one per scenario run in parallel). :func:`baseline` is a
good upstream (a K3s release with ``install.sh`` and checksums, one single-arch OCI image
``hostile/app:1.0`` under ``/v2/``, one tiny chart ``hchart`` 1.0.0 under ``/charts/``); a
scenario copies it and overrides routes. Replies can trickle (one byte every N seconds, also
in the header block), stream forever, declare any ``Content-Length``, be cut short or
redirect. Every request is logged with its port and headers, so tests can assert where
credentials went.

What it does not do: implement the registry API beyond exact paths, or contact anything but
127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import ssl
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import yaml

from .httpbase import LoopbackServer, QuietHandler, ServerLifecycle, _Server, drain_request_body
from .oci import LayerFile, targz_bytes
from .procs import LOOPBACK
from .tls import TlsFiles, make_server_cert

K3S_VERSION = "v1.34.3+k3s1"
RELEASE_DIR = "/k3s/v1.34.3%2Bk3s1"
IMAGE_REPO, IMAGE_TAG = "hostile/app", "1.0"
CHART_NAME, CHART_VERSION = "hchart", "1.0.0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass
class Reply:
    """One answer. ``length`` overrides the Content-Length header (sent as given);
    ``endless`` streams zeros (chunked) until the client hangs up; ``trickle`` sends the body
    one byte per that many seconds."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: str | None = None
    endless: bool = False
    trickle: float = 0.0
    slow_head: float = 0.0   # > 0: the header block itself, one byte per that many seconds


@dataclass(frozen=True)
class Seen:
    port: int
    method: str
    path: str
    headers: dict[str, str]


Route = Union[Reply, Callable[[Seen], Reply]]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chart_tgz(name: str = CHART_NAME, version: str = CHART_VERSION, *,
              extra: dict[str, bytes] | None = None) -> bytes:
    """A chart archive with no templates (it renders nothing, so discovery finds nothing)."""
    meta = yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version,
                           "type": "application"}).encode()
    files = [LayerFile(f"{name}/Chart.yaml", data=meta),
             LayerFile(f"{name}/values.yaml", data=b"{}\n")]
    files += [LayerFile(p, data=d) for p, d in (extra or {}).items()]
    return targz_bytes(files, with_dirs=False)


def bomb_tgz(name: str = CHART_NAME, *, unpacked: int) -> bytes:
    """A small .tgz whose first member is ``unpacked`` zero bytes (a decompression bomb),
    followed by a valid ``<name>/Chart.yaml``."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            info = tarfile.TarInfo(f"{name}/zeros")
            info.size = unpacked
            tar.addfile(info, _Zeros(unpacked))
            meta = yaml.safe_dump({"name": name, "version": CHART_VERSION}).encode()
            info = tarfile.TarInfo(f"{name}/Chart.yaml")
            info.size = len(meta)
            tar.addfile(info, io.BytesIO(meta))
    return buf.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def index_yaml(entries: dict[str, list[dict[str, Any]]]) -> bytes:
    return yaml.safe_dump({"apiVersion": "v1", "entries": entries}).encode()


def manifest_reply(doc: Any, *, media_type: str = OCI_MANIFEST) -> Reply:
    data = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    return Reply(body=data, headers={"Content-Type": media_type,
                                     "Docker-Content-Digest": sha(data)})


def image_docs(*, config: bytes | None = None) -> tuple[bytes, bytes, bytes, bytes]:
    """(index, manifest, config, layer) bytes of the baseline single-arch image."""
    layer = targz_bytes([LayerFile("hello.txt", data=b"hello\n")])
    cfg = config if config is not None else json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                           "diff_ids": []}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(layer), "size": len(layer)}]}).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha(manifest),
                       "size": len(manifest),
                       "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    return index, manifest, cfg, layer


def registry_routes(index: bytes, manifest: bytes, cfg: bytes, layer: bytes,
                    repo: str = IMAGE_REPO, tag: str = IMAGE_TAG) -> dict[str, Route]:
    base = f"/v2/{repo}"
    return {
        f"{base}/manifests/{tag}": manifest_reply(index, media_type=OCI_INDEX),
        f"{base}/manifests/{sha(index)}": manifest_reply(index, media_type=OCI_INDEX),
        f"{base}/manifests/{sha(manifest)}": manifest_reply(manifest),
        f"{base}/blobs/{sha(cfg)}": Reply(body=cfg),
        f"{base}/blobs/{sha(layer)}": Reply(body=layer),
    }


def baseline() -> dict[str, Route]:
    """A good upstream: what a scenario starts from."""
    binary = b"#!/bin/sh\necho fake k3s\n"
    sums = f"{hashlib.sha256(binary).hexdigest()}  k3s\n".encode()
    chart = chart_tgz()
    routes: dict[str, Route] = {
        "/install.sh": Reply(body=b"#!/bin/sh\necho install\n"),
        f"{RELEASE_DIR}/sha256sum-amd64.txt": Reply(body=sums),
        f"{RELEASE_DIR}/k3s": Reply(body=binary),
        "/charts/index.yaml": Reply(body=index_yaml({CHART_NAME: [{
            "name": CHART_NAME, "version": CHART_VERSION, "apiVersion": "v2",
            "urls": [f"{CHART_NAME}-{CHART_VERSION}.tgz"],
            "digest": hashlib.sha256(chart).hexdigest()}]})),
        f"/charts/{CHART_NAME}-{CHART_VERSION}.tgz": Reply(body=chart),
    }
    routes.update(registry_routes(*image_docs()))
    return routes


class HostileUpstream(ServerLifecycle):
    """Serve ``routes`` on three loopback ports (plain, "other host", TLS)."""

    def __init__(self, tls_dir: Path, *, tls: TlsFiles | None = None) -> None:
        self.routes: dict[str, Route] = baseline()
        self._log: list[Seen] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(_Handler, self)
        self._other = LoopbackServer(_Handler, self)
        self.tls = tls or make_server_cert(tls_dir)
        self._tls = _TlsServer(_Handler, self, self.tls.cert_file, self.tls.key_file)

    def start(self) -> HostileUpstream:
        for s in (self._server, self._other, self._tls):
            s.start()
        return self

    def stop(self) -> None:
        for s in (self._server, self._other, self._tls):
            s.stop()

    @property
    def other_url(self) -> str:
        return f"http://{LOOPBACK}:{self._other.port}"

    @property
    def tls_url(self) -> str:
        return f"https://{LOOPBACK}:{self._tls.port}"

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    def other_port(self) -> int:
        return self._other.port

    def reset(self, routes: dict[str, Route]) -> None:
        with self._lock:
            self.routes = routes
            self._log.clear()

    @property
    def log(self) -> list[Seen]:
        with self._lock:
            return list(self._log)

    def _answer(self, seen: Seen) -> Reply:
        with self._lock:
            self._log.append(seen)
            route = self.routes.get(seen.path.split("?", 1)[0])
        if route is None:
            return Reply(status=404, body=b"not found\n")
        return route(seen) if callable(route) else route


class _TlsServer(LoopbackServer):
    def __init__(self, handler: Any, owner: object, cert: Path, key: Path) -> None:
        super().__init__(handler, owner)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(cert), str(key))

    def start(self) -> None:
        httpd = _Server((LOOPBACK, 0), self._handler)
        httpd.owner = self._owner
        httpd.socket = self._ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="world-hostile-tls", daemon=True)
        self._thread.start()


class _Handler(QuietHandler):
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        drain_request_body(self)
        self.do_GET()

    def do_PUT(self) -> None:
        drain_request_body(self)
        self.do_GET()

    def do_GET(self) -> None:
        owner: HostileUpstream = self.owner  # type: ignore[assignment]
        seen = Seen(self.server.server_address[1], self.command, self.path,  # type: ignore[index,arg-type]
                    dict(self.headers.items()))
        reply = owner._answer(seen)
        if reply.slow_head:
            self._slow_head(reply.slow_head)
            return
        self.send_response(reply.status)
        headers = {"Content-Type": "application/octet-stream", **reply.headers}
        if reply.endless:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = reply.length or str(len(reply.body))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if reply.endless:
                chunk = b"\0" * 65536
                frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
                while True:
                    self.wfile.write(frame)
            elif reply.trickle:
                for i in range(len(reply.body)):
                    self.wfile.write(reply.body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(reply.trickle)
            else:
                self.wfile.write(reply.body)
            if reply.length and reply.length.isdigit() and int(reply.length) > len(reply.body):
                self.close_connection = True  # a body cut short: hang up
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def _slow_head(self, interval: float) -> None:
        """A status line, then a header that never ends (one byte per ``interval``)."""
        self.close_connection = True
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(10_000):
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(interval)
        except (ConnectionError, TimeoutError, OSError):
            return
