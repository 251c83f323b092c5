"""The builder's I/O shell: one transport, one registry client per host, one cache.

Shared by ``lock`` and ``build`` so both reuse connections, tokens and verified blobs. In
``frozen`` mode the network is used only to fetch content by a locked digest; anything that
would resolve a tag or list an index raises.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import requests
import urllib3

from bundler import safeyaml
from bundler.errors import BundleError, FetchError, NotFoundError, UpstreamError
from bundler.fetch.cache import Check, ContentStore, Downloader
from bundler.fetch.chartcheck import chart_checker
from bundler.fetch.daemon import EngineSource
from bundler.fetch.imagesource import ImageSource, frozen_refusal
from bundler.fetch.oci import Fetched, RegistryClient
from bundler.fetch.registrysource import RegistrySource
from bundler.fetch.transport import RetryPolicy, Transport, hops, iter_raw, read_capped
from bundler.limits import Limits, human
from bundler.spec.lockfile import ChartLock
from bundler.spec.refs import DAEMON_TRANSPORT, ImageRef
from bundler.spec.spec import Spec
from installer.fsio import adopt_verified, write_verified


def _refuse_404(resp: requests.Response, url: str, *, what: str, hint: str | None = None) -> None:
    """The one wording of an upstream 404 (requests made with ``allow_status=(404, ...)``)."""
    if resp.status_code == 404:
        raise NotFoundError(f"{what}: {url} not found (HTTP 404)", hint=hint)


class Sources:
    def __init__(self, spec: Spec, cache_dir: Path, *, frozen: bool = False,
                 policy: RetryPolicy | None = None, pool_size: int = 16,
                 on_bytes: Callable[[int], None] | None = None,
                 on_total: Callable[[int], None] | None = None,
                 limits: Limits | None = None) -> None:
        self.spec = spec
        self.frozen = frozen
        self.limits = limits or Limits.from_env()
        self.transport = Transport(policy=policy, pool_size=pool_size, limits=self.limits)
        self.store = ContentStore(cache_dir)
        pol = self.transport.policy
        self.downloader = Downloader(self.store, attempts=pol.attempts, backoff=pol.backoff,
                                     on_bytes=on_bytes, on_total=on_total)
        self._clients: dict[str, RegistryClient] = {}
        # image sources by transport prefix (ImageRef.transport): a new kind is one entry
        self.image_sources: dict[str, ImageSource] = {
            "": RegistrySource(self),
            DAEMON_TRANSPORT: EngineSource(self.store, self.limits, frozen=frozen)}
        self._lock = threading.Lock()
        # chart repository index.yaml: fetched once per URL, parsed once per content digest
        self._index_locks: dict[str, threading.Lock] = {}
        self._index_by_url: dict[str, Any] = {}
        self._index_by_digest: dict[str, Any] = {}

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Sources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def registry(self, host: str) -> RegistryClient:
        with self._lock:
            if host not in self._clients:
                self._clients[host] = RegistryClient(self.transport, self.spec.registry(host))
            return self._clients[host]

    # ------------------------------------------------------------ resolution (network)

    def _not_frozen(self, what: str) -> None:
        if self.frozen:
            raise frozen_refusal(what)

    def get_bytes(self, url: str, *, what: str, kind: str) -> bytes:
        """A small document (checksum file, chart index), fetched whole, capped by kind."""
        self._not_frozen(what)
        cap = self.limits.cap(kind)
        resp = self.transport.request("GET", url, what=what, stream=True, allow_status=(404,),
                                      expect=cap)
        with resp:
            _refuse_404(resp, url, what=what,
                        hint="check the version and the release/repository URL")
            return read_capped(resp, limit=cap, what=what, kind=kind)

    def get_text(self, url: str, *, what: str, kind: str = "checksums") -> str:
        return self.get_bytes(url, what=what, kind=kind).decode("utf-8", errors="replace")

    def chart_index(self, repo: str) -> Any:
        """A chart repository's parsed ``index.yaml`` (once per run per URL; the parse is
        kept per content digest), as returned by :func:`safeyaml.load`."""
        url = f"{repo}/index.yaml"
        with self._lock:
            lock = self._index_locks.setdefault(url, threading.Lock())
        with lock:
            if url not in self._index_by_url:
                data = self.get_bytes(url, what=f"chart repository {repo}", kind="index_yaml")
                digest = hashlib.sha256(data).hexdigest()
                if digest not in self._index_by_digest:
                    self._index_by_digest[digest] = safeyaml.load(  # bytes: no text copies
                        data, what=url, limits=self.limits)
                del data
                self._index_by_url[url] = self._index_by_digest[digest]
            return self._index_by_url[url]

    def head_size(self, url: str, *, what: str, kind: str = "k3s_binary") -> int | None:
        """The length a HEAD declares (checked against the kind's cap), or None."""
        self._not_frozen(what)
        resp = self.transport.request("HEAD", url, what=what, allow_status=(404, 405))
        resp.close()
        _refuse_404(resp, url, what=what, hint="check the K3s version and the releases URL")
        length = resp.headers.get("Content-Length", "").strip()
        if resp.status_code != 200 or not length.isdigit():
            return None
        return self.limits.check_size(kind, int(length), what=what,
                                      source="the HEAD Content-Length")

    def download_unpinned(self, url: str, *, what: str, kind: str,
                          check: Check | None = None) -> tuple[Path, str, int]:
        """Download a URL whose digest is not known yet into the cache, at most the kind's
        cap; ``check(path)`` must accept it before it enters the cache. Returns ``(path,
        sha256 hex, size)``. Used by ``lock`` only."""
        self._not_frozen(what)
        cap = self.limits.cap(kind)
        resp = self.transport.request("GET", url, what=what, stream=True, allow_status=(404,),
                                      expect=cap)
        with resp:
            _refuse_404(resp, url, what=what)
            declared = resp.headers.get("Content-Length", "").strip()
            if declared.isdigit():
                self.limits.check_size(kind, int(declared), what=what,
                                       source="the Content-Length")
            name = hashlib.sha256(url.encode()).hexdigest()
            tmp = self.store.partial / f"url-{name}-{threading.get_ident()}"
            try:
                digest, size = write_verified(
                    tmp, _capped(iter_raw(resp, what=what), cap, what=f"{what}: {url}",
                                 kind=kind), what=what, durable=False)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                raise FetchError(f"{what}: download of {url} failed: {str(e)[:300]}",
                                    hint="retry; the link dropped") from None
            chain = hops(resp)
        if check is not None:
            try:
                check(tmp)
            except BundleError as e:
                tmp.unlink(missing_ok=True)
                if len(chain) > 1:  # say where the bytes really came from
                    raise type(e)(f"{e.message} (fetched via {' -> '.join(chain)[:600]})",
                                  hint=e.hint) from None
                raise
        dest = self.store.path(digest)
        # write_verified hashed exactly these bytes: no second read
        adopt_verified(tmp, dest, sha256=digest, size=size, what=what, hashed=digest,
                       durable=False)
        return dest, digest, size

    # ------------------------------------------------------------ pinned content

    def fetch_url(self, url: str, sha256: str, declared: object, *, what: str,
                  kind: str = "layer", source: str = "the lock",
                  check: Check | None = None) -> Path:
        """A pinned URL artifact, from the cache or the network (resuming). Its
        ``declared`` size is checked against the kind's cap first (``source`` says who
        declared it)."""
        size = self.limits.check_size(kind, declared, what=what, source=source)

        def opener(start: int) -> requests.Response:
            headers = {"Range": f"bytes={start}-"} if start else {}
            return self.transport.request("GET", url, headers=headers, stream=True, what=what,
                                          ok=(200, 206), expect=size - start)
        return self.downloader.fetch(sha256, size, opener, what=what, check=check)

    def fetch_blob(self, host: str, repo: str, digest: str, *, declared: object, what: str,
                   kind: str = "layer", source: str = "the lock",
                   check: Check | None = None) -> Path:
        """A blob by digest; its ``declared`` size is checked against the kind's cap first."""
        size = self.limits.check_size(kind, declared, what=what, source=source)
        client = self.registry(host)

        def opener(start: int) -> requests.Response:
            return client.open_blob(repo, digest, start=start, what=what, expect=size - start)
        return self.downloader.fetch(digest, size, opener, what=what, check=check)

    def chart_check(self, name: str, version: str) -> Check:
        return chart_checker(name, version, what=f"chart {name} {version}",
                             limits=self.limits)

    def fetch_chart(self, chart: ChartLock) -> Path:
        """A locked chart archive: an OCI chart layer (``oci://host/repo@digest``) or an
        HTTP repository URL, by its locked sha256; it must be that chart (name, version)."""
        what = f"chart {chart.name} {chart.version}"
        check = self.chart_check(chart.name, chart.version)
        if chart.url.startswith("oci://"):
            host, _, repo = chart.url[len("oci://"):].split("@", 1)[0].partition("/")
            return self.fetch_blob(host, repo, "sha256:" + chart.sha256, declared=chart.size,
                                   what=what, kind="chart", check=check)
        return self.fetch_url(chart.url, chart.sha256, chart.size, what=what, kind="chart",
                              check=check)

    def manifest(self, host: str, repo: str, reference: str, *, what: str,
                 size: int | None = None) -> Fetched:
        """A manifest by tag or digest. Digest-pinned manifests are cached like blobs."""
        if reference.startswith("sha256:") and size is not None:
            self.limits.check_size("manifest", size, what=what, source="the index")
            cached = self.store.lookup(reference, size)
            if cached is not None:
                return Fetched(cached.read_bytes(), reference)
        elif self.frozen and not reference.startswith("sha256:"):
            self._not_frozen(what)  # a digest is content-addressed: frozen allows it
        fetched = self.registry(host).get_manifest(repo, reference, what=what)
        if fetched.digest.startswith("sha256:") and not self.store.path(fetched.digest).exists():
            self.store.put(fetched.digest, len(fetched.data), [fetched.data], what=what)
        return fetched

    # ------------------------------------------------------------ images, any source

    def image_source(self, ref: ImageRef) -> ImageSource:
        """The source serving ``ref``: its registry, or the Docker engine for a
        ``docker-daemon:`` image (which must still hold the locked content at build time)."""
        return self.image_sources[ref.transport]

    def image_manifest(self, ref: ImageRef, digest: str, *, what: str, size: int) -> Fetched:
        """A locked platform manifest of ``ref``, from its source."""
        return self.image_source(ref).manifest(ref, digest, size=size, what=what)

    def image_blob(self, ref: ImageRef, manifest: str, digest: str, *, declared: object,
                   what: str, kind: str = "layer") -> Path:
        """A blob of ``ref``'s locked platform manifest ``manifest``, from its source."""
        return self.image_source(ref).blob(ref, manifest=manifest, digest=digest,
                                           declared=declared, what=what, kind=kind)

    def read_cached(self, digest: str, size: int) -> bytes | None:
        p = self.store.lookup(digest, size)
        return p.read_bytes() if p is not None else None


def _capped(chunks: Iterable[bytes], cap: int, *, what: str, kind: str) -> Iterator[bytes]:
    """Pass ``chunks`` through until they pass ``cap`` bytes, then stop the writer (which
    removes its temp file)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise UpstreamError(f"{what}: more than the {kind} cap of {human(cap)}",
                                hint=f"if that size is real, raise it: BUNDLE_LIMITS="
                                     f"\"{kind}=<size>\" (docs/builder-trust.md)")
        yield chunk
