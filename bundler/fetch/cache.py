"""The builder's content-addressed cache and the resumable downloader that fills it.

Layout: ``<root>/blobs/sha256/<hex>`` (verified content only) and ``<root>/partial/<hex>``
(bytes of an unfinished download, kept so the next attempt or run resumes with HTTP Range).
A blob is looked up by digest AND size and re-hashed before use: a cached file whose bytes no
longer match is deleted and fetched again, never used. All writes go through
``installer.fsio`` (temp file in the same folder, hash, check, rename). Because every read
re-verifies, cache writes skip fsync (``durable=False``): a file torn by a power cut is just
a cache miss. The bundle itself is written durably.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests
import urllib3

from bundler.errors import BundleError, FetchError, LocalError, UpstreamError
from bundler.fetch.transport import iter_raw
from installer.errors import DigestMismatch
from installer.fsio import adopt_verified, iter_file, verify_file, write_verified


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "k3s-airgap-bundler"


def hex_of(digest: str) -> str:
    hexpart = digest.split(":", 1)[1] if ":" in digest else digest
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise UpstreamError(f"unsupported digest {digest!r} (sha256 only)")
    return hexpart


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.partial = root / "partial"
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            self.partial.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LocalError(f"cannot create the cache folder {root}: {e.strerror}",
                             hint="pass --cache DIR with a writable folder") from None

    def full(self, doing: str) -> LocalError:
        """The error for ENOSPC while writing into the store (``doing``: what was going on)."""
        return LocalError(f"no space left in the cache {self.root} while {doing}",
                          hint="free space or pass --cache DIR on a larger filesystem")

    def path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def lookup(self, digest: str, size: int) -> Path | None:
        """The verified cached file, or None (a damaged file is removed)."""
        p = self.path(digest)
        if not p.exists():
            return None
        if verify_file(p, hex_of(digest), size):
            return p
        p.unlink(missing_ok=True)
        return None

    def put(self, digest: str, size: int, chunks: Iterable[bytes], *, what: str) -> Path:
        p = self.path(digest)
        write_verified(p, chunks, sha256=hex_of(digest), size=size, what=what, durable=False)
        return p


# What a broken stream looks like from requests/urllib3: retry (resuming) on these.
_STREAM_ERRORS = (requests.ConnectionError, requests.Timeout,
                  requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError,
                  ConnectionError, TimeoutError)

Opener = Callable[[int], requests.Response]
Check = Callable[[Path], None]   # raises a BundleError when a file is not what it must be


class Downloader:
    """Fetch blobs into a ContentStore, resuming interrupted transfers with Range."""

    def __init__(self, store: ContentStore, *, attempts: int = 5, backoff: float = 0.25,
                 on_bytes: Callable[[int], None] | None = None,
                 on_total: Callable[[int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.attempts = attempts
        self.backoff = backoff
        self.on_bytes = on_bytes
        self.on_total = on_total   # told how many bytes a download will add (progress ETA)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Lock] = {}
        self.downloads = 0      # blobs actually transferred (cache misses)
        self.cache_hits = 0

    def _count(self, attr: str) -> None:
        with self._lock:
            setattr(self, attr, getattr(self, attr) + 1)

    def fetch(self, digest: str, size: int, opener: Opener, *, what: str,
              check: Check | None = None) -> Path:
        """Return the verified cached path of ``digest``, downloading it if needed.

        ``opener(start)`` returns a streaming response from byte ``start`` (206) or from 0
        (200, when the server ignores Range). ``check(path)``, when given, must accept the
        content (also a cached copy) before it is returned or enters the cache.
        """
        # One transfer per digest at a time: images that share layers ask for the same blob
        # concurrently, and they must not write the same partial file.
        with self._lock:
            lock = self._inflight.setdefault(hex_of(digest), threading.Lock())
        with lock:
            hit = self.store.lookup(digest, size)
            if hit is not None:
                if check is not None:
                    check(hit)
                self._count("cache_hits")
                return hit
            self._count("downloads")
            return self._download(digest, size, opener, what=what, check=check)

    def _download(self, digest: str, size: int, opener: Opener, *, what: str,
                  check: Check | None) -> Path:
        partial = self.store.partial / hex_of(digest)
        if self.on_total is not None:
            self.on_total(size - (partial.stat().st_size if partial.exists() else 0))
        last = ""
        mismatch = False   # was the last failure a digest/size mismatch?
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(min(8.0, self.backoff * 2 ** (attempt - 1)))
            have = partial.stat().st_size if partial.exists() else 0
            if have > size:
                partial.unlink()
                have = 0
            # Hash while downloading; only a resumed transfer re-reads what it already has.
            h = hashlib.sha256()
            if have:
                with open(partial, "rb") as f:
                    for chunk in iter_file(f):
                        h.update(chunk)
            try:
                if have < size:
                    h = self._stream_into(partial, have, size, opener=opener, what=what, h=h)
                elif not partial.exists():
                    partial.touch()  # a zero-byte blob: nothing to transfer
                if partial.stat().st_size < size:
                    mismatch = False
                    last = f"connection closed after {partial.stat().st_size} of {size} bytes"
                    continue
                if check is not None and h.hexdigest() == hex_of(digest):
                    try:
                        check(partial)
                    except BundleError:
                        partial.unlink(missing_ok=True)
                        raise
                adopt_verified(partial, self.store.path(digest), sha256=hex_of(digest),
                               size=size, what=what, hashed=h.hexdigest(), durable=False)
                return self.store.path(digest)
            except DigestMismatch as e:
                mismatch = True
                last = e.message  # partial was removed: the next attempt starts over
                continue
            except _STREAM_ERRORS as e:
                mismatch = False
                last = str(e)[:300]
                continue
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise self.store.full(f"fetching {what}") from None
                raise
        if mismatch:  # classified by what was caught, never by the message text
            raise UpstreamError(f"{what}: content never matched its digest {digest} after "
                                f"{self.attempts} attempts: {last}",
                                hint="the source or a proxy corrupts data; nothing was cached")
        raise FetchError(f"{what}: download failed after {self.attempts} attempts: {last}",
                            hint="the link is failing; re-run to resume where it stopped")

    def _stream_into(self, partial: Path, have: int, size: int, *, opener: Opener,
                     what: str, h: Any) -> Any:
        """Append the rest of the body to ``partial``, updating and returning the hash."""
        resp = opener(have)
        with resp:
            if have and resp.status_code != 206:
                have = 0  # server ignored Range: start over
                h = hashlib.sha256()
            mode = "ab" if have else "wb"
            with open(partial, mode) as out:
                for chunk in iter_raw(resp, what=what):
                    have += len(chunk)
                    if have > size:  # endless or oversized body: never let it fill the disk
                        out.close()
                        partial.unlink(missing_ok=True)
                        raise DigestMismatch(f"{what}: more than the expected {size} bytes "
                                             "(sha256 cannot match)")
                    out.write(chunk)
                    h.update(chunk)
                    if self.on_bytes is not None:
                        self.on_bytes(len(chunk))
                out.flush()
        return h

