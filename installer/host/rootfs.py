"""Paths under the install root, resolved as a chroot at that root would resolve them.

Every path the installer touches under ``--root`` (lock, state, journal, trust anchor,
staging, releases, live files) goes through ``resolve`` (via ``layout.Layout``): it walks the
path one component at a time with ``lstat``, and a symlink found on the way is followed
*inside* the root: an absolute target restarts at the root, ``..`` never climbs above it.
This is ``openat2(RESOLVE_IN_ROOT)``'s rule, written with the standard library (Python 3.8
has no ``openat2``). With root ``/`` it is ordinary path resolution, so a symlinked
``/var/lib/rancher`` (a data partition) keeps working; with ``--root DIR`` a link such as
``DIR/var/lib/rancher -> /data`` means ``DIR/data``, never the host's ``/data`` (THREATS 32).

The result has no symlink in any folder component, so the kernel follows none when the
caller uses it. The last component is kept as it is unless ``follow`` is set: operations on
a directory entry (``lstat``, ``rename`` over it, ``unlink``) must see a symlink there as the
entry itself; files the installer opens and folders it lists are resolved with
``follow=True``. Resolution is by path: it assumes nobody else rearranges the tree under the
root while the installer runs (the lock keeps other installer runs out).
"""

import errno
import os
import stat
from typing import List

from installer.errors import EnvironmentProblem

MAX_SYMLINKS = 40  # as Linux (ELOOP)


def resolve(root: str, rel: str, *, follow: bool = False) -> str:
    """The host path of ``rel`` (a path relative to ``root``; a leading ``/`` is ignored)
    as a chroot at ``root`` sees it. Components that do not exist yet are kept literally
    (creating them creates real folders inside the root)."""
    pending: List[str] = [p for p in rel.split("/") if p not in ("", ".")]
    pending.reverse()  # a stack: pending[-1] is the next component
    done: List[str] = []  # host paths: done[i] is the path of the first i + 1 components
    base = root.rstrip("/")  # "" for the root "/"
    links = 0
    missing = -1  # index in ``done`` of the first component that does not exist, or -1
    while pending:
        name = pending.pop()
        if name == "..":
            if done:
                done.pop()
            if len(done) <= missing:
                missing = -1  # the missing component is gone: check what follows again
            continue
        here = (done[-1] if done else base) + "/" + name
        if missing >= 0:
            done.append(here)
            continue
        try:
            st = os.lstat(here)
        except (FileNotFoundError, NotADirectoryError):
            missing = len(done)
            done.append(here)
            continue
        if stat.S_ISLNK(st.st_mode) and (pending or follow):
            links += 1
            if links > MAX_SYMLINKS:
                raise EnvironmentProblem(
                    f"too many levels of symbolic links resolving {rel} under {root}",
                    hint="a symlink under the install root points at itself; fix or remove it")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")]
            pending.extend(reversed(parts))
            continue
        done.append(here)
    return done[-1] if done else root


def open_nofollow(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink at the last component (ELOOP instead)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise EnvironmentProblem(
                f"{path} became a symbolic link while the installer was using it",
                hint="nothing else may change the install root during a run") from None
        raise
