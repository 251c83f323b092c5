"""Delta bundles: a built bundle minus every member its base already holds (format:
``installer/bundlefmt.py``, ``Delta``; docs/bundle-format.md).

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
from dataclasses import dataclass
from pathlib import Path

from installer import bundlefmt, receipt
from installer.bundlefmt import BundleReader, Delta
from installer.errors import InstallerError
from installer.fsio import atomic_output, iter_file
from installer.verify import check_envelope

from .bundlewrite import hashed, member_offsets
from .errors import SpecError


@dataclass(frozen=True)
class Base:
    digest: str
    name: str
    version: str
    arch: str
    shas: frozenset[str]
    source: str


def load_base(path: Path) -> Base:
    """A receipt (JSON) or a bundle file: what the device holds."""
    try:
        with open(path, "rb") as f:
            head = f.read(1)
            f.seek(0)
            if head == b"{":
                r = receipt.parse(f.read(receipt.MAX_RECEIPT + 1))
                return Base(r.digest, r.name, r.version, r.arch,
                            frozenset(m.sha256 for m in r.members), f"receipt {path}")
            header = BundleReader(f, what=f"base bundle {path}").header()
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
                frozenset(x.sha256 for x in m.members), f"bundle {path}")


def delta_path(full: Path) -> Path:
    assert full.name.endswith(".tar")
    return full.with_name(full.name[:-len(".tar")] + bundlefmt.DELTA_SUFFIX)


def write_delta(full: Path, base: Base) -> tuple[Path, Delta]:
    """Write ``<full minus .tar>.delta.tar`` beside the full bundle ``full``."""
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
        delta = Delta(base_digest=base.digest, base_name=base.name,
                      base_version=base.version, target_digest=digest, carried=carried)
        offsets = {name: off for name, off, _, _ in member_offsets(header)}
        dest = delta_path(full)

        def chunks(member: bundlefmt.Member) -> Iterator[bytes]:
            f.seek(offsets[member.path])
            return hashed(iter_file(f, limit=member.size), member, dest)

        with atomic_output(dest) as out:
            for chunk in bundlefmt.iter_bundle(manifest=m, signatures=header.signatures,
                                               roots=header.roots,
                                               member_chunks=chunks,
                                               delta=delta):
                out.write(chunk)
    return dest, delta


def savings(full: Path, delta: Path) -> dict[str, int]:
    return {"full_size": os.stat(full).st_size, "delta_size": os.stat(delta).st_size}
