"""The bounds of one transfer from a mirror or registry, and its partial file (THREATS 45).

- ``Deadline``: a server, mirror or proxy that sends one byte at a time never trips a per-read
  timeout, so each transfer (with its retries) gets ``base`` seconds (``--transfer-timeout``,
  default ``TRANSFER_TIMEOUT``) plus one second per ``MIN_RATE`` bytes of its size (or of the
  size the server announces, when smaller), then :class:`TooSlow` (exit 5: the install lock is
  freed, never retried). Bodies are read as they arrive (``read_body``), so the deadline is
  checked between chunks.
- The partial file of a resumable download: what is there is hashed and resumed from
  (``resume_state``); anything but a regular file at its name (a planted symlink, a folder) is
  removed, never followed (``clear_odd_partial``), so it cannot fail every later run.
"""

import contextlib
import hashlib
import http.client
import os
import shutil
import stat
import time
from typing import Callable, Iterator, Optional

from installer.errors import TransferError
from installer.fsio import CHUNK

TRANSFER_TIMEOUT = 300.0
MIN_RATE = 64 * 1024


class TooSlow(TransferError):
    """The transfer's overall deadline passed (never retried: exit 5, the lock is freed)."""


class Unavailable(TransferError):
    """A transient failure (reset, timeout, HTTP 5xx): worth another attempt."""


def transfer_deadline(size: int, *, base: float = TRANSFER_TIMEOUT,
                      min_rate: float = MIN_RATE) -> float:
    """Seconds a transfer of ``size`` bytes may take, retries included (pure)."""
    return base + size / min_rate


class Deadline:
    """The deadline of the current transfer of one client (not thread-safe, as the client)."""

    def __init__(self, per_read: Callable[[], float]) -> None:
        self.per_read = per_read           # the client's per-read timeout, read when used
        self.base = TRANSFER_TIMEOUT
        self.min_rate: float = MIN_RATE
        self._until: Optional[float] = None   # monotonic deadline of the current transfer
        self._started = 0.0

    @contextlib.contextmanager
    def transfer(self, size: int) -> Iterator[None]:
        """Everything inside (requests, retries, reads) shares one deadline for ``size``
        bytes; a nested transfer keeps the outer one."""
        if self._until is not None:
            yield
            return
        self._started = time.monotonic()
        self._until = self._started + transfer_deadline(size, base=self.base,
                                                        min_rate=self.min_rate)
        try:
            yield
        finally:
            self._until = None

    def narrow(self, resp: http.client.HTTPResponse) -> None:
        """A transfer sized by its cap gets the deadline of the size the server announces
        (``Content-Length``) when that is smaller."""
        length = resp.headers.get("Content-Length") or ""
        if self._until is not None and length.isdigit() and len(length) < 20:
            self._until = min(self._until, self._started + transfer_deadline(
                int(length), base=self.base, min_rate=self.min_rate))

    def time_left(self, what: str, done: int = 0) -> float:
        """Seconds the current transfer may still wait on one read (at most the per-read
        timeout); :class:`TooSlow` once its deadline passed."""
        if self._until is None:
            return self.per_read()
        left = self._until - time.monotonic()
        if left <= 0:
            took = time.monotonic() - self._started
            raise TooSlow(f"{what}: too slow: {done} bytes in {took:.0f}s, past this "
                          f"transfer's deadline",
                          hint="the server, mirror or a proxy on the way sends too slowly or "
                               "stalls; run again later (a download resumes where it stopped) "
                               "or raise --transfer-timeout")
        return min(self.per_read(), left)

    def read_body(self, resp: http.client.HTTPResponse, limit: int, *, what: str) -> bytes:
        """At most ``limit`` bytes of ``resp``, read as they arrive under the deadline (a
        plain ``read(limit)`` waits for all of them, however slowly they come)."""
        parts = []
        got = 0
        while got < limit:
            self.time_left(what, got)
            try:
                data = resp.read1(min(CHUNK, limit - got))
            except (OSError, ValueError, http.client.HTTPException) as e:
                raise Unavailable(f"{what}: transfer broke: {e!r}") from None
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)


def clear_odd_partial(partial: str) -> None:
    """Something other than a regular file at the partial download's name (a planted
    symlink, a folder) is removed, never followed, so it cannot fail every later run."""
    try:
        st = os.lstat(partial)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(partial)
    elif not stat.S_ISREG(st.st_mode):
        os.unlink(partial)


def resume_state(partial: str, size: int, h: "hashlib._Hash") -> int:
    """Bytes already downloaded (hashed into ``h``), or 0 when there is nothing usable."""
    try:
        fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):
        return 0
    have = 0
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size > size:
            return 0
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            h.update(data)
            have += len(data)
    return have
