"""Images from the local Docker engine (``docker-daemon:NAME:TAG`` in bundles.toml).

Through the docker SDK (``docker.from_env()``: ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and
``DOCKER_CERT_PATH`` honoured; the API version is negotiated). An engine image has one
platform; its inspect data (``Os``/``Architecture``/``Variant``) is checked against every arch
of the bundle before anything is exported, then its config again.

The image is exported by its ID (``GET /images/<id>/get``, what ``docker save`` does), so a tag
moved meanwhile cannot mix two images. The export tar is streamed: each file is hashed on its
way into the builder's one content store (``bundler.fetch.cache.ContentStore``), never held in
memory. From it an OCI image manifest is synthesized, canonical JSON:

- config: the engine's config bytes unchanged (``application/vnd.oci.image.config.v1+json``),
  so its digest is the image ID;
- layers: the uncompressed layer tars as the engine exports them
  (``application/vnd.oci.image.layer.v1.tar``), whose sha256 must be the config's
  ``rootfs.diff_ids``, in order.

Same engine content -> same manifest bytes -> same bundle bytes; an engine that pulled the
same image from a registry exports the same config and layer bytes (the engine rebuilds each
layer tar exactly, tar-split). The lock records the synthesized manifest's digest; ``build``
uses the cached blobs, or exports again and refuses when the engine now holds other content.
"""

from __future__ import annotations

import errno
import io
import json
import os
import posixpath
import re
import secrets
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from bundler.errors import DriftError, FetchError, LocalError, NotFoundError, UpstreamError
from bundler.fetch.cache import ContentStore
from bundler.fetch.imagesource import ImageSource, frozen_refusal
from bundler.fetch.oci import OCI_MANIFEST, Fetched
from bundler.limits import Limits, human
from bundler.spec import platforms
from bundler.spec.lockfile import ImageLock, PlatformLock
from bundler.spec.refs import ImageRef
from installer.format import canonjson
from installer.fsio import adopt_verified, iter_file, write_verified

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DEFAULT_HOST = "unix:///var/run/docker.sock"
# Seconds the engine may stay silent. Docker 20.10 writes the whole export to a temp folder
# before its first byte (daemon/images tarexport), so a large image is slow to start.
ENGINE_TIMEOUT = 900
# files of a `docker save` tar that are not content: small metadata, never stored
_SKIP_NAMES = {"repositories", "index.json", "oci-layout"}
_SKIP_BASENAMES = {"VERSION", "json"}


def engine_host() -> str:
    """The engine the SDK talks to, for messages."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


@dataclass(frozen=True)
class Exported:
    """An engine image as the bundle carries it: the synthesized manifest (in the store)."""

    manifest: bytes
    digest: str
    config: str        # the image ID
    platform: platforms.Platform


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for ``tarfile`` stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _platform_of(attrs: dict[str, Any]) -> platforms.Platform:
    return platforms.Platform(str(attrs.get("Os") or attrs.get("os") or ""),
                              str(attrs.get("Architecture") or attrs.get("architecture") or ""),
                              str(attrs.get("Variant") or attrs.get("variant") or ""))


def check_arches(found: platforms.Platform, arches: Iterable[str], *, what: str) -> None:
    """Refuse an engine image that is not for every arch of the bundle."""
    wrong = [a for a in arches if not platforms.matches(found, a)]
    if wrong:
        want = ", ".join(str(platforms.ARCH_PLATFORMS[a]) for a in wrong)
        raise UpstreamError(
            f"{what}: the Docker engine holds it for {found or 'an unknown platform'} only, "
            f"not for {want} (an engine image has one platform)",
            hint=f"pull or build it for that platform (`docker pull --platform "
                 f"{platforms.ARCH_PLATFORMS[wrong[0]]} ...`), or remove "
                 f"{', '.join(wrong)} from the bundle's arch list")


class EngineSource(ImageSource):
    """The Docker engine as an image source. Thread-safe: one export per image per run."""

    def __init__(self, store: ContentStore, limits: Limits, *, frozen: bool = False) -> None:
        self.store = store
        self.limits = limits
        self.frozen = frozen
        self._client: Any = None
        self._lock = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}
        self._exports: dict[str, Exported] = {}
        self._added: set[str] = set()   # digests an export put into the store in this run

    # ---------------------------------------------------------------- engine

    def client(self) -> Any:
        import docker  # late: only a spec naming docker-daemon: images needs the SDK
        with self._lock:
            if self._client is None:
                try:
                    self._client = docker.from_env(timeout=ENGINE_TIMEOUT)
                    self._client.ping()
                except docker.errors.DockerException as e:
                    self._client = None
                    raise LocalError(
                        f"cannot reach the Docker engine at {engine_host()}: {str(e)[:300]}",
                        hint="start the Docker engine, or point DOCKER_HOST at it "
                             "(e.g. DOCKER_HOST=unix:///run/docker.sock)") from None
            return self._client

    def _inspect(self, ref: ImageRef, *, what: str) -> Any:
        import docker  # late: only docker-daemon: images need the SDK
        try:
            return _EngineImage(self.client().api, self._inspect_attrs(ref, what=what))
        except docker.errors.ImageNotFound:
            raise NotFoundError(
                f"{what}: no image {ref.runtime_name} in the Docker engine at {engine_host()}",
                hint=f"build or pull it there first (`docker build -t {ref.runtime_name} .` or "
                     f"`docker pull {ref.runtime_name}`), or fix the name in bundles.toml"
            ) from None
        except docker.errors.DockerException as e:
            raise FetchError(f"{what}: the Docker engine at {engine_host()} failed: "
                                f"{str(e)[:300]}", hint="retry; check the engine's log") from None

    def _inspect_attrs(self, ref: ImageRef, *, what: str) -> dict[str, Any]:
        """``GET /images/NAME/json`` read through a bounded reader (the SDK's
        ``images.get`` buffers any answer whole): over the ``config`` cap is exit 3."""
        import docker  # late: only docker-daemon: images need the SDK
        api = self.client().api
        # the SDK's own URL builder (private, stable since docker-py 1.x): version prefix
        url = api._url("/images/{0}/json", ref.runtime_name)
        with api.get(url, stream=True) as res:
            if res.status_code == 404:
                raise docker.errors.ImageNotFound(ref.runtime_name)
            if res.status_code != 200:
                raise docker.errors.APIError(f"HTTP {res.status_code} for {url}")
            data = _read_bounded(res, self.limits.config,
                                 what=f"{what}: the engine's inspect answer")
        return _json_object(data, what=f"{what}: the engine's inspect answer")

    # ---------------------------------------------------------------- lock and build

    def lock(self, ref: ImageRef, arches: tuple[str, ...], *, what: str) -> ImageLock:
        """Lock time: one platform, which must be every arch's; its synthesized OCI manifest
        is what the lock pins, for each arch (a lookup by tag: refused with ``--frozen``)."""
        if self.frozen:
            raise frozen_refusal(what)
        found = self.resolve(ref, arches, what=what)
        plat = PlatformLock(digest=found.digest, size=len(found.manifest),
                            media_type=OCI_MANIFEST, config=found.config)
        return ImageLock(ref=str(ref), digest=found.digest, media_type=OCI_MANIFEST,
                         platforms={a: plat for a in arches})

    def resolve(self, ref: ImageRef, arches: Iterable[str], *, what: str) -> Exported:
        """The engine's image for every arch of the bundle, exported now."""
        arches = tuple(arches)
        image = self._inspect(ref, what=what)
        check_arches(_platform_of(image.attrs), arches, what=what)
        exported = self._export(ref, what=what, image=image)
        check_arches(exported.platform, arches, what=f"{what} (its config)")
        return exported

    def manifest(self, ref: ImageRef, digest: str, *, size: int, what: str) -> Fetched:
        """Build time: the locked synthesized manifest, from the store or a new export that
        must give the same digest."""
        self.limits.check_size("manifest", size, what=what, source="the lock")
        cached = self.store.lookup(digest, size)
        if cached is None:
            self._locked_export(ref, digest, what=what)
            cached = self.store.path(digest)
        return Fetched(cached.read_bytes(), digest)

    def blob(self, ref: ImageRef, *, manifest: str, digest: str, declared: object,
             what: str, kind: str) -> Path:
        """Build time: a blob of the locked image, from the store or a new export."""
        size = self.limits.check_size(kind, declared, what=what, source="the lock")
        hit = self.store.lookup(digest, size)
        if hit is None:
            self._locked_export(ref, manifest, what=what)
            hit = self.store.lookup(digest, size)
        if hit is None:
            raise UpstreamError(f"{what}: the Docker engine's export of {ref.runtime_name} "
                                f"has no blob {digest}", hint="re-run `bundle lock --update "
                                f"{ref}` and build again")
        return hit

    def _locked_export(self, ref: ImageRef, digest: str, *, what: str) -> None:
        try:
            exported = self._export(ref, what=what)
        except NotFoundError as e:
            raise NotFoundError(f"{e.message} (bundles.lock pins {digest}, not in the cache)",
                                hint=e.hint) from None
        if exported.digest != digest:
            raise DriftError(
                f"{what}: the Docker engine's {ref.runtime_name} changed since bundles.lock was "
                f"written (locked manifest {digest}, the engine's image {exported.config} "
                f"gives {exported.digest})",
                hint=f"run `bundle lock --update {ref}` to pin what the engine holds now, or "
                     "put the locked image back into the engine")

    def _export(self, ref: ImageRef, *, what: str, image: Any = None) -> Exported:
        key = str(ref)
        with self._lock:
            lock = self._image_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._exports:
                self._exports[key] = self._export_now(
                    ref, image if image is not None else self._inspect(ref, what=what),
                    what=what)
            return self._exports[key]

    # ---------------------------------------------------------------- the export stream

    def _export_now(self, ref: ImageRef, image: Any, *, what: str) -> Exported:
        import docker  # late: only docker-daemon: images need the SDK
        import requests  # late, with the SDK whose errors it names
        import urllib3  # late, with the SDK whose errors it names
        image_id = str(image.id)
        try:
            guard = _ExportGuard(self.limits, what=what, expected=image.attrs.get("Size"))
            files, links, index = self._stream_into_store(guard.chunks(image.save()),
                                                          what=what)
        except (docker.errors.DockerException, requests.RequestException,
                urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
            raise FetchError(f"{what}: exporting {image_id} from the Docker engine at "
                                f"{engine_host()} failed: {str(e)[:300]}",
                                hint="retry; check the engine's log") from None
        except tarfile.TarError as e:
            raise UpstreamError(f"{what}: the Docker engine's export of {image_id} is not a "
                                f"valid tar: {str(e)[:200]}") from None

        def member(name: object) -> tuple[str, int]:
            path = posixpath.normpath(str(name))
            for _ in range(8):  # `docker save` writes a repeated layer as a symlink
                if path not in links:
                    break
                path = links[path]
            if path not in files:
                raise UpstreamError(f"{what}: the engine's export names {str(name)[:200]!r} "
                                    "but does not contain it")
            return files[path]

        config_digest, config_size = member(index["Config"])
        layer_files = [member(name) for name in index["Layers"]]
        self._forget_unreferenced(files, keep={config_digest, *(d for d, _ in layer_files)})
        if config_digest != image_id:
            raise UpstreamError(f"{what}: the engine exported config {config_digest} for image "
                                f"{image_id}", hint="the image changed during the export; "
                                "retry")
        self.limits.check_size("config", config_size, what=what, source="the engine's export")
        config = _json_object(self.store.path(config_digest).read_bytes(),
                              what=f"{what}: image config {config_digest}")
        layers = layer_files
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if diff_ids != [d for d, _ in layers]:
            raise UpstreamError(f"{what}: the engine's layer tars do not hash to the config's "
                                f"rootfs.diff_ids (image {image_id})",
                                hint="the engine's storage is damaged; re-pull or rebuild the "
                                     "image")
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                          "size": config_size},
               "layers": [{"mediaType": OCI_LAYER_TAR, "digest": d, "size": s}
                          for d, s in layers]}
        data = canonjson.encode(doc)
        digest = self._put([data], what=f"{what}: manifest")[0]
        return Exported(data, digest, config_digest, platforms.Platform(
            str(config.get("os", "")), str(config.get("architecture", "")),
            str(config.get("variant", "") or "")))

    def _stream_into_store(self, chunks: Iterable[bytes], *, what: str
                           ) -> tuple[dict[str, tuple[str, int]], dict[str, str], dict[str, Any]]:
        """Every content file of the export into the store, as it streams by. Returns
        ``(path -> (digest, size), link path -> target path, manifest.json entry)``."""
        files: dict[str, tuple[str, int]] = {}
        links: dict[str, str] = {}
        index: bytes | None = None
        with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|") as tar:
            for m in tar:
                name = posixpath.normpath(m.name)
                if m.issym():
                    links[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name),
                                                                    m.linkname))
                    continue
                if m.islnk():
                    links[name] = posixpath.normpath(m.linkname)
                    continue
                if not m.isreg() or name in _SKIP_NAMES or \
                        posixpath.basename(name) in _SKIP_BASENAMES:
                    continue
                f = tar.extractfile(m)
                assert f is not None
                if name == "manifest.json":
                    self.limits.check_size("manifest", m.size, what=f"{what}: manifest.json",
                                           source="the engine's export")
                    index = f.read(m.size)
                    continue
                self.limits.check_size("layer", m.size, what=f"{what}: {name[:200]}",
                                       source="the engine's export")
                files[name] = self._put(iter_file(cast(BinaryIO, f), limit=m.size),
                                        what=f"{what}: {name}")
        if index is None:
            raise UpstreamError(f"{what}: the Docker engine's export has no manifest.json")
        entries = _json_any(index, what=f"{what}: the export's manifest.json")
        if not (isinstance(entries, list) and len(entries) == 1
                and isinstance(entries[0], dict) and isinstance(entries[0].get("Config"), str)
                and isinstance(entries[0].get("Layers"), list)):
            raise UpstreamError(f"{what}: the export's manifest.json is not one image entry "
                                "with Config and Layers")
        return files, links, entries[0]

    def _forget_unreferenced(self, files: dict[str, tuple[str, int]], *,
                             keep: set[str]) -> None:
        """Drop from the store what this export added but its manifest.json does not name."""
        for digest, _ in files.values():
            if digest not in keep and digest in self._added:
                self.store.path(digest).unlink(missing_ok=True)

    def _put(self, chunks: Iterable[bytes], *, what: str) -> tuple[str, int]:
        """Hash ``chunks`` into a temp file, then into the store by their digest."""
        tmp = self.store.partial / f"daemon-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            sha, size = write_verified(tmp, chunks, what=what, durable=False)
            digest = "sha256:" + sha
            if self.store.lookup(digest, size) is not None:
                tmp.unlink()
            else:
                self._added.add(digest)
                adopt_verified(tmp, self.store.path(digest), sha256=sha, size=size, what=what,
                               hashed=sha, durable=False)
            return digest, size
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise self.store.full(f"exporting {what}") from None
            raise
        finally:
            tmp.unlink(missing_ok=True)


class _EngineImage:
    """What the builder uses of an engine image: its inspect data and its export stream
    (``GET /images/ID/get``, what ``docker save`` does, as raw chunks)."""

    def __init__(self, api: Any, attrs: dict[str, Any]) -> None:
        self.api = api
        self.attrs = attrs
        self.id = str(attrs.get("Id", ""))

    def save(self) -> Iterator[bytes]:
        res = self.api.get(self.api._url("/images/{0}/get", self.id), stream=True)
        with res:
            self.api._raise_for_status(res)
            while chunk := res.raw.read1(1 << 20, decode_content=False):  # what has arrived
                yield chunk


def _read_bounded(res: Any, cap: int, *, what: str) -> bytes:
    """A whole answer of the engine, refused past ``cap`` (declared or read)."""
    declared = res.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise UpstreamError(f"{what}: {declared} bytes, over the cap of {cap}")
    data = res.raw.read(cap + 1, decode_content=False)
    if len(data) > cap:
        raise UpstreamError(f"{what}: more than the cap of {cap} bytes")
    return bytes(data)


TAR_BLOCK = 512
MAX_TAR_HEADER = 64 * 1024    # a GNU long name/link or pax header: Docker's are a few bytes
MAX_EXPORT_MEMBERS = 100_000
_PAX_SIZE = re.compile(rb"(?:^|\n)\d+ size=(\d{1,20})\n")


class _ExportGuard:
    """The export stream, checked as it passes, before ``tarfile`` sees a byte: every header
    block is parsed here so a GNU long name/link or pax header over ``MAX_TAR_HEADER`` is
    refused before it is buffered (exit 3), members beyond ``MAX_EXPORT_MEMBERS``, a total over
    ``limits.engine_export``, and time over the request deadline for the image's size or under
    the minimum rate (exit 5)."""

    def __init__(self, limits: Limits, *, what: str, expected: object) -> None:
        self.limits, self.what = limits, what
        size = expected if isinstance(expected, int) and expected > 0 else 0
        self.start = time.monotonic()
        self.seconds = limits.deadline(min(size, limits.engine_export))
        self.window = limits.speed_time
        self.window_start, self.window_bytes = self.start, 0
        self.total = 0
        self.members = 0
        self.next_header = 0          # offset of the next header block
        self.header = b""             # bytes of the header block being read
        self.pax: bytes | None = None  # data of a pax header being read
        self.pax_left = 0
        self.pending_size: int | None = None

    def chunks(self, source: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in source:
            self._timing(len(chunk))
            self._scan(chunk)
            yield chunk

    def _timing(self, n: int) -> None:
        now = time.monotonic()
        self.total += n
        self.window_bytes += n
        if self.total > self.limits.engine_export:
            raise UpstreamError(f"{self.what}: the engine's export is over the engine_export "
                                f"cap of {human(self.limits.engine_export)}")
        if now - self.start > self.seconds:
            raise FetchError(f"{self.what}: the engine's export took over "
                                f"{self.seconds:.0f} s", hint="check the engine; retry")
        if now - self.window_start >= self.window:
            if now - self.start > self.window and \
                    self.window_bytes < self.limits.speed_limit * self.window:
                raise FetchError(f"{self.what}: the engine's export brought fewer than "
                                    f"{self.limits.speed_limit * self.window:.0f} bytes in "
                                    f"{self.window:g} s", hint="check the engine; retry")
            self.window_start, self.window_bytes = now, 0

    def _scan(self, chunk: bytes) -> None:
        pos = self.total - len(chunk)     # offset of chunk[0] in the stream
        i = 0
        while i < len(chunk):
            at = pos + i
            if self.pax is not None and self.pax_left:
                take = chunk[i:i + self.pax_left]
                self.pax += take
                self.pax_left -= len(take)
                i += len(take)
                if not self.pax_left:
                    m = _PAX_SIZE.search(self.pax)
                    self.pending_size = int(m.group(1)) if m else None
                    self.pax = None
                continue
            if at < self.next_header:
                i += min(len(chunk) - i, self.next_header - at)
                continue
            take = chunk[i:i + TAR_BLOCK - len(self.header)]
            self.header += take
            i += len(take)
            if len(self.header) == TAR_BLOCK:
                self._header_done(self.next_header)
                self.header = b""

    def _header_done(self, offset: int) -> None:
        block = self.header
        if block == bytes(TAR_BLOCK):
            self.next_header = offset + TAR_BLOCK
            return
        kind = block[156:157]
        size = _tar_number(block[124:136])
        if kind in (b"x", b"g", b"L", b"K"):
            if size > MAX_TAR_HEADER:
                name = {b"x": "pax", b"g": "global pax", b"L": "GNU long name",
                        b"K": "GNU long link"}[kind]
                raise UpstreamError(f"{self.what}: the engine's export holds a {name} header "
                                    f"of {size} bytes (at most {MAX_TAR_HEADER})",
                                    hint="the engine or its storage is broken")
            if kind == b"x":
                self.pax, self.pax_left = b"", size
        else:
            self.members += 1
            if self.members > MAX_EXPORT_MEMBERS:
                raise UpstreamError(f"{self.what}: the engine's export holds over "
                                    f"{MAX_EXPORT_MEMBERS} members")
            if self.pending_size is not None:
                size, self.pending_size = self.pending_size, None
        if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
            size = 0
        self.next_header = offset + TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


def _tar_number(field: bytes) -> int:
    """A tar header number: octal, or GNU base-256 (first byte 0x80)."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        raise UpstreamError(f"the engine's export has a bad tar header number "
                            f"{digits[:20]!r}") from None


def _json_any(data: bytes, *, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise UpstreamError(f"{what} is not valid JSON: {str(e)[:200]}") from None


def _json_object(data: bytes, *, what: str) -> dict[str, Any]:
    doc = _json_any(data, what=what)
    if not isinstance(doc, dict):
        raise UpstreamError(f"{what} is not a JSON object")
    return doc


__all__ = ["EngineSource", "Exported", "OCI_CONFIG", "OCI_LAYER_TAR", "check_arches",
           "engine_host"]
