"""Static HTTP server with Range support, serving the K3s release, install.sh and a Helm repo.

What it does: :class:`StaticServer` serves a folder over GET and HEAD on 127.0.0.1
(``ThreadingHTTPServer``), with single ranges ``bytes=N-``, ``bytes=N-M`` and ``bytes=-S``
(206 + ``Content-Range``; 416 + ``Content-Range: bytes */size`` when unsatisfiable),
``ETag``/``If-Range``, percent-decoded paths (``v1.34.3%2Bk3s1`` is ``v1.34.3+k3s1`` on disk)
and a request log. :class:`ReleaseServer` lays out, under its root:

- ``/k3s/<version>/<asset>``: K3s releases (``releases_url`` = ``<url>/k3s``), see ``k3s.py``;
- ``/install.sh``: the stand-in for https://get.k3s.io;
- ``/charts/``: a Helm HTTP repository (``index.yaml`` + ``.tgz``), see ``charts.py``.

What it does not do: multi-range responses (a ``Range`` with several ranges is answered 200
with the whole file, which RFC 9110 allows), directory listings, or faults (put a
``FaultProxy`` in front).
"""

from __future__ import annotations

import mimetypes
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .charts import ChartArchive, demo_app, write_chart_repo
from .httpbase import CHUNK, LoopbackServer, QuietHandler, ServerLifecycle
from .k3s import K3S_VERSION, K3sRelease, make_k3s_release, write_install_script

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Served:
    """One logged request: what was asked and what was answered. Appended on arrival and
    updated before bytes go out, so a client holding its answer finds the entry complete."""

    method: str
    path: str
    range: str | None
    status: int | None = None
    body_bytes: int = 0


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """``(first, last)`` inclusive for a satisfiable single range, ``None`` to serve the whole
    file (no/invalid/multi range), ``"unsatisfiable"`` for a 416."""
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix: last S bytes
        suffix = int(match[2])
        if suffix == 0:
            return "unsatisfiable"
        return (max(0, size - suffix), size - 1) if size else "unsatisfiable"
    first = int(match[1])
    last = int(match[2]) if match[2] else size - 1
    if match[2] and last < first:
        return None  # syntactically invalid: ignore the header
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


class StaticServer(ServerLifecycle):
    """Serve ``root`` on ``http://127.0.0.1:<port>``. Attributes: ``url``, ``host``,
    ``port``, ``root``, ``connections``, :attr:`log`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._log: list[Served] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(_StaticHandler, self)


    @property
    def log(self) -> list[Served]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
        self._server.reset_connections()

    def resolve(self, url_path: str) -> Path | None:
        """The file a URL path names, or None (outside the root, missing, or a folder)."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
        candidate = (self.root / path.lstrip("/")).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            return None
        return candidate if candidate.is_file() else None

    def _record(self, entry: Served) -> None:
        with self._lock:
            self._log.append(entry)


class _StaticHandler(QuietHandler):
    def _static(self) -> StaticServer:
        return self.owner  # type: ignore[return-value]

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        server = self._static()
        wanted = self.headers.get("Range")
        entry = Served(self.command, self.path, wanted)
        server._record(entry)
        path = server.resolve(self.path)
        if path is None:
            entry.status = 404
            self.send_simple(404, b"not found\n")
            return
        stat = path.stat()
        size = stat.st_size
        etag = f'"{size:x}-{stat.st_mtime_ns:x}"'
        if_range = self.headers.get("If-Range")
        span = parse_range(wanted, size) if not if_range or if_range == etag else None
        headers = {"Accept-Ranges": "bytes", "ETag": etag,
                   "Last-Modified": self.date_time_string(int(stat.st_mtime))}
        if span == "unsatisfiable":
            entry.status = 416
            self.send_simple(416, b"", headers={**headers,
                                                "Content-Range": f"bytes */{size}"})
            return
        if isinstance(span, tuple):
            first, last = span
            entry.status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        else:
            first, last = 0, size - 1
            entry.status = 200
        self.send_response(entry.status)
        self.send_header("Content-Type", _content_type(path))
        self.send_header("Content-Length", str(last - first + 1))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as src:
            src.seek(first)
            remaining = last - first + 1
            while remaining > 0:
                data = src.read(min(CHUNK, remaining))
                if not data:
                    break
                remaining -= len(data)
                entry.body_bytes += len(data)
                self.wfile.write(data)


def _content_type(path: Path) -> str:
    if path.suffix in (".yaml", ".yml"):
        return "application/x-yaml"
    if path.suffix in (".txt", ".sh"):
        return "text/plain; charset=utf-8"
    guessed = mimetypes.guess_type(path.name)[0]
    return guessed if guessed and path.suffix in (".json", ".tgz", ".gz") else \
        "application/octet-stream"


class ReleaseServer(StaticServer):
    """The K3s release host + get.k3s.io + a Helm chart repository, on one loopback port.

    URLs: ``releases_url`` (``<url>/k3s``), ``install_script_url`` (``<url>/install.sh``),
    ``charts_url`` (``<url>/charts``); ``asset_url(version, asset)``. Content is added with
    :meth:`add_k3s_release`, :meth:`add_charts`; ``releases`` maps version -> K3sRelease.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.releases: dict[str, K3sRelease] = {}
        self.charts: list[ChartArchive] = []
        self.install_script = write_install_script(self.root / "install.sh")

    @property
    def releases_url(self) -> str:
        return f"{self.url}/k3s"

    @property
    def install_script_url(self) -> str:
        return f"{self.url}/install.sh"

    @property
    def charts_url(self) -> str:
        return f"{self.url}/charts"

    def folder_url(self, folder: str) -> str:
        """Releases base URL of another release folder (e.g. one holding broken releases)."""
        return f"{self.url}/{folder}"

    def asset_url(self, version: str, asset: str, *, folder: str = "k3s") -> str:
        return f"{self.folder_url(folder)}/{version.replace('+', '%2B')}/{asset}"

    def add_k3s_release(self, version: str = K3S_VERSION, *, folder: str = "k3s",
                        **knobs: Iterable[str]) -> K3sRelease:
        """Write a release under ``/<folder>/<version>/``; ``knobs`` are
        :func:`make_k3s_release`'s (``omit_checksum``, ``wrong_checksum``, ``omit_assets``,
        ``arches``, ``images``). A broken release is best put under another ``folder`` so the
        good one stays intact for other tests."""
        release = make_k3s_release(self.root / folder, version, **knobs)  # type: ignore[arg-type]
        if folder == "k3s":
            self.releases[version] = release
        return release

    def add_charts(self, charts: Iterable[ChartArchive] | None = None) -> list[ChartArchive]:
        """(Re)write ``/charts/`` with these charts added (default: demo-app 0.1.0, 0.2.0)."""
        new = list(charts) if charts is not None else [demo_app("0.1.0"), demo_app("0.2.0")]
        keep = {(c.name, c.version): c for c in [*self.charts, *new]}
        self.charts = list(keep.values())
        write_chart_repo(self.root / "charts", self.charts)
        return new

