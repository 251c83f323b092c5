"""A local folder as a source (a USB stick, a mounted share): ``sync --source /media/usb``."""

import os
import stat

from installer.errors import ConfigError, FormatError, TransferError
from installer.fsio import iter_file, write_verified
from installer.sources.base import Missing, Options, Source, check_path


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


def open_folder(spec: str, options: Options) -> Source:
    return FolderSource(spec)
