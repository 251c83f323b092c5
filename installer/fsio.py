"""The one content-addressed, atomic file writer, and streaming hash helpers.

``write_verified`` is the only way this project puts verified bytes on disk, in the builder's
cache and on the device alike: write to a temp file in the destination folder, hash while
writing, stop at the declared size, check size and sha256, fsync, rename, fsync the folder. On
any mismatch the final path is never touched and the temp file is removed.

Nothing is trusted by its size or its name: ``verify_file`` re-hashes an existing file.
"""

import errno
import fcntl
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional, Tuple

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
    with open(path, "rb") as f:
        return hash_chunks(iter_file(f))


def verify_file(path: "os.PathLike[str] | str", sha256: str, size: int) -> bool:
    """True when the file exists with exactly this size and sha256."""
    try:
        if os.stat(path).st_size != size:
            return False
        return hash_file(path)[0] == sha256
    except FileNotFoundError:
        return False


def fsync_dir(path: "os.PathLike[str] | str") -> None:
    """fsync a directory so a rename inside it survives a power cut."""
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
                os.fsync(out.fileno())
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
            os.fsync(fd)
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


def reflink(src: str, tmp: str, *, mode: int) -> bool:
    """Make ``tmp`` (a new file) a copy-on-write clone of ``src`` sharing its blocks (btrfs,
    XFS with reflink, bcachefs, ZFS 2.2+...): no second copy of the bytes, yet writing into
    one file does not change the other. False (and no ``tmp``) where the filesystem cannot."""
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        dfd = create_temp(tmp)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
            os.fchmod(dfd, mode)
            os.fsync(dfd)
        except OSError:
            os.close(dfd)
            _unlink_quiet(Path(tmp))
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


READ_BUFFER = 1024 * 1024


def open_regular(path: str, *, what: str) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file (THREATS 36).

    A FIFO would block ``open`` and then ``read`` forever, a device could be endless; both,
    and folders, are refused before any byte is read. ``O_NONBLOCK`` makes a FIFO swapped in
    after the ``stat`` fail the ``fstat`` check instead of hanging the open.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path} is {_file_kind(st.st_mode)}, not a regular file",
                          hint="pass the bundle file itself (a folder is searched for "
                               "<name>-<version>-<arch>.tar files)")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path} changed into {_file_kind(st.st_mode)} while "
                              "being opened")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=READ_BUFFER)
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a file")
