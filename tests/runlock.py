"""The device's run lock (``Layout.lock``) held by someone else, for the sync tests."""

import contextlib
import fcntl
import os
import threading
from typing import Iterator, Optional


@contextlib.contextmanager
def lock_held(path: str, *, release_after: Optional[float] = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (made if missing) inside the block; with
    ``release_after``, a timer lets it go after that many seconds, as another process would."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    if release_after is None:
        try:
            yield
        finally:
            os.close(fd)
        return
    timer = threading.Timer(release_after, lambda: os.close(fd))
    timer.start()
    try:
        yield
    finally:
        timer.join()
