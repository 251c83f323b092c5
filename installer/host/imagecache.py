"""K3s's image import cache, opted into (never edited).

K3s imports every archive in ``agent/images`` at every start (~30 s for its own airgap
tarball) unless ``agent/images/.cache.json`` exists; then it records each archive's size and
mtime there (and, from k3s-io/k3s#14266, its image names) and skips unchanged archives on the
next start. K3s only rewrites the file when it exists (it opens it without O_CREAT), so the
opt-in is creating it. K3s documents ``touch`` (an empty file); we write ``{}``, the empty form
of the JSON object K3s writes itself, so the file is valid JSON from the start.

Sources: https://github.com/k3s-io/k3s/pull/12237 (the cache),
https://github.com/k3s-io/docs/pull/422 (the opt-in, K3s >= 1.30.13/1.31.9/1.32.5/1.33.1).

Because archives are placed under content-derived names (``layout.image_archive_name``), a new
archive is a new path K3s has no cache entry for, whatever its size and mtime; an unchanged one
keeps path, inode and mtime, so K3s skips it.
"""

import os

from installer.fsio import fsync_dir
from installer.host.layout import IMAGES_DIR, LIVE_TMP_PREFIX, Layout

CACHE_NAME = ".cache.json"
EMPTY = b"{}"


def cache_path(layout: Layout) -> str:
    return layout.path(IMAGES_DIR + "/" + CACHE_NAME)


def opt_in(layout: Layout) -> bool:
    """Create ``agent/images/.cache.json`` as ``{}`` when it is absent; True when created.

    Never replaces an existing file (K3s's entries, or the operator's): the complete file is
    written under a temp name and hard-linked into place, which fails if the name exists. So a
    crash leaves either no cache file or a complete one, never a torn one.
    """
    final = cache_path(layout)
    if os.path.lexists(final):
        return False
    folder = os.path.dirname(final)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, LIVE_TMP_PREFIX + CACHE_NAME)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, EMPTY)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, final)
        created = True
    except FileExistsError:  # K3s or someone else was quicker: theirs stays
        created = False
    finally:
        os.unlink(tmp)
    fsync_dir(folder)
    return created


def enabled(layout: Layout) -> bool:
    return os.path.isfile(cache_path(layout))
