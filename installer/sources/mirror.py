"""A folder behind a static HTTP(S) server as a source (``http(s)://HOST[:PORT]/PATH/``,
``PATH/metadata/...`` and ``PATH/targets/...`` as on the stick). Large files are resumed with
``Range`` from a partial file beside the destination (kept across runs) and retried on resets,
timeouts and 5xx (``ocidist.Client.download``); at most 5 redirects, http(s) only, never from
https to http (not even to loopback); plain http only when the mirror and any proxy on the way
are loopback (``regauth.clear_route_refusal``) unless ``plain_http``; https checks the server
against the system CAs or ``ca_file``."""

import os
import time
import urllib.error
import urllib.parse
from typing import Optional

from installer.errors import ConfigError, FormatError, TransferError
from installer.sources import ocidist
from installer.sources.base import Missing, Options, Source, check_path


class _MirrorClient(ocidist.Client):
    """``ocidist.Client``'s transport (retries, resumable verified downloads, the route and
    redirect rules of ``regauth``, checked before any connection; TLS with a CA file) for a
    plain static server: its errors name the mirror, a 404 is :class:`Missing`, and a
    refusal never asks for the registry credentials a mirror does not take."""

    credentials_hint = "a ring mirror is a plain static server: allow anonymous reads"

    def __init__(self, scheme: str, host: str, *, plain_http: bool,
                 ca_file: Optional[str]) -> None:
        super().__init__(host, plain_http=plain_http, ca_file=ca_file, scheme=scheme)

    def _http_error(self, e: "urllib.error.HTTPError", url: str, what: str) -> TransferError:
        if e.code in (404, 410):
            return Missing(f"{url} does not exist (HTTP {e.code})",
                           hint="serve the whole repository folder (metadata/ and targets/) "
                                "as `bundle repo` wrote it")
        if e.code in (401, 403):
            return TransferError(f"{url} refused access (HTTP {e.code})",
                                 hint=self.credentials_hint)
        return super()._http_error(e, url, what)


class HttpSource:
    """A folder behind a static HTTP(S) server (``http(s)://HOST[:PORT]/PATH``)."""

    def __init__(self, url: str, *, plain_http: bool = False,
                 ca_file: Optional[str] = None, timeout: float = 60.0) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            raise ConfigError(f"source {url!r}: {e}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
                or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"source {url!r} is not an http(s)://HOST[:PORT]/PATH URL",
                              hint="give the URL of the repository folder, without query, "
                                   "fragment or credentials")
        if ca_file is not None and not os.path.isfile(ca_file):
            raise ConfigError(f"--ca-file {ca_file} does not exist")
        self.label = url.rstrip("/")
        self.base = parts.path.rstrip("/")
        self.client = _MirrorClient(parts.scheme, parts.netloc, plain_http=plain_http,
                                    ca_file=ca_file)
        self.client.timeout = timeout

    def _path(self, path: str) -> str:
        return self.base + "/" + urllib.parse.quote(check_path(path), safe="/")

    def read(self, path: str, *, max_size: int) -> bytes:
        what = f"{self.label}/{path}"
        with self.client.deadline.transfer(max_size):  # one deadline, retries included (THREATS 45)
            for attempt in range(ocidist.ATTEMPTS):
                try:
                    return self._read_once(path, max_size=max_size, what=what)
                except ocidist.Unavailable:
                    if attempt == ocidist.ATTEMPTS - 1:
                        raise
                    time.sleep(min(5.0, 0.25 * 2 ** attempt))
        raise AssertionError("unreachable")

    def _read_once(self, path: str, *, max_size: int, what: str) -> bytes:
        resp = self.client.request(self._path(path), what=what, scope="")
        with resp:
            length = resp.headers.get("Content-Length") or ""
            if length.isdigit() and int(length) > max_size:
                raise FormatError(f"{what} is {length} bytes, over {max_size}")
            self.client.deadline.narrow(resp)
            data = self.client.deadline.read_body(resp, max_size + 1, what=what)
        if len(data) > max_size:
            raise FormatError(f"{what} is over {max_size} bytes")
        return data

    def fetch(self, path: str, dest: str, *, sha256: str, size: int) -> None:
        self.client.download(self._path(path), dest, sha256=sha256, size=size,
                             what=f"{self.label}/{path}", scope="")


def open_mirror(spec: str, options: Options) -> Source:
    if options.credentials is not None:
        raise ConfigError(f"source {spec}: registry credentials are for oci:// sources",
                          hint="a ring mirror is read anonymously")
    return HttpSource(spec, plain_http=options.plain_http, ca_file=options.ca_file)
