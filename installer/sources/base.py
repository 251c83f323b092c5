"""What every source of a ring repository or of bundles is (installer/sources/remote.py picks
one by the URL's scheme): the :class:`Source` protocol, :class:`Missing` (the source holds no
such file: the TUF client probes for the next root that way), a file :class:`Entry` and the
check of a path inside a source (pure)."""

import re
from dataclasses import dataclass
from typing import Optional, Protocol

from installer.errors import FormatError, TransferError
from installer.sources import ocidist

_PATH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}(/[A-Za-z0-9][A-Za-z0-9._+-]{0,200})*$")


class Source(Protocol):
    """A folder of files, wherever it is: the bytes of a small file (size-capped), and a
    large file fetched to a local path, verified against the sha256 and size the caller
    expects before it appears there. A file it does not hold raises :class:`Missing`."""

    label: str

    def read(self, path: str, *, max_size: int) -> bytes:
        ...

    def fetch(self, path: str, dest: str, *, sha256: str, size: int) -> None:
        ...


@dataclass(frozen=True)
class Options:
    """How to reach a network source (``sync --plain-http --ca-file --credentials-file``)."""

    plain_http: bool = False
    ca_file: Optional[str] = None
    credentials: Optional[ocidist.Credentials] = None


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
