"""Delta targets in the ring repository (issue #27 item 1).

``bundle publish`` also writes, for each bundle it lists, deltas (``bundler/assemble/delta.py``)
from the newest releases of the same name and arch that the ring and the rings before it
list (``--deltas N``, default 2). Each is a signed target of the ring named
``<name>-<version>-<arch>.from-<base manifest sha256[:12]>.delta.tar`` whose custom metadata
holds no ``name``/``arch`` (so a device choosing a release never picks it) but:

- ``x-airgap-delta-base``: the manifest sha256 of the release it applies over;
- ``x-airgap-delta-for``: the target path of the full bundle it rebuilds;
- ``manifest_sha256``, ``base_version``, ``full_length``: the result, the base's version and
  the full bundle's size (so a status can show the saving).

Promote carries the deltas of the entries it copies; yank drops the deltas to what it removes.
"""

from __future__ import annotations

from functools import cmp_to_key
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, TargetFile, Targets

from bundler.assemble.delta import load_base, write_delta
from installer import policy
from installer.errors import InstallerError
from installer.fsio import hash_file

DELTA_BASE = "x-airgap-delta-base"
DELTA_FOR = "x-airgap-delta-for"
DEFAULT_DELTAS = 2


def is_delta(t: TargetFile) -> bool:
    return DELTA_FOR in t.custom


def deltas_for(md: Metadata[Targets], paths: set[str]) -> dict[str, TargetFile]:
    """The delta targets ``md`` lists whose full bundle is one of ``paths``."""
    return {p: t for p, t in md.signed.targets.items()
            if is_delta(t) and t.custom.get(DELTA_FOR) in paths}


def delta_name(filename: str, base_digest: str) -> str:
    assert filename.endswith(".tar")
    return f"{filename[:-len('.tar')]}.from-{base_digest[:12]}.delta.tar"


def bases(rings: list[Metadata[Targets]], *, name: str, arch: str, digest: str,
          n: int) -> list[TargetFile]:
    """The newest ``n`` releases (distinct manifests, not ``digest``) of ``name`` for
    ``arch`` that ``rings`` list."""
    found: dict[str, TargetFile] = {}
    for md in rings:
        for t in md.signed.targets.values():
            c = t.custom
            if is_delta(t) or c.get("name") != name or c.get("arch") != arch:
                continue
            key = str(c.get("manifest_sha256"))
            if key != digest and key not in found:
                found[key] = t
    ordered = sorted(found.values(), key=cmp_to_key(_older), reverse=True)
    return ordered[:max(n, 0)]


def _older(a: TargetFile, b: TargetFile) -> int:
    va, vb = str(a.custom.get("version", "")), str(b.custom.get("version", ""))
    try:
        return policy.compare_versions(va, vb)
    except InstallerError:  # an unparsable version sorts by its text
        return (va > vb) - (va < vb)


def make(full: Path, *, filename: str, digest: str, stored: Path, bases_: list[TargetFile],
         work: Path, now: int) -> list[tuple[str, TargetFile, Path, str, int]]:
    """Write the deltas of the verified bundle ``full`` (target ``filename``, manifest
    ``digest``) from each base (its stored bundle under ``stored``) into ``work``: ``(target
    path, TargetFile, file, sha256, size)`` each. A base whose bundle is not stored here
    (a repository copied without it) is skipped."""
    out = []
    full_size = full.stat().st_size
    for t in bases_:
        base_file = stored / f"{t.hashes['sha256']}.{t.path}"
        if not base_file.is_file():
            continue
        base = load_base(base_file)
        path = delta_name(filename, base.digest)
        dest, _ = write_delta(full, base, dest=work / path)
        sha, size = hash_file(dest)
        custom: dict[str, Any] = {DELTA_BASE: base.digest, DELTA_FOR: filename,
                                  "manifest_sha256": digest, "base_version": base.version,
                                  "full_length": full_size, "entered": now}
        out.append((path, TargetFile(size, {"sha256": sha}, path, {"custom": custom}), dest,
                    sha, size))
    return out
