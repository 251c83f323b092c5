"""Facts about this host that policy decisions need: architecture, which bundle on a USB
folder, free space per destination filesystem. Reads only; decisions are in ``policy``."""

import os
import platform
from typing import Dict, List, Optional, Sequence, Tuple

from installer import arch, policy
from installer.errors import ConfigError, FormatError
from installer.format.bundlefmt import Manifest
from installer.host.layout import Layout, Target


def host_arch(layout: Layout, override: Optional[str]) -> str:
    """This host's bundle architecture; ``--arch`` only when installing into another root."""
    if override is not None:
        if os.path.realpath(layout.root) == "/":
            raise ConfigError("--arch only applies with --root other than /",
                              hint="the live system installs its own architecture "
                                   f"({platform.machine()})")
        try:  # x86_64, aarch64, armhf, armv7l are aliases, as in the builder
            return arch.normalize(override)
        except ValueError as e:
            raise ConfigError(f"--arch: {e}") from None
    return policy.machine_to_arch(platform.machine())


def resolve_source(source: str, arch: str) -> Tuple[str, Optional[policy.BundleFile]]:
    """A bundle file as given, or the newest bundle for ``arch`` in a folder (a USB stick)."""
    if os.path.isdir(source):
        chosen = policy.pick_bundle(os.listdir(source), arch, folder=source)
        return os.path.join(source, chosen.file), chosen
    if not os.path.exists(source):
        raise ConfigError(f"{source} does not exist",
                          hint="pass a bundle file or the folder (USB stick) holding bundles")
    return source, None


def check_file_name(chosen: policy.BundleFile, manifest: Manifest) -> None:
    """A file picked by its name must be what its signed manifest says it is."""
    said = (chosen.name, chosen.arch)
    signed = (manifest.name, manifest.arch)
    if said != signed or policy.compare_versions(chosen.version, manifest.version) != 0:
        raise FormatError(
            f"{chosen.file} is named as {chosen.name} {chosen.version} ({chosen.arch}) but "
            f"its signed manifest is {manifest.name} {manifest.version} ({manifest.arch})",
            hint="the file was renamed; pass it explicitly if you trust it, or copy it again")


def _existing(path: str) -> str:
    """The nearest existing folder at or above ``path`` (where a new folder would live)."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _fs(path: str) -> Tuple[str, int, str]:
    where = _existing(path)
    st = os.statvfs(where)
    return str(os.stat(where).st_dev), st.f_bavail * st.f_frsize, where


def space_needs(layout: Layout, manifest: Manifest,
                targets: Sequence[Target]) -> List[policy.Shortfall]:
    """Per-filesystem shortfalls for staging ``manifest`` and placing ``targets``.

    Staging holds the whole payload on the filesystem of the state folder; a live file on
    that same filesystem is a hard link (no space), on another one a copy (its size).
    """
    needs: Dict[str, int] = {}
    free: Dict[str, int] = {}
    where: Dict[str, str] = {}
    stage_fs, stage_free, stage_where = _fs(layout.airgap)
    needs[stage_fs] = manifest.payload_size + len(manifest.to_bytes()) * 2
    free[stage_fs], where[stage_fs] = stage_free, stage_where
    for t in targets:
        fs, avail, at = _fs(os.path.dirname(layout.path(t.target)))
        free.setdefault(fs, avail)
        where.setdefault(fs, at)
        if fs != stage_fs:
            needs[fs] = needs.get(fs, 0) + t.size
    return policy.space_shortfalls(needs, free, where)
