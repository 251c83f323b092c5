"""The one content-addressed, atomic file writer, and streaming hash helpers.

``write_verified`` is the only way this project puts verified bytes on disk, in the builder's
cache and on the device alike: write to a temp file in the destination folder, hash while
writing, stop at the declared size, check size and sha256, fsync, rename, fsync the folder. On
any mismatch the final path is never touched and the temp file is removed.

Nothing is trusted by its size or its name: ``verify_file`` re-hashes an existing file.
"""

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, List, Optional, Set, Tuple

from installer.errors import ConfigError, DigestMismatch, EnvironmentProblem

CHUNK = 1024 * 1024


def iter_file(f: BinaryIO, *, limit: Optional[int] = None, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield chunks of ``f`` until EOF or until ``limit`` bytes were read."""
    remaining = limit
    while remaining is None or remaining > 0:
        n = chunk if remaining is None else min(chunk, remaining)
        data = f.read(n)
        if not data:
            return
        if remaining is not None:
            remaining -= len(data)
        yield data


def hash_chunks(chunks: Iterable[bytes],
                on_bytes: Optional[Callable[[int], None]] = None) -> Tuple[str, int]:
    """Return ``(sha256 hex, size)`` of a stream of chunks (pure; the one hashing loop)."""
    h = hashlib.sha256()
    size = 0
    for data in chunks:
        h.update(data)
        size += len(data)
        if on_bytes is not None:
            on_bytes(len(data))
    return h.hexdigest(), size


def checked_chunks(chunks: Iterable[bytes], *, sha256: str, size: int,
                   mismatch: Callable[[str, int], Exception]) -> Iterator[bytes]:
    """Pass ``chunks`` through, hashing them; at their end raise ``mismatch(got_sha256,
    got_size)`` unless they were exactly ``sha256`` and ``size`` (the one streaming check)."""
    h = hashlib.sha256()
    got = 0
    for data in chunks:
        h.update(data)
        got += len(data)
        yield data
    if got != size or h.hexdigest() != sha256:
        raise mismatch(h.hexdigest(), got)


def hash_file(path: "os.PathLike[str] | str") -> Tuple[str, int]:
    """Return ``(sha256 hex, size)`` of a file, streaming."""
    with open_regular(str(path), what="file", must_exist=False) as f:
        return hash_chunks(iter_file(f))


def verify_file(path: "os.PathLike[str] | str", sha256: str, size: int) -> bool:
    """True when the file exists with exactly this size and sha256."""
    try:
        if os.stat(path).st_size != size:
            return False
        return hash_file(path)[0] == sha256
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------- durability
# Many small files (a bundle of thousands of manifests) cost two fsyncs each, a disk flush
# every time: 4,000 one-byte members took 50 s. Inside ``batched_fsync`` the fsyncs of
# write_verified, adopt_verified and fsync_dir are recorded instead, and done when the block
# ends: each of them when there are few, else one ``os.sync()`` (Linux waits for it to
# complete). Nothing that needs those files durable runs before the block ends (the journal
# and state commits come after it); a failing block syncs nothing (its caller undoes it).
SYNC_BATCH = 16
_deferred: Optional[List[str]] = None


@contextlib.contextmanager
def batched_fsync() -> Iterator[None]:
    """Defer the fsyncs done inside to its end (nested blocks join the outer one)."""
    global _deferred
    if _deferred is not None:
        yield
        return
    _deferred = []
    try:
        yield
    except BaseException:
        _deferred = None
        raise
    pending, _deferred = list(dict.fromkeys(_deferred)), None
    if len(pending) > SYNC_BATCH:
        os.sync()
        return
    for path in pending:
        _fsync_path(path)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_later(fd: int, path: str) -> None:
    """fsync ``fd`` now, or record ``path`` (where the file will be) inside a batch."""
    if _deferred is None:
        os.fsync(fd)
    else:
        _deferred.append(path)


def fsync_dir(path: "os.PathLike[str] | str") -> None:
    """fsync a directory so a rename inside it survives a power cut."""
    if _deferred is not None:
        _deferred.append(str(path))
        return
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_verified(
    dest: "os.PathLike[str] | str",
    chunks: Iterable[bytes],
    *,
    sha256: Optional[str] = None,
    size: Optional[int] = None,
    what: Optional[str] = None,
    mode: int = 0o644,
    tmp_prefix: str = ".tmp-",
    on_bytes: Optional[Callable[[int], None]] = None,
    durable: bool = True,
) -> Tuple[str, int]:
    """Write ``chunks`` atomically to ``dest``, verifying sha256 and size when given.

    Returns ``(sha256 hex, size)`` of what was written. Data beyond ``size`` is a mismatch
    (reading stops there: an endless stream cannot fill the disk). The temp file is a dotfile
    in the destination folder, so watchers such as K3s's image importer ignore it.

    ``durable=False`` skips the fsyncs: only for stores that re-verify every file before use
    (the builder's cache), where a file torn by a power cut is detected and fetched again.
    """
    dest = Path(dest)
    label = what or dest.name
    tmp = dest.parent / (f"{tmp_prefix}{dest.name}.{_unique()}")
    h = hashlib.sha256()
    written = 0
    try:
        fd = create_temp(str(tmp))
        with os.fdopen(fd, "wb") as out:
            for data in chunks:
                if size is not None and written + len(data) > size:
                    raise DigestMismatch(
                        f"{label}: more data than the declared {size} bytes",
                        hint="the source is corrupt or not what was pinned")
                out.write(data)
                h.update(data)
                written += len(data)
                if on_bytes is not None:
                    on_bytes(len(data))
            out.flush()
            if durable:
                _fsync_later(out.fileno(), str(dest))
            os.fchmod(out.fileno(), mode)
        digest = h.hexdigest()
        if size is not None and written != size:
            raise DigestMismatch(
                f"{label}: expected {size} bytes, got {written}",
                hint="the transfer was truncated or the source changed; fetch it again")
        if sha256 is not None and digest != sha256:
            raise DigestMismatch(
                f"{label}: expected sha256 {sha256}, got {digest}",
                hint="the source does not hold the pinned content; do not use it")
        os.replace(str(tmp), str(dest))
        if durable:
            fsync_dir(dest.parent)
        return digest, written
    except OSError as e:
        _unlink_quiet(tmp)
        if e.errno == errno.ENOSPC:
            raise EnvironmentProblem(f"no space left writing {label} in {dest.parent}",
                                     hint="free space on that filesystem and retry") from None
        raise
    except BaseException:
        _unlink_quiet(tmp)
        raise


def adopt_verified(
    tmp: "os.PathLike[str] | str",
    dest: "os.PathLike[str] | str",
    *,
    sha256: str,
    size: int,
    what: Optional[str] = None,
    mode: int = 0o644,
    hashed: Optional[str] = None,
    durable: bool = True,
) -> None:
    """Move an already written temp file (same folder as ``dest``) into place, verified.

    The resumable-download twin of ``write_verified``: the bytes arrived over several
    attempts, then are checked (``hashed``: the sha256 the writer computed over exactly the
    bytes it wrote to ``tmp``; otherwise the file is hashed here), fsynced and renamed; on
    mismatch the temp file is removed and ``dest`` is never touched. ``durable`` as in
    ``write_verified``.
    """
    tmp, dest = Path(tmp), Path(dest)
    label = what or dest.name
    if hashed is None:
        digest, written = hash_file(tmp)
    else:
        digest, written = hashed, os.stat(str(tmp)).st_size
    if written != size or digest != sha256:
        _unlink_quiet(tmp)
        raise DigestMismatch(
            f"{label}: expected {size} bytes with sha256 {sha256}, got {written} bytes with "
            f"sha256 {digest}",
            hint="the source does not hold the pinned content; it was not kept")
    if durable:
        fd = os.open(str(tmp), os.O_RDONLY)
        try:
            _fsync_later(fd, str(dest))
        finally:
            os.close(fd)
    os.chmod(str(tmp), mode)
    os.replace(str(tmp), str(dest))
    if durable:
        fsync_dir(dest.parent)


class atomic_output:
    """Context manager: a temp file beside ``dest`` that becomes ``dest`` only on success.

    For outputs produced by a writer that pushes bytes (tar, zip) rather than a verified
    stream: fsync, rename, fsync the folder on success; remove the temp file on any error.
    """

    def __init__(self, dest: "os.PathLike[str] | str", *, mode: int = 0o644,
                 durable: bool = True) -> None:
        self.dest = Path(dest)
        self.mode = mode
        self.durable = durable
        self.tmp = self.dest.parent / (f".tmp-{self.dest.name}.{_unique()}")
        self._f: Optional[BinaryIO] = None

    def __enter__(self) -> BinaryIO:
        fd = create_temp(str(self.tmp))
        self._f = os.fdopen(fd, "wb")
        return self._f

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._f is not None
        try:
            if exc_type is None:
                self._f.flush()
                if self.durable:
                    os.fsync(self._f.fileno())
                os.fchmod(self._f.fileno(), self.mode)
            self._f.close()
            if exc_type is None:
                os.replace(str(self.tmp), str(self.dest))
                if self.durable:
                    fsync_dir(self.dest.parent)
        finally:
            if exc_type is not None or self.tmp.exists():
                _unlink_quiet(self.tmp)


_TEMP_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
               | getattr(os, "O_CLOEXEC", 0))


def create_temp(path: str, mode: int = 0o600) -> int:
    """Create a new temp file with ``O_EXCL|O_NOFOLLOW``: never opens an existing file or
    follows a symlink planted at the temp name. A leftover of a killed run with the same
    name (a file or a symlink) is unlinked (the name itself, never its target) and the
    create retried once."""
    try:
        return os.open(path, _TEMP_FLAGS, mode)
    except FileExistsError:
        os.unlink(path)
        return os.open(path, _TEMP_FLAGS, mode)


# FICLONE = _IOW(0x94, 9, int): the value on x86, arm and arm64 (Python < 3.12 lacks it)
FICLONE = getattr(fcntl, "FICLONE", 0x40049409)
_NO_CLONE = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY,
             errno.ENOSYS)
_NO_REFLINK: Set[Tuple[int, int]] = set()  # (source device, destination device) pairs


def reflink(src: str, tmp: str, *, mode: int) -> bool:
    """Make ``tmp`` (a new file) a copy-on-write clone of ``src`` sharing its blocks (btrfs,
    XFS with reflink, bcachefs, ZFS 2.2+...): no second copy of the bytes, yet writing into
    one file does not change the other. False (and no ``tmp``) where the filesystem cannot.
    A pair of filesystems that refused once is not asked again in this run (thousands of
    small files would each pay a create and an unlink for nothing)."""
    try:
        pair = (os.lstat(src).st_dev, os.stat(os.path.dirname(tmp) or ".").st_dev)
    except OSError:
        pair = (-1, -1)
    if pair in _NO_REFLINK:
        return False
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        dfd = create_temp(tmp)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
            os.fchmod(dfd, mode)
            os.fsync(dfd)
        except OSError as e:
            os.close(dfd)
            _unlink_quiet(Path(tmp))
            if e.errno in _NO_CLONE:
                _NO_REFLINK.add(pair)
            return False
        os.close(dfd)
        return True
    finally:
        os.close(sfd)


def _unique() -> str:
    # unique per process and thread: concurrent writers of one destination never share a temp
    return f"{os.getpid()}-{threading.get_ident()}"


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(str(path))
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------- reading

READ_BUFFER = 1024 * 1024
_NOT_REGULAR_HINT = ("replace it with the regular file it should be (a FIFO, device, socket or "
                     "folder there is never read)")


def open_regular(path: str, *, what: str, hint: Optional[str] = None,
                 must_exist: bool = True) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file: the one opener for everything
    the installer reads (bundles, parts, state, journal, sync record, trust files, credentials;
    THREATS 36 and 50).

    A FIFO would block ``open`` and then ``read`` forever, a device could be endless; both,
    and folders, are refused (``ConfigError``, with ``hint``) before any byte is read.
    ``O_NONBLOCK`` makes a FIFO swapped in after the ``stat`` fail the ``fstat`` check instead
    of hanging the open. A missing file is ``ConfigError`` too, or ``FileNotFoundError`` with
    ``must_exist=False`` (for callers to whom absent is a normal answer).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not must_exist:
            raise
        raise ConfigError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path} is {_file_kind(st.st_mode)}, not a regular file",
                          hint=hint or _NOT_REGULAR_HINT)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path} changed into {_file_kind(st.st_mode)} while "
                              "being opened", hint=hint or _NOT_REGULAR_HINT)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=READ_BUFFER)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str, *, what: str, limit: int,
                 hint: Optional[str] = None) -> Optional[bytes]:
    """At most ``limit`` bytes of the regular file ``path`` (read ``limit + 1`` to detect an
    oversized one); None when it does not exist. Not a regular file: ``ConfigError``."""
    try:
        with open_regular(path, what=what, hint=hint, must_exist=False) as f:
            return f.read(limit)
    except FileNotFoundError:
        return None


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a file")
