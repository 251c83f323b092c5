"""The builder's I/O shell: one transport, one registry client per host, one cache.

Shared by ``lock`` and ``build`` so both reuse connections, tokens and verified blobs. In
``frozen`` mode the network is used only to fetch content by a locked digest; anything that
would resolve a tag or list an index raises.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import requests

from installer.fsio import adopt_verified, write_verified

from .cache import ContentStore, Downloader
from .errors import NotFoundError, SpecError, TransferError
from .lockfile import ChartLock
from .oci import Fetched, RegistryClient
from .spec import Spec
from .transport import RetryPolicy, Transport


class Sources:
    def __init__(self, spec: Spec, cache_dir: Path, *, frozen: bool = False,
                 policy: RetryPolicy | None = None, pool_size: int = 16,
                 on_bytes: Callable[[int], None] | None = None,
                 on_total: Callable[[int], None] | None = None) -> None:
        self.spec = spec
        self.frozen = frozen
        self.transport = Transport(policy=policy, pool_size=pool_size)
        self.store = ContentStore(cache_dir)
        pol = self.transport.policy
        self.downloader = Downloader(self.store, attempts=pol.attempts, backoff=pol.backoff,
                                     on_bytes=on_bytes, on_total=on_total)
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

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
            raise SpecError(f"--frozen: {what} would need a network lookup",
                            hint="drop --frozen, or run `bundle lock` first")

    def get_text(self, url: str, *, what: str, limit: int = 64 * 1024 * 1024) -> str:
        """Small documents (checksum files, chart indexes): fetched whole, size-capped."""
        self._not_frozen(what)
        resp = self.transport.request("GET", url, what=what, stream=True, allow_status=(404,))
        with resp:
            if resp.status_code == 404:
                raise NotFoundError(f"{what}: {url} not found (HTTP 404)",
                                    hint="check the version and the release/repository URL")
            data = bytearray()
            for chunk in resp.iter_content(65536):
                data += chunk
                if len(data) > limit:
                    raise TransferError(f"{what}: {url} is larger than {limit} bytes")
        return data.decode("utf-8", errors="replace")

    def head_size(self, url: str, *, what: str) -> int | None:
        self._not_frozen(what)
        resp = self.transport.request("HEAD", url, what=what, allow_status=(404, 405))
        resp.close()
        if resp.status_code == 404:
            from .errors import NotFoundError
            raise NotFoundError(f"{what}: {url} not found (HTTP 404)",
                                hint="check the K3s version and the releases URL")
        length = resp.headers.get("Content-Length")
        return int(length) if resp.status_code == 200 and length and length.isdigit() else None

    def download_unpinned(self, url: str, *, what: str) -> tuple[Path, str, int]:
        """Download a URL whose digest is not known yet into the cache; return its
        ``(path, sha256 hex, size)``. Used by ``lock`` only."""
        self._not_frozen(what)
        resp = self.transport.request("GET", url, what=what, stream=True, allow_status=(404,))
        with resp:
            if resp.status_code == 404:
                raise NotFoundError(f"{what}: {url} not found (HTTP 404)")
            name = hashlib.sha256(url.encode()).hexdigest()
            tmp = self.store.partial / f"url-{name}-{threading.get_ident()}"
            try:
                digest, size = write_verified(tmp, resp.iter_content(1024 * 1024), what=what,
                                              durable=False)
            except (requests.RequestException, OSError) as e:
                raise TransferError(f"{what}: download of {url} failed: {e}",
                                    hint="retry; the link dropped") from None
        dest = self.store.path(digest)
        # write_verified hashed exactly these bytes: no second read
        adopt_verified(tmp, dest, sha256=digest, size=size, what=what, hashed=digest,
                       durable=False)
        return dest, digest, size

    # ------------------------------------------------------------ pinned content

    def fetch_url(self, url: str, sha256: str, size: int, *, what: str) -> Path:
        """A locked URL artifact, from the cache or the network (resuming)."""
        def opener(start: int) -> requests.Response:
            headers = {"Range": f"bytes={start}-"} if start else {}
            return self.transport.request("GET", url, headers=headers, stream=True, what=what,
                                          ok=(200, 206))
        return self.downloader.fetch(sha256, size, opener, what=what)

    def fetch_blob(self, host: str, repo: str, digest: str, size: int, *, what: str) -> Path:
        client = self.registry(host)

        def opener(start: int) -> requests.Response:
            return client.open_blob(repo, digest, start=start, what=what)
        return self.downloader.fetch(digest, size, opener, what=what)

    def fetch_chart(self, chart: ChartLock) -> Path:
        """A locked chart archive: an OCI chart layer (``oci://host/repo@digest``) or an
        HTTP repository URL, by its locked sha256."""
        what = f"chart {chart.name} {chart.version}"
        if chart.url.startswith("oci://"):
            host, _, repo = chart.url[len("oci://"):].split("@", 1)[0].partition("/")
            return self.fetch_blob(host, repo, "sha256:" + chart.sha256, chart.size, what=what)
        return self.fetch_url(chart.url, chart.sha256, chart.size, what=what)

    def manifest(self, host: str, repo: str, reference: str, *, what: str,
                 size: int | None = None) -> Fetched:
        """A manifest by tag or digest. Digest-pinned manifests are cached like blobs."""
        if reference.startswith("sha256:") and size is not None:
            cached = self.store.lookup(reference, size)
            if cached is not None:
                return Fetched(cached.read_bytes(), "", reference)
        elif self.frozen:
            self._not_frozen(what)
        fetched = self.registry(host).get_manifest(repo, reference, what=what)
        if fetched.digest.startswith("sha256:") and not self.store.path(fetched.digest).exists():
            self.store.put(fetched.digest, len(fetched.data), [fetched.data], what=what)
        return fetched

    def read_cached(self, digest: str, size: int) -> bytes | None:
        p = self.store.lookup(digest, size)
        return p.read_bytes() if p is not None else None
