"""Where a device reads a ring repository or bundles from: a folder (a USB stick, a mounted
share), a static HTTP(S) mirror of that folder, or an OCI registry. All answer the same two
questions, so sync does not care which it is: the bytes of a small file (metadata:
size-capped), and a large file fetched to a local path (verified against the sha256 and size
the caller expects before it appears there). A file the source does not hold raises
:class:`Missing` (the TUF client probes for the next root that way).

An HTTP mirror is the folder behind any static web server (``http(s)://HOST[:PORT]/PATH/``,
``PATH/metadata/...`` and ``PATH/targets/...`` as on the stick). Large files are resumed with
``Range`` from a partial file beside the destination (kept across runs) and retried on resets,
timeouts and 5xx (``ocidist.Client.download``); at most 5 redirects, http(s) only, never from
https to http; plain http only to loopback (``ocidist.is_loopback``) unless ``plain_http``;
https checks the server against the system CAs or ``ca_file``.

The OCI form of a folder (written by `bundle repo push` and `bundle push`, docs/fleet.md): one
OCI image manifest with ``artifactType`` ``application/vnd.k3s-airgap.folder.v1`` (or
``...bundle.v1`` for a pushed bundle), the empty config, and one layer per file whose
``org.opencontainers.image.title`` annotation is the file's path in the folder (``/``
separated). A file's sha256 is its layer digest, so what TUF metadata or a bundle index pins is
exactly what the registry serves by digest; nothing fetched is trusted for being there.
"""

import json
import os
import re
import shutil
import ssl
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

from installer.errors import ConfigError, DigestMismatch, FormatError, TransferError
from installer.format import canonjson
from installer.fsio import iter_file, write_verified
from installer.sources import ocidist

FOLDER_ARTIFACT = "application/vnd.k3s-airgap.folder.v1"
BUNDLE_ARTIFACT = "application/vnd.k3s-airgap.bundle.v1"
FILE_MEDIA_TYPE = "application/vnd.k3s-airgap.file.v1"
BUNDLE_MEDIA_TYPE = "application/vnd.k3s-airgap.bundle.v1.tar"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
# The tag a pushed ring repository gets and a device reads when the URL names none (one
# default for `bundle repo push` and `airgap-install sync --source oci://`).
DEFAULT_TAG = "latest"
_PATH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}(/[A-Za-z0-9][A-Za-z0-9._+-]{0,200})*$")
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


class Missing(TransferError):
    """The source holds no such file."""


@dataclass(frozen=True)
class Entry:
    path: str
    sha256: str
    size: int


def check_path(path: str) -> str:
    """A relative path inside a source: no ``..``, no absolute path, no dotfiles (pure)."""
    if len(path) > 1024 or not _PATH_RE.match(path) or ".." in path.split("/"):
        raise FormatError(f"{path!r} is not a valid file path in a source",
                          hint="paths are relative, '/'-separated, without '..' or dotfiles")
    return path


class FolderSource:
    """A local folder. Only regular files are read (a FIFO or a device on the stick would
    hang or lie); symlinks are not followed."""

    def __init__(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise ConfigError(f"source {folder} is not a folder")
        self.folder = folder
        self.label = folder

    def _open(self, path: str) -> int:
        full = os.path.join(self.folder, check_path(path))
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise Missing(f"{full} is not in the source folder") from None
        except OSError as e:
            raise TransferError(f"cannot open {full}: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FormatError(f"{full} is not a regular file")
        return fd

    def read(self, path: str, *, max_size: int) -> bytes:
        with os.fdopen(self._open(path), "rb") as f:
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise FormatError(f"{self.label}/{path} is over {max_size} bytes")
        return data

    def fetch(self, path: str, dest: str, *, sha256: str, size: int) -> None:
        with os.fdopen(self._open(path), "rb") as f:
            write_verified(dest, iter_file(f, limit=size + 1), sha256=sha256, size=size,
                           what=f"{self.label}/{path}")


class OciSource:
    """A folder artifact in a registry (``oci://HOST/REPO[:TAG]``, default tag ``latest``)."""

    def __init__(self, url: str, *, client: Optional[ocidist.Client] = None,
                 plain_http: bool = False, ca_file: Optional[str] = None,
                 credentials: Optional[ocidist.Credentials] = None) -> None:
        self.ref = ocidist.parse_oci_url(url)
        self.label = self.ref.url
        self.client = client or ocidist.Client(self.ref.host, plain_http=plain_http,
                                               ca_file=ca_file, credentials=credentials)
        self._entries: Optional[Dict[str, Entry]] = None

    def entries(self) -> Dict[str, Entry]:
        """Path -> entry, from the artifact manifest (fetched once)."""
        if self._entries is None:
            data, _, _ = self.client.manifest(self.ref.repository,
                                              self.ref.reference or DEFAULT_TAG)
            self._entries = parse_folder_manifest(data, what=self.label)
        return self._entries

    def _entry(self, path: str) -> Entry:
        entry = self.entries().get(check_path(path))
        if entry is None:
            raise Missing(f"{self.label} holds no file {path}",
                                hint="push the repository again with `bundle repo push`")
        return entry

    def read(self, path: str, *, max_size: int) -> bytes:
        entry = self._entry(path)
        if entry.size > max_size:
            raise FormatError(f"{self.label}/{path} is {entry.size} bytes, over {max_size}")
        # small files go through a temp file like big ones: one verified download path
        tmp_dir = tempfile.mkdtemp(prefix=".airgap-remote-")
        dest = os.path.join(tmp_dir, "blob")
        try:
            self.client.blob_to(self.ref.repository, "sha256:" + entry.sha256, entry.size,
                                dest=dest)
            with open(dest, "rb") as f:
                return f.read()
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def fetch(self, path: str, dest: str, *, sha256: str, size: int) -> None:
        entry = self._entry(path)
        if (entry.sha256, entry.size) != (sha256, size):
            raise DigestMismatch(f"{self.label}/{path} is sha256:{entry.sha256} "
                                 f"({entry.size} bytes) in the registry; the signed metadata "
                                 f"wants sha256:{sha256} ({size} bytes)",
                                 hint="the registry holds another publication: push it again")
        self.client.blob_to(self.ref.repository, "sha256:" + sha256, size, dest=dest)


class _MirrorRedirects(ocidist._Redirects):
    """The registry client's redirect rules, and plain http only to loopback (unless the
    user allowed it): a mirror on https or on loopback cannot send the device elsewhere over
    plain http."""

    def __init__(self, plain_http: bool) -> None:
        super().__init__()
        self.plain_http = plain_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = urllib.parse.urlsplit(newurl)
        if new.scheme == "http" and not self.plain_http and not ocidist.is_loopback(new.netloc):
            raise TransferError(f"{req.full_url} redirected to plain http ({newurl})",
                                hint="plain http goes only to loopback; pass --plain-http "
                                     "to allow it")
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[no-untyped-call]


class _MirrorClient(ocidist.Client):
    """``ocidist.Client``'s transport (retries, resumable verified downloads, redirect rules,
    TLS with a CA file) for a plain static server: its errors name the mirror, and a 404 is
    :class:`Missing`."""

    def __init__(self, scheme: str, host: str, *, plain_http: bool,
                 ca_file: Optional[str]) -> None:
        super().__init__(host, plain_http=plain_http, ca_file=ca_file)
        self.scheme = scheme
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _MirrorRedirects(plain_http))

    def _http_error(self, e: "urllib.error.HTTPError", url: str, what: str) -> TransferError:
        if e.code in (404, 410):
            return Missing(f"{url} does not exist (HTTP {e.code})",
                           hint="serve the whole repository folder (metadata/ and targets/) "
                                "as `bundle repo` wrote it")
        if e.code in (401, 403):
            return TransferError(f"{url} refused access (HTTP {e.code})",
                                 hint="a ring mirror is a plain static server: allow "
                                      "anonymous reads")
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
        if parts.scheme == "http" and not plain_http and not ocidist.is_loopback(parts.netloc):
            raise ConfigError(f"source {url}: plain http to {parts.hostname}, which is not "
                              "loopback",
                              hint="serve the mirror over https (--ca-file for a private "
                                   "CA), or pass --plain-http: what is fetched is verified "
                                   "either way, but http lets anyone on the path see and "
                                   "stall it")
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
        with self.client.transfer(max_size):  # one deadline, retries included (THREATS 45)
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
            self.client.narrow(resp)
            data = self.client.read_body(resp, max_size + 1, what=what)
        if len(data) > max_size:
            raise FormatError(f"{what} is over {max_size} bytes")
        return data

    def fetch(self, path: str, dest: str, *, sha256: str, size: int) -> None:
        self.client.download(self._path(path), dest, sha256=sha256, size=size,
                             what=f"{self.label}/{path}", scope="")


Source = Union[FolderSource, HttpSource, OciSource]


def parse_folder_manifest(data: bytes, *, what: str) -> Dict[str, Entry]:
    """The files of a folder artifact manifest, strictly (pure)."""
    doc = canonjson.loads_strict(data, what=f"{what} manifest")
    if not isinstance(doc, dict) or doc.get("artifactType") not in (FOLDER_ARTIFACT,
                                                                     BUNDLE_ARTIFACT):
        raise FormatError(f"{what} is not a k3s-airgap folder or bundle artifact",
                          hint="push it with `bundle repo push` or `bundle push`")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise FormatError(f"{what}: layers must be a list")
    out: Dict[str, Entry] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise FormatError(f"{what}: layer {i} is not an object")
        annotations = layer.get("annotations") or {}
        path = annotations.get(TITLE) if isinstance(annotations, dict) else None
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(path, str):
            raise FormatError(f"{what}: layer {i} has no {TITLE} annotation")
        match = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
        if match is None or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(f"{what}: layer {path!r} has a bad digest or size")
        if check_path(path) in out:
            raise FormatError(f"{what}: {path!r} is listed twice")
        out[path] = Entry(path, match.group(1), size)
    return out


def folder_manifest(entries: Dict[str, Tuple[str, int, str]], *, artifact_type: str,
                    annotations: Optional[Dict[str, str]] = None) -> bytes:
    """The manifest bytes for files ``{path: (sha256, size, media type)}``, deterministic
    (layers sorted by path), written by the builder and read back with
    :func:`parse_folder_manifest` before it is pushed."""
    empty = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # {}
    layers = [{"mediaType": media_type, "digest": "sha256:" + sha, "size": size,
               "annotations": {TITLE: check_path(path)}}
              for path, (sha, size, media_type) in sorted(entries.items())]
    doc: Dict[str, object] = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                              "artifactType": artifact_type,
                              "config": {"mediaType": EMPTY_CONFIG, "digest": empty, "size": 2},
                              "layers": layers}
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    parse_folder_manifest(data, what="the manifest to push")
    return data


def open_source(spec: str, *, plain_http: bool = False, ca_file: Optional[str] = None,
                credentials: Optional[ocidist.Credentials] = None) -> Source:
    """``oci://HOST/REPO[:TAG]``, ``http(s)://MIRROR`` or a folder path."""
    if spec.startswith("oci://"):
        return OciSource(spec, plain_http=plain_http, ca_file=ca_file, credentials=credentials)
    if spec.startswith(("http://", "https://")):
        if credentials is not None:
            raise ConfigError(f"source {spec}: registry credentials are for oci:// sources",
                              hint="a ring mirror is read anonymously")
        return HttpSource(spec, plain_http=plain_http, ca_file=ca_file)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", spec):
        raise ConfigError(f"source {spec!r}: expected a folder, http(s)://MIRROR or "
                          "oci://HOST/REPO")
    return FolderSource(spec)
