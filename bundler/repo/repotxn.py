"""All-or-nothing changes to a ring repository folder (every ``bundle repo`` writing command).

A command first computes and checks everything in memory (signatures, thresholds, what a device
would accept), then hands the files to write and delete to ``Txn.commit``:

1. every new file is written into a staging folder next to the repository
   (``.<name>.repo-txn/``, in the parent folder when it is on the same filesystem, else inside
   the repository), each one flushed to disk; a full disk or any other error here removes the
   staging folder and leaves the repository untouched;
2. ``journal.json`` is written and renamed into place: that rename is the commit point;
3. each file is renamed into the repository: targets first, then the new versioned metadata
   (which nothing references yet), then ``timestamp.json``, then new ``N.root.json`` files, so
   a device reading during the switch sees the old publication until the timestamp's rename,
   and the new one under its old root until the roots' (see ``_rank``);
4. the staging folder is removed.

A command killed before step 2 leaves a staging folder that the next command removes; killed
after it, the next command (or ``repo status``'s warning, then any writing command) finishes the
switch from the journal. Commands hold an exclusive ``flock`` on ``.<name>.repo-lock`` so two
never interleave.

Crash tests stop a command at a named point with ``AIRGAP_INSTALL_FAILPOINT`` (the installer's
fail points, ``installer.host.failpoint``): ``repo-staged``, ``repo-committed``,
``repo-applying``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable

from bundler.errors import LocalError, SpecError
from installer.errors import InstallerError
from installer.fsio import fsync_dir, hash_file, iter_file, write_verified
from installer.host import failpoint

JOURNAL = "journal.json"


@dataclass
class Change:
    """What one command will write (relative paths inside the repository)."""

    files: dict[str, bytes] = field(default_factory=dict)
    copies: dict[str, tuple[Path, str, int]] = field(default_factory=dict)  # src, sha256, size
    deletes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.files or self.copies or self.deletes)


TIMESTAMP_RANK = 2


def _rank(rel: str) -> tuple[int, str]:
    """The order files go live: bundles, versioned metadata and staged changes, then
    ``metadata/timestamp.json`` (the one file devices start from), then new roots. A device
    reading in between finds its old root and the new timestamp, which the repository signs
    during a rotation with the keys of both roots (``Repo._cosign``); the other way round it
    would find a new root beside a timestamp that root no longer accepts."""
    if rel.startswith("metadata/") and rel.endswith(".root.json"):
        return TIMESTAMP_RANK + 1, rel
    if rel == "metadata/timestamp.json":
        return TIMESTAMP_RANK, rel
    if rel.startswith("targets/"):
        return 0, rel
    return 1, rel



class Txn:
    """The lock, the staging folder and the journal of one repository folder."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._lock: IO[bytes] | None = None

    def _base(self) -> Path:
        """The parent folder when it is writable and on the same filesystem (renames stay
        atomic), else the repository folder itself."""
        parent = self.dir.resolve().parent
        try:
            same = parent.stat().st_dev == self.dir.stat().st_dev and os.access(parent, os.W_OK)
        except OSError:
            same = False
        return parent if same else self.dir

    @property
    def stage(self) -> Path:
        return self._base() / f".{self.dir.resolve().name}.repo-txn"

    @property
    def lock_path(self) -> Path:
        return self._base() / f".{self.dir.resolve().name}.repo-lock"

    # --- lock and recovery --------------------------------------------------------------

    def open(self) -> list[str]:
        """Take the lock and finish or discard an interrupted command; returns what was
        finished (relative paths)."""
        try:
            self._lock = open(self.lock_path, "ab")
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(f"another repository command is running on {self.dir}",
                            hint=f"wait for it to end ({self.lock_path} is locked)") from None
        except OSError as e:
            raise LocalError(f"cannot lock {self.lock_path}: {e}",
                             hint="check permissions on the repository's parent folder"
                             ) from None
        return self.recover()

    def interrupted(self) -> bool:
        """A committed switch is not finished (read-only check for ``repo status``)."""
        return (self.stage / JOURNAL).is_file()

    def recover(self) -> list[str]:
        if not self.stage.exists():
            return []
        journal = self.stage / JOURNAL
        if not journal.is_file():
            shutil.rmtree(self.stage, ignore_errors=True)  # killed before the commit point
            return []
        try:
            steps = json.loads(journal.read_bytes())["steps"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LocalError(f"{journal} is unreadable: {e}",
                             hint="restore the repository folder from its last copy") from None
        self._apply(steps)
        return [s["path"] for s in steps]

    # --- commit -------------------------------------------------------------------------

    def commit(self, change: Change) -> list[Path]:
        """Write ``change`` all-or-nothing; returns the repository paths written."""
        if not change:
            return []
        steps = self._stage(change)
        failpoint.hit("repo-staged")
        tmp = self.stage / (JOURNAL + ".tmp")
        try:
            write_verified(tmp, [json.dumps({"steps": steps}).encode()], mode=0o644)
            os.replace(tmp, self.stage / JOURNAL)
            fsync_dir(self.stage)
        except (OSError, InstallerError) as e:
            shutil.rmtree(self.stage, ignore_errors=True)
            raise LocalError(f"cannot write {self.stage / JOURNAL}: {e}",
                             hint="check space and permissions; the repository is unchanged"
                             ) from None
        failpoint.hit("repo-committed")
        self._apply(steps)
        return [self.dir / s["path"] for s in steps if s["op"] == "put"]

    def _stage(self, change: Change) -> list[dict[str, str]]:
        shutil.rmtree(self.stage, ignore_errors=True)
        steps: list[dict[str, str]] = []
        try:
            self.stage.mkdir(mode=0o755)
            for i, rel in enumerate(sorted(set(change.files) | set(change.copies), key=_rank)):
                src = self.stage / f"f{i:05d}"
                if rel in change.files:
                    write_verified(src, [change.files[rel]], mode=0o644)
                    sha, _ = hash_file(src)
                else:
                    origin, sha, size = change.copies[rel]
                    with open(origin, "rb") as f:
                        write_verified(src, iter_file(f), sha256=sha, size=size, mode=0o644,
                                       what=str(origin))
                steps.append({"op": "put", "path": rel, "src": src.name, "sha256": sha})
            fsync_dir(self.stage)
        except (OSError, InstallerError) as e:
            shutil.rmtree(self.stage, ignore_errors=True)
            raise LocalError(f"cannot stage the change in {self.stage}: {e}",
                             hint="check space and permissions; the repository is unchanged"
                             ) from None
        deletes = [{"op": "delete", "path": rel} for rel in change.deletes]
        # deletions (of staged, superseded pending changes) before the timestamp switch
        last = [s for s in steps if _rank(s["path"])[0] >= TIMESTAMP_RANK]
        return [s for s in steps if s not in last] + deletes + last

    def _apply(self, steps: Iterable[dict[str, str]]) -> None:
        touched: set[Path] = set()
        try:
            for n, step in enumerate(steps):
                dest = self.dir / step["path"]
                if step["op"] == "delete":
                    if dest.is_file():
                        dest.unlink()
                        touched.add(dest.parent)
                    continue
                touched.add(dest.parent)
                src = self.stage / step["src"]
                if not src.exists() and dest.is_file() and hash_file(dest)[0] == step["sha256"]:
                    continue  # renamed by the interrupted run already
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
                if n == 0:
                    failpoint.hit("repo-applying")
            for folder in touched:
                fsync_dir(folder)
        except OSError as e:
            raise LocalError(f"cannot finish the switch of {self.dir}: {e}",
                             hint="fix the cause and run any repository command: it finishes "
                                  f"the switch from {self.stage / JOURNAL}") from None
        _cleanup_empty(self.dir, touched)
        shutil.rmtree(self.stage, ignore_errors=True)


def _cleanup_empty(top: Path, folders: set[Path]) -> None:
    """Remove folders a deletion emptied (``staged/``), never the repository's own."""
    keep = {top, top / "metadata", top / "targets"}
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        while folder not in keep and top in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent
