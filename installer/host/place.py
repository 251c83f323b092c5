"""Put a release's files into the live tree, each by one atomic rename, with an undo log.

``prepare`` records, for every live path a change will touch, how to put it back: it was
absent, it belongs to the old release (restore from ``releases/<old>/``), or it is a file we
never placed (kept as a hard link or copy in ``txn/<tx>/backup/``). ``apply`` then places the new
release from ``releases/<new>/`` (a reflink where the filesystem offers one, so the kept copy
survives in-place damage to the live file; else a hard link; on another filesystem a verified
copy) under a dotfile temp name and renames it into place, so K3s never sees a partial archive.
Every path comes from ``Layout`` (resolved inside the root, THREATS 32).
``undo`` replays the records. All three are idempotent: a run killed inside any of them is
finished or undone by the next run (see ``txn``).
"""

import errno
import os
import shutil
import stat
from typing import Any, Callable, Dict, List, Optional

from installer.errors import EnvironmentProblem
from installer.fsio import (
    batched_fsync,
    fsync_dir,
    hash_file,
    iter_file,
    open_regular,
    reflink,
    write_verified,
)
from installer.host.layout import (
    KEPT_ASIDE,
    LIVE_TMP_PREFIX,
    MANAGED_DIRS,
    Layout,
    Target,
    touched_paths,
)
from installer.host.state import Release

_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)
# Placement order: image archives first, the binary last, then what the old release no
# longer has. Each group ends at a named fail point.
_GROUPS = (("images", "var/lib/rancher/k3s/agent/images/"),
           ("charts", "var/lib/rancher/k3s/server/static/charts/"),
           ("manifests", "var/lib/rancher/k3s/server/manifests/"),
           ("config", "etc/rancher/k3s/"),
           ("binary", "usr/local/bin/"))
IMAGES_PREFIX = _GROUPS[0][1]


def _lstat(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _same_file(a: Optional[os.stat_result], b: Optional[os.stat_result]) -> bool:
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def put(src: str, dest: str, *, sha256: Optional[str], size: Optional[int], mode: int) -> None:
    """Make ``dest`` hold ``src``'s bytes atomically: reflink or hard link (no copy), else a
    verified copy, under a dotfile temp name, then rename. ``src`` may be a symlink (a
    backed-up foreign symlink, restored as one)."""
    folder = os.path.dirname(dest)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, LIVE_TMP_PREFIX + os.path.basename(dest))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), tmp)
    elif not reflink(src, tmp, mode=mode):
        try:
            os.link(src, tmp, follow_symlinks=False)
            os.chmod(tmp, mode)
        except OSError as e:
            if e.errno not in _NO_LINK:
                raise
            with open_regular(src, what="staged file") as f:
                write_verified(dest, iter_file(f), sha256=sha256, size=size, mode=mode,
                               what=dest, tmp_prefix=LIVE_TMP_PREFIX)
            return
    os.replace(tmp, dest)
    if os.path.lexists(tmp):  # rename() is a no-op when both names are one inode
        os.unlink(tmp)
    fsync_dir(folder)


def _backup(path: str, backup: str) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(path), backup)
        return
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        shutil.copyfile(path, backup, follow_symlinks=False)
        os.chmod(backup, stat.S_IMODE(st.st_mode))
        with open(backup, "rb") as f:
            os.fsync(f.fileno())


def union_targets(old: Optional[Release], new: Release) -> List[str]:
    """Every live path the change touches: the new release's, then the old one's leftovers
    (and the kept hand-written registries.yaml: ``layout.touched_paths``)."""
    return touched_paths(new.targets, old.targets if old is not None else ())


def prepare(layout: Layout, backup_dir: str, old: Optional[Release],
            *, new: Release) -> List[Dict[str, Any]]:
    """Record how to restore every path the change touches; back up foreign files."""
    old_map = {t.target: t for t in old.targets} if old else {}
    os.makedirs(backup_dir, exist_ok=True)
    records = []
    for n, rel in enumerate(union_targets(old, new)):
        path = layout.path(rel)
        st = _lstat(path)
        if st is None:
            records.append({"target": rel, "kind": "absent"})
            continue
        if stat.S_ISDIR(st.st_mode):
            raise EnvironmentProblem(f"{path} is a folder where a file must go",
                                     hint="move it away and retry")
        mine = old_map.get(rel)
        if mine is not None and old is not None \
                and os.path.isfile(layout.release_file(old.digest, mine.member)):
            records.append({"target": rel, "kind": "release"})
            continue
        name = f"{n:05d}"
        _backup(path, os.path.join(backup_dir, name))
        records.append({"target": rel, "kind": "backup", "backup": name})
    fsync_dir(backup_dir)
    return records


def _already_placed(dest: str, src: str, t: Target, *, old_t: Optional[Target],
                    old_src: Optional[str]) -> bool:
    st = _lstat(dest)
    if st is None or not stat.S_ISREG(st.st_mode):
        return False
    if _same_file(st, _lstat(src)):
        return True
    if old_t is not None and old_t.sha256 == t.sha256 and old_src is not None \
            and _same_file(st, _lstat(old_src)):
        return True  # unchanged archive: leave it, so K3s does not re-import it
    if st.st_size != t.size or stat.S_IMODE(st.st_mode) != t.mode:
        return False
    return hash_file(dest)[0] == t.sha256


def apply(layout: Layout, old: Optional[Release], new: Release,
          *, hit: Callable[[str], None]) -> List[str]:
    """Place ``new`` and remove what only ``old`` had. Idempotent. Returns sentences for the
    operator (a hand-written registries.yaml kept aside or put back)."""
    with batched_fsync():  # one sync for thousands of small files (fsio.batched_fsync)
        return _apply(layout, old, new, hit=hit)


def _apply(layout: Layout, old: Optional[Release], new: Release,
           *, hit: Callable[[str], None]) -> List[str]:
    old_map = {t.target: t for t in old.targets} if old else {}
    notes: List[str] = []
    for target in KEPT_ASIDE:
        notes += _keep_aside(layout, old_map, new, target=target)
    for group, prefix in _GROUPS:
        for t in new.targets:
            if not t.target.startswith(prefix):
                continue
            src = layout.release_file(new.digest, t.member)
            old_t = old_map.get(t.target)
            old_src = layout.release_file(old.digest, old_t.member) if old and old_t else None
            if not _already_placed(layout.path(t.target), src, t, old_t=old_t, old_src=old_src):
                put(src, layout.path(t.target), sha256=t.sha256, size=t.size, mode=t.mode)
        hit("after-place-" + group)
    keep = {t.target for t in new.targets}
    for t in old.targets if old else ():
        if t.target not in keep and not t.target.startswith(IMAGES_PREFIX):
            _remove(layout.path(t.target))
            if t.target in KEPT_ASIDE:
                notes += _put_back(layout, t.target)
    hit("after-remove-old")
    return notes


def _keep_aside(layout: Layout, old_map: Dict[str, Target], new: Release, *,
                target: str) -> List[str]:
    """An operator's file at ``target`` (registries.yaml, the K3s config drop-in) that we did
    not place, about to be replaced by the bundle's: keep it under its ``KEPT_ASIDE`` name
    (the undo records cover that path too; THREATS 51)."""
    if target in old_map or all(t.target != target for t in new.targets):
        return []
    live = layout.path(target)
    st = _lstat(live)
    if st is None or stat.S_ISDIR(st.st_mode):
        return []
    kept_rel, without = KEPT_ASIDE[target]
    put(live, layout.path(kept_rel), sha256=None, size=None, mode=stat.S_IMODE(st.st_mode))
    return [f"kept the hand-written /{target} as /{kept_rel}: bundle "
            f"{new.name} {new.version} brings its own (it is put back when a release "
            f"without {without} replaces this one)"]


def _put_back(layout: Layout, target: str) -> List[str]:
    """The bundle's file at ``target`` is gone: put a kept hand-written one back."""
    kept_rel = KEPT_ASIDE[target][0]
    kept = layout.path(kept_rel)
    st = _lstat(kept)
    if st is None or stat.S_ISDIR(st.st_mode):
        return []
    live = layout.path(target)
    os.replace(kept, live)
    fsync_dir(os.path.dirname(live))
    return [f"put the hand-written /{target} back from /{kept_rel}"]


def remove_replaced_images(layout: Layout, old: Optional[Release], new: Release) -> List[str]:
    """After the commit: remove the old release's image archives the new one does not carry.

    They stay in place until then (``apply`` leaves them), so an undone change never has to
    bring an archive back that K3s would import again; the kept release folder still holds
    them for a rollback. Idempotent (a run killed here is finished by recovery)."""
    keep = {t.target for t in new.targets}
    removed = []
    for t in old.targets if old else ():
        if t.target.startswith(IMAGES_PREFIX) and t.target not in keep:
            _remove(layout.path(t.target))
            removed.append(t.target)
    return removed


def undo(layout: Layout, backup_dir: str, old: Optional[Release],
         *, records: List[Dict[str, Any]]) -> None:
    """Put every recorded path back as it was before ``prepare``. Idempotent."""
    old_map = {t.target: t for t in old.targets} if old else {}
    for rec in reversed(records):
        path = layout.path(rec["target"])
        if rec["kind"] == "absent":
            _remove(path)
        elif rec["kind"] == "backup":
            saved = os.path.join(backup_dir, rec["backup"])
            if os.path.lexists(saved) and not _same_file(_lstat(path), _lstat(saved)):
                st = os.lstat(saved)
                put(saved, path, sha256=None, size=None, mode=stat.S_IMODE(st.st_mode))
        else:
            t = old_map[rec["target"]]
            assert old is not None  # check_journal: "release" records need a "from"
            src = layout.release_file(old.digest, t.member)
            if not _already_placed(path, src, t, old_t=None, old_src=None):
                put(src, path, sha256=t.sha256, size=t.size, mode=t.mode)


def _remove(path: str) -> None:
    st = _lstat(path)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        fsync_dir(os.path.dirname(path))


def sweep_temp_files(layout: Layout) -> None:
    """Remove our dotfile temp names left in live folders by a killed run."""
    for rel in MANAGED_DIRS:
        folder = layout.path(rel, follow=True)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith(LIVE_TMP_PREFIX):
                _remove(os.path.join(folder, name))


def foreign_files(layout: Layout, release: Optional[Release]) -> List[str]:
    """Files in the images folder this installer did not place (left alone, reported)."""
    ours = {t.target for t in release.targets} if release else set()
    folder = "var/lib/rancher/k3s/agent/images"
    try:
        names = sorted(os.listdir(layout.path(folder, follow=True)))
    except FileNotFoundError:
        return []
    return [folder + "/" + n for n in names
            if not n.startswith(".") and folder + "/" + n not in ours]
