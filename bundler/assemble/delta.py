"""Delta bundles: a built bundle minus every member its base already holds (format:
``installer/format/bundlefmt.py``, ``Delta``; docs/bundle-format.md).

The base is a device's receipt (``airgap-install receipt``) or the old bundle file. The delta
carries the full bundle's signed envelope unchanged (so the device rebuilds, with the same
writer, a file byte-identical to the full bundle and installs that), ``delta.json`` naming
the exact base manifest, and the members whose sha256 the base lacks. It is written by the
one bundle writer (``bundlefmt.iter_bundle`` with ``delta=``) from the full bundle just
built, each member hashed on the way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bundler.assemble.bundlewrite import hashed
from bundler.errors import SpecError
from installer.errors import InstallerError
from installer.format import bundlefmt
from installer.format.bundlefmt import BundleReader, Delta
from installer.format.envelope import check_envelope, envelope
from installer.fsio import atomic_output, iter_file
from installer.host import receipt
from installer.host.delta import MIN_REF, archive_blobs


@dataclass(frozen=True)
class Base:
    digest: str
    name: str
    version: str
    arch: str
    shas: frozenset[str]
    source: str
    blobs: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # hex -> path, off, n


def load_base(path: Path) -> Base:
    """A receipt (JSON) or a bundle file: what the device holds."""
    try:
        with open(path, "rb") as f:
            head = f.read(1)
            f.seek(0)
            if head == b"{":
                r = receipt.parse(f.read(receipt.MAX_RECEIPT + 1))
                blobs = {hex_: (p, off, n) for p, listed in r.blobs for hex_, off, n in listed}
                return Base(r.digest, r.name, r.version, r.arch,
                            frozenset(m.sha256 for m in r.members), f"receipt {path}", blobs)
            header = BundleReader(f, what=f"base bundle {path}").header()
            check_envelope(f.fileno(), header, what=str(path))
            blobs = {}
            offsets = {s.name: s.data_offset for s in envelope(header).slots}
            for mem in header.manifest.members:
                if mem.kind == "images" and mem.path.endswith(".tar"):
                    try:
                        found = archive_blobs(f, start=offsets[mem.path], size=mem.size,
                                              what=f"{path}: {mem.path}")
                    except InstallerError:
                        continue
                    blobs.update({h: (mem.path, off, n) for h, off, n in found})
    except OSError as e:
        raise SpecError(f"--delta-from {path}: {e.strerror}",
                        hint="pass a receipt from `airgap-install receipt` or the old "
                             "bundle file") from None
    except InstallerError as e:
        raise SpecError(f"--delta-from {path}: {e.message}",
                        hint=e.hint or "pass a receipt from `airgap-install receipt` or the "
                                       "old bundle file") from None
    m = header.manifest
    return Base(hashlib.sha256(header.manifest_bytes).hexdigest(), m.name, m.version, m.arch,
                frozenset(x.sha256 for x in m.members), f"bundle {path}", blobs)


def delta_path(full: Path) -> Path:
    assert full.name.endswith(".tar")
    return full.with_name(full.name[:-len(".tar")] + bundlefmt.DELTA_SUFFIX)


def write_delta(full: Path, base: Base, *, dest: Path | None = None) -> tuple[Path, Delta]:
    """Write ``dest`` (default ``<full minus .tar>.delta.tar`` beside the full bundle
    ``full``)."""
    with open(full, "rb") as f:
        header = BundleReader(f, what=str(full)).header()
        check_envelope(f.fileno(), header, what=str(full))
        m = header.manifest
        if base.arch != m.arch:
            raise SpecError(f"--delta-from {base.source} is for {base.arch}, the bundle for "
                            f"{m.arch}", hint="give the receipt or bundle of a device of "
                                              "this architecture")
        digest = hashlib.sha256(header.manifest_bytes).hexdigest()
        if base.digest == digest:
            raise SpecError(f"--delta-from {base.source} is this very bundle "
                            f"({m.name} {m.version}): nothing to send")
        carried = tuple(x.path for x in m.members if x.sha256 not in base.shas)
        offsets = {s.name: s.data_offset for s in envelope(header).slots}
        patches = []
        for x in m.members:
            if x.path in carried and x.kind == "images" and x.path.endswith(".tar"):
                segs = _segments(f, offsets[x.path], x, base=base)
                if segs is not None:
                    patches.append((x.path, segs))
        delta = Delta(base_digest=base.digest, base_name=base.name,
                      base_version=base.version, target_digest=digest, carried=carried,
                      patches=tuple(patches))
        dest = dest or delta_path(full)

        def chunks(member: bundlefmt.Member) -> Iterator[bytes]:
            segs = delta.segments(member.path)
            if segs is not None:
                return _literal(f, offsets[member.path], segs)
            f.seek(offsets[member.path])
            return hashed(iter_file(f, limit=member.size), member, dest)

        with atomic_output(dest) as out:
            for chunk in bundlefmt.iter_bundle(manifest=m, signatures=header.signatures,
                                               roots=header.roots,
                                               member_chunks=chunks,
                                               delta=delta):
                out.write(chunk)
    return dest, delta


def _segments(f: object, start: int, member: bundlefmt.Member,
              *, base: Base) -> tuple[tuple[object, ...], ...] | None:
    """How to rebuild an images archive from literal bytes and the base's blobs; None when
    the base holds none of its (large) blobs or it is not an OCI layout tar."""
    try:
        found = archive_blobs(f, start=start, size=member.size,  # type: ignore[arg-type]
                              what=member.path)
    except InstallerError:
        return None
    segs: list[tuple[object, ...]] = []
    pos = 0
    for hex_, off, n in found:
        ref = base.blobs.get(hex_)
        if ref is None or n < MIN_REF or ref[2] != n:
            continue
        if off > pos:
            segs.append(("lit", off - pos))
        segs.append(("ref", ref[0], ref[1], n, hex_))
        pos = off + n
    if not any(s[0] == "ref" for s in segs):
        return None
    if member.size > pos:
        segs.append(("lit", member.size - pos))
    return tuple(segs)


def _literal(f: object, start: int, segs: tuple[tuple[object, ...], ...]) -> Iterator[bytes]:
    pos = 0
    for seg in segs:
        n = seg[1] if seg[0] == "lit" else seg[3]
        assert isinstance(n, int)
        if seg[0] == "lit":
            f.seek(start + pos)  # type: ignore[attr-defined]
            yield from iter_file(f, limit=n)  # type: ignore[arg-type]
        pos += n


def savings(full: Path, delta: Path) -> dict[str, int]:
    return {"full_size": os.stat(full).st_size, "delta_size": os.stat(delta).st_size}
