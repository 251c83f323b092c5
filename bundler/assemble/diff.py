"""`bundle diff`: what changed between two bundles or two locks.

The core is pure: each side becomes a mapping of bundle name to :class:`Snapshot` (K3s
version, images by reference with their digests, charts by name, files by path with sha256
and size, and the text of manifest files where it is at hand), and :func:`diff` compares two
such mappings. Loading is a thin shell: a lock is read with ``lockfile.read_lock``; a bundle's
header with the installer's own bounded reader and its envelope check (so only a well-formed,
validated manifest is compared, and no hostile tar header is ever parsed), and its manifest
texts at their known offsets, each checked against the manifest's sha256. Signatures are not
verified: `bundle verify` does that.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bundler.errors import SpecError
from bundler.spec.lockfile import Lock, read_lock
from installer.errors import InstallerError
from installer.format.bundlefmt import BundleReader, Header, Manifest
from installer.format.envelope import check_envelope, envelope
from installer.policy import human_bytes

MAX_TEXT = 1 << 20  # a manifest larger than this is compared by hash only
_SHA_RE = re.compile(r"sha256:([0-9a-f]{64})")


def _short(m: re.Match[str]) -> str:
    return f"sha256:{m.group(1)[:12]}"   # text output only; --json keeps full digests


@dataclass(frozen=True)
class Snapshot:
    """One bundle's comparable content (a built bundle for one arch, or a locked bundle)."""

    name: str
    version: str
    arch: str
    k3s: str
    images: dict[str, str]                  # ref -> digest (per-arch manifest, or index)
    charts: dict[str, str]                  # name -> version
    files: dict[str, tuple[str, int]]       # path -> (sha256, size)
    texts: dict[str, str] = field(default_factory=dict)  # manifest path -> text, if known

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files.values())


@dataclass(frozen=True)
class Change:
    """One difference: ``kind`` is added, removed or changed; ``old``/``new`` the values."""

    section: str    # "bundle", "k3s", "images", "charts", "files"
    key: str
    kind: str
    old: str | None = None
    new: str | None = None
    text_diff: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"section": self.section, "key": self.key, "change": self.kind,
                             "old": self.old, "new": self.new}
        if self.text_diff:
            d["diff"] = "".join(self.text_diff)
        return d


@dataclass(frozen=True)
class BundleDiff:
    name: str
    old: Snapshot | None
    new: Snapshot | None
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Diff:
    bundles: tuple[BundleDiff, ...]

    @property
    def changed(self) -> bool:
        return any(b.changes for b in self.bundles)

    def to_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "bundles": {
            b.name: {"old": _brief(b.old), "new": _brief(b.new),
                     "size": {"old": b.old.size if b.old else None,
                              "new": b.new.size if b.new else None},
                     "changes": [c.to_json() for c in b.changes]}
            for b in self.bundles}}


def _brief(s: Snapshot | None) -> dict[str, str] | None:
    return None if s is None else {"version": s.version, "arch": s.arch, "k3s": s.k3s}


def _mapping(section: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    out: list[Change] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        kind = "added" if a is None else "removed" if b is None else "changed"
        out.append(Change(section, key, kind, None if a is None else str(a),
                          None if b is None else str(b)))
    return out


def _files(old: Snapshot, new: Snapshot) -> list[Change]:
    out: list[Change] = []
    for key in sorted(set(old.files) | set(new.files)):
        a, b = old.files.get(key), new.files.get(key)
        if a == b:
            continue
        kind = "added" if a is None else "removed" if b is None else "changed"
        text: tuple[str, ...] = ()
        if key in old.texts or key in new.texts:
            text = tuple(difflib.unified_diff(
                old.texts.get(key, "").splitlines(keepends=True),
                new.texts.get(key, "").splitlines(keepends=True),
                fromfile=f"old/{key}", tofile=f"new/{key}"))
        out.append(Change("files", key, kind,
                          None if a is None else f"sha256:{a[0]} ({a[1]} bytes)",
                          None if b is None else f"sha256:{b[0]} ({b[1]} bytes)", text))
    return out


def diff_snapshots(old: Snapshot, new: Snapshot) -> list[Change]:
    """Every difference between two snapshots of one bundle, in a stable order."""
    changes = _mapping("bundle", {"version": old.version, "arch": old.arch},
                       {"version": new.version, "arch": new.arch})
    changes += _mapping("k3s", {"version": old.k3s}, {"version": new.k3s})
    changes += _mapping("images", old.images, new.images)
    changes += _mapping("charts", old.charts, new.charts)
    return changes + _files(old, new)


def diff(old: dict[str, Snapshot], new: dict[str, Snapshot]) -> Diff:
    """Compare two sides bundle by bundle (a bundle present on one side only is all added or
    all removed). Pure."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is not None and b is not None:
            changes = tuple(diff_snapshots(a, b))
        else:
            only = a or b
            assert only is not None
            changes = (Change("bundle", name, "removed" if b is None else "added",
                              only.version if b is None else None,
                              only.version if a is None else None),)
        out.append(BundleDiff(name, a, b, changes))
    return Diff(tuple(out))


def render_text(d: Diff) -> str:
    """For people: one block per bundle, ``+``/``-``/``~`` per change, unified text diffs of
    manifests, and the size change."""
    if not d.changed:
        return "no changes"
    lines: list[str] = []
    sign = {"added": "+", "removed": "-", "changed": "~"}
    for b in d.bundles:
        if not b.changes:
            lines.append(f"bundle {b.name}: unchanged")
            continue
        head = f"bundle {b.name}"
        if b.old and b.new:
            head += f": {b.old.version} -> {b.new.version} ({b.new.arch})"
        lines.append(head)
        section = None
        for c in b.changes:
            if c.section != section:
                section = c.section
                lines.append(f"  {section}:")
            value = (c.new if c.kind == "added" else c.old if c.kind == "removed"
                     else f"{c.old} -> {c.new}")
            lines.append(f"    {sign[c.kind]} {c.key}  {_SHA_RE.sub(_short, value or '')}")
            lines.extend("      " + t.rstrip("\n") for t in c.text_diff)
        if b.old and b.new and b.old.size != b.new.size:
            delta = b.new.size - b.old.size
            lines.append(f"  size: {human_bytes(b.old.size)} -> {human_bytes(b.new.size)} "
                         f"({'+' if delta > 0 else '-'}{human_bytes(abs(delta))})")
    return "\n".join(lines)


# ---- loading (the thin I/O shell) -------------------------------------------------------

def snapshot_of_manifest(m: Manifest, texts: dict[str, str]) -> Snapshot:
    return Snapshot(name=m.name, version=m.version, arch=m.arch, k3s=m.k3s_version,
                    images={i.ref: i.digest for i in m.images},
                    charts={c.name: c.version for c in m.charts},
                    files={mem.path: (mem.sha256, mem.size) for mem in m.members},
                    texts=texts)


def snapshots_of_lock(lock: Lock) -> dict[str, Snapshot]:
    """A locked bundle covers all its arches: images compare by the digest the tag resolved
    to, files by the lock's pins (K3s files per arch, charts, manifests)."""
    out = {}
    for name, b in lock.bundles.items():
        files: dict[str, tuple[str, int]] = {
            "k3s/install.sh": (b.k3s.install_script.sha256, b.k3s.install_script.size)}
        for arch, f in sorted(b.k3s.binaries.items()):
            files[f"k3s/{arch}/k3s"] = (f.sha256, f.size)
        for arch, f in sorted(b.k3s.airgap_images.items()):
            files[f"k3s/{arch}/airgap-images"] = (f.sha256, f.size)
        for c in b.charts:
            files[f"charts/{c.name}-{c.version}.tgz"] = (c.sha256, c.size)
        for m in b.manifests:
            files[m.url] = (m.sha256, m.size)
        out[name] = Snapshot(name=name, version=b.version, arch=",".join(b.arch),
                             k3s=b.k3s.version, images={i.ref: i.digest for i in b.images},
                             charts={c.name: c.version for c in b.charts}, files=files)
    return out


def _manifest_texts(f: BinaryIO, header: Header) -> dict[str, str]:
    """Texts of the bundle's manifest members, read at their offsets (the envelope was proved
    canonical first, so no tar header is parsed twice) and each checked against the
    manifest's sha256 (a member that does not match is compared by hash only)."""
    kinds = {mem.path: mem.kind for mem in header.manifest.members}
    texts: dict[str, str] = {}
    for slot in envelope(header).slots:
        if kinds.get(slot.name) != "manifest" or slot.size > MAX_TEXT:
            continue
        f.seek(slot.data_offset)
        data = f.read(slot.size)
        if hashlib.sha256(data).hexdigest() == slot.sha256:
            texts[slot.name] = data.decode("utf-8", errors="replace")
    return texts


def _is_tar(path: Path) -> bool:
    with open(path, "rb") as f:  # ustar magic; the bundle's own reader checks the rest
        f.seek(257)
        return f.read(5) == b"ustar"


def load(path: Path) -> tuple[str, dict[str, Snapshot]]:
    """``("bundle"|"lock", snapshots)`` for a file given on the command line."""
    try:
        if not path.is_file():
            raise SpecError(f"{path}: not a file", hint="give two bundle files or two locks")
        if _is_tar(path):
            try:
                with open(path, "rb") as f:
                    header = BundleReader(f, what=str(path)).header()
                    check_envelope(f.fileno(), header, what=str(path))
                    m = header.manifest
                    return "bundle", {m.name: snapshot_of_manifest(m,
                                                                   _manifest_texts(f, header))}
            except InstallerError as e:
                raise SpecError(f"{path}: not a readable bundle: {e}",
                                hint="copy it again, or check it with `bundle verify`") \
                    from None
        return "lock", snapshots_of_lock(read_lock(path))
    except OSError as e:
        raise SpecError(f"{path}: cannot read it ({e.strerror})") from None


def diff_files(old: Path, new: Path) -> Diff:
    """Load both sides (two bundles or two locks) and compare them."""
    kind_a, a = load(old)
    kind_b, b = load(new)
    if kind_a != kind_b:
        raise SpecError(f"cannot compare a {kind_a} ({old}) with a {kind_b} ({new})",
                        hint="give two bundle files or two bundles.lock files")
    if kind_a == "bundle":
        # two bundles of different names are still one comparison, not "removed"+"added"
        (na, sa), (nb, sb) = next(iter(a.items())), next(iter(b.items()))
        if na != nb:
            return Diff((BundleDiff(f"{na} -> {nb}", sa, sb,
                                    tuple([Change("bundle", "name", "changed", na, nb),
                                           *diff_snapshots(sa, sb)])),))
    return diff(a, b)
