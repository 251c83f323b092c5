"""Split bundles: parts of at most N bytes (FAT32 stops at 4 GiB), one XOR parity part, and a
signed index beside them.

Layout for a bundle ``B = NAME-VERSION-ARCH.tar`` split into ``n`` parts of ``part_size``:

- ``B.part-001`` .. ``B.part-NNN``: consecutive byte ranges of ``B``; every part but the last
  is exactly ``part_size`` bytes.
- ``B.part-parity`` (with parity): ``part_size`` bytes (the size of the first part), byte ``j``
  the XOR of byte ``j`` of every part (a shorter last part counts as zero-padded). Any ONE
  missing or damaged part is the XOR of the parity with all the other parts.
- ``B.parts.json``: the index, canonical JSON ``{"signed": {...}, "signatures": [...],
  "roots": [...]}``; ``signed`` names the bundle, its size and sha256, the part size, and every
  part (and the parity part) with size and sha256; it is signed by the ``targets`` keys like a
  bundle manifest and carries the root chain (as objects) so a device can advance its root.

The format is defined here once (stdlib only): the builder writes the index with
``PartsIndex.to_json`` and checks it with ``parse_index`` before signing; the installer reads it
with the same function. Reassembly (``reassemble``) reads every present part once, copying it to
one local file while hashing; only when a part is missing or damaged is it rebuilt, from the
parity part and the other parts' local copies, then checked against the index. Two bad parts
cannot be rebuilt: the error names both. The reassembled file is then an ordinary bundle, which
the caller verifies and installs exactly like one copied from a stick (its own signature still
decides; the index only locates damage).
"""

import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from installer.errors import (
    DigestMismatch,
    EnvironmentProblem,
    FormatError,
    SignatureError,
    UntrustedContent,
)
from installer.format import bundlefmt, canonjson, envelope
from installer.fsio import CHUNK, fsync_dir, open_regular
from installer.trust import rootmeta, verify

FORMAT = "k3s-airgap-parts/v1"
INDEX_SUFFIX = envelope.PARTS_INDEX_SUFFIX
PART_RE = re.compile(r"\.part-([0-9]{3})$")
PARITY_SUFFIX = ".part-parity"
MAX_PARTS = 999
MAX_INDEX = 4 * 1024 * 1024
MIN_PART_SIZE = 1024 * 1024
_BUNDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.tar$")

OnBytes = Optional[Callable[[int], None]]


@dataclass(frozen=True)
class PartFile:
    name: str
    size: int
    sha256: str

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class PartsIndex:
    bundle: str
    size: int
    sha256: str
    part_size: int
    parts: Tuple[PartFile, ...]
    parity: Optional[PartFile]

    def to_json(self) -> Dict[str, Any]:
        return {"format": FORMAT, "bundle": self.bundle, "size": self.size,
                "sha256": self.sha256, "part_size": self.part_size,
                "parts": [p.to_json() for p in self.parts],
                "parity": self.parity.to_json() if self.parity else None}

    def signed_bytes(self) -> bytes:
        return canonjson.encode(self.to_json())


def part_name(bundle: str, number: int) -> str:
    return f"{bundle}.part-{number:03d}"


def index_name(bundle: str) -> str:
    return bundle + INDEX_SUFFIX


def _part(obj: Any, what: str) -> PartFile:
    if not isinstance(obj, dict) or set(obj) != {"name", "size", "sha256"}:
        raise FormatError(f"{what} must hold exactly name, size and sha256")
    name, size, sha = obj["name"], obj["size"], obj["sha256"]
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise FormatError(f"{what}: bad file name {name!r}")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size < 1 << 50:
        raise FormatError(f"{what}: bad size {size!r}")
    if not isinstance(sha, str) or not bundlefmt.SHA256_HEX.match(sha):
        raise FormatError(f"{what}: sha256 must be 64 lowercase hex digits")
    return PartFile(name, size, sha)


def validate(index: PartsIndex) -> PartsIndex:
    """Every rule a device applies to an index, used by the builder before it signs one."""
    b = index.bundle
    if not _BUNDLE_RE.match(b):
        raise FormatError(f"parts index: bad bundle name {b!r}")
    if not bundlefmt.SHA256_HEX.match(index.sha256):
        raise FormatError("parts index: bundle sha256 must be 64 lowercase hex digits")
    if not 1 <= len(index.parts) <= MAX_PARTS:
        raise FormatError(f"parts index: {len(index.parts)} parts (1 to {MAX_PARTS} allowed)")
    if index.part_size < MIN_PART_SIZE:
        raise FormatError(f"parts index: part size {index.part_size} is below "
                          f"{MIN_PART_SIZE}")
    for i, p in enumerate(index.parts, 1):
        if p.name != part_name(b, i):
            raise FormatError(f"parts index: part {i} must be named {part_name(b, i)!r}, "
                              f"found {p.name!r}")
        last = i == len(index.parts)
        if (p.size > index.part_size) if last else (p.size != index.part_size):
            raise FormatError(f"parts index: {p.name} is {p.size} bytes; parts are "
                              f"{index.part_size} bytes (the last at most that)")
    if sum(p.size for p in index.parts) != index.size:
        raise FormatError("parts index: the parts do not add up to the bundle's size")
    if index.parity is not None:
        if index.parity.name != b + PARITY_SUFFIX:
            raise FormatError(f"parts index: the parity part must be named "
                              f"{b + PARITY_SUFFIX!r}")
        if index.parity.size != index.parts[0].size:
            raise FormatError("parts index: the parity part must be as long as the first part")
    return index


def parse_index(signed: Any) -> PartsIndex:
    """The ``signed`` object of an index file, checked strictly (pure)."""
    keys = {"format", "bundle", "size", "sha256", "part_size", "parts", "parity"}
    if not isinstance(signed, dict) or set(signed) != keys:
        raise FormatError("parts index must hold exactly " + ", ".join(sorted(keys)))
    if signed["format"] != FORMAT:
        raise FormatError(f"parts index format {signed['format']!r} is not {FORMAT!r}",
                          hint="use an installer as new as the builder")
    for key in ("size", "part_size"):
        if not isinstance(signed[key], int) or isinstance(signed[key], bool) \
                or not 0 < signed[key] < 1 << 50:
            raise FormatError(f"parts index: bad {key} {signed[key]!r}")
    if not isinstance(signed["bundle"], str) or not isinstance(signed["sha256"], str):
        raise FormatError("parts index: bundle and sha256 must be strings")
    if not isinstance(signed["parts"], list):
        raise FormatError("parts index: parts must be a list")
    parts = tuple(_part(p, f"parts index part {i + 1}") for i, p in
                  enumerate(signed["parts"][:MAX_PARTS + 1]))
    parity = None if signed["parity"] is None else _part(signed["parity"], "parts index parity")
    return validate(PartsIndex(signed["bundle"], signed["size"], signed["sha256"],
                               signed["part_size"], parts, parity))


def index_document(index: PartsIndex, signatures_doc: bytes, roots: Sequence[bytes]) -> bytes:
    """The index file's bytes: the signed object, its signatures, the root chain."""
    sigs = canonjson.loads_canonical(signatures_doc, what="index signatures")
    # roots travel as objects (canonical JSON has no escapes for the newlines of their pretty
    # form); a root's signatures cover its canonical ``signed`` part, so nothing is lost
    return canonjson.encode({"signed": index.to_json(), "signatures": sigs["signatures"],
                             "roots": [canonjson.loads_strict(r, what="root") for r in roots]})


def read_index(path: str, *, anchor: bytes, now: int,
               trusted_label: str = "this host trusts") -> PartsIndex:
    """Read and verify an index file: canonical, signed by a threshold of the ``targets`` keys
    of the device's root (advanced through the index's own chain)."""
    doc, index = _load_index(path)
    chain = [canonjson.encode(r) for r in doc["roots"]]
    try:
        rootmeta.verify_signed_manifest(
            anchor, chain, canonjson.encode(doc["signed"]),
            signatures_doc=canonjson.encode({"signatures": doc["signatures"]}), now=now)
    except SignatureError as e:  # the one wording of signature errors, naming both roots
        message = e.message.replace("bundle manifest", f"parts index {os.path.basename(path)}")
        raise SignatureError(f"{message} ({verify.root_ids(anchor, chain, trusted_label)})",
                             hint=e.hint or "split the bundle with the key folder whose root "
                                            "this device trusts") from None
    return index


def read_index_unverified(path: str) -> PartsIndex:
    """The index, checked for form only: for ``bundle inspect``, which verifies nothing (the
    reassembled bundle's own signature still decides wherever it is installed)."""
    return _load_index(path)[1]


def _load_index(path: str) -> Tuple[Dict[str, Any], PartsIndex]:
    with open_regular(path, what="parts index") as f:  # a FIFO must not hang us
        data = f.read(MAX_INDEX + 1)
    if len(data) > MAX_INDEX:
        raise FormatError(f"parts index {path} is larger than {MAX_INDEX} bytes")
    doc = canonjson.loads_canonical(data, what=f"parts index {os.path.basename(path)}")
    if not isinstance(doc, dict) or set(doc) != {"signed", "signatures", "roots"}:
        raise FormatError(f"parts index {path} must hold exactly signed, signatures, roots")
    roots = doc["roots"]
    if not isinstance(roots, list) or not all(isinstance(r, dict) for r in roots):
        raise FormatError(f"parts index {path}: roots must be a list of root documents")
    return doc, parse_index(doc["signed"])


# ---------------------------------------------------------------- reassembly (device side)

@dataclass(frozen=True)
class Reassembled:
    path: str                  # the local bundle file, verified part by part
    rebuilt: Optional[str]     # the part rebuilt from parity, if any


def _xor_into(acc: bytearray, data: bytes) -> None:
    n = len(data)
    x = int.from_bytes(acc[:n], "little") ^ int.from_bytes(data, "little")
    acc[:n] = x.to_bytes(n, "little")


def _copy_part(src: str, out: Any, part: PartFile, *, on_bytes: OnBytes) -> bool:
    """Copy one part into ``out`` at its offset while hashing; True when it matched."""
    h = hashlib.sha256()
    size = 0
    with open_regular(src, what="bundle part") as f:  # never a FIFO swapped in
        while size <= part.size:
            data = f.read(min(CHUNK, part.size + 1 - size))
            if not data:
                break
            h.update(data)
            size += len(data)
            if size <= part.size:
                out.write(data)
            if on_bytes is not None:
                on_bytes(len(data))
    return size == part.size and h.hexdigest() == part.sha256


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def check_present(folder: str, index: PartsIndex) -> List[str]:
    """Names of the parts that are absent, or of the wrong size, before anything is read."""
    bad = []
    for p in index.parts:
        path = os.path.join(folder, p.name)
        if not _regular(path) or os.path.getsize(path) != p.size:
            bad.append(p.name)
    return bad


def reassemble(folder: str, index: PartsIndex, dest_dir: str, *,
               on_bytes: OnBytes = None) -> Reassembled:
    """Rebuild ``index.bundle`` in ``dest_dir`` from the parts in ``folder``: each present part
    is read once; at most one missing or damaged part is rebuilt from parity. Raises naming
    every bad part when that is impossible; the partial file is then removed."""
    missing = set(check_present(folder, index))
    parity_ok = index.parity is not None and _regular(
        os.path.join(folder, index.parity.name)) and os.path.getsize(
        os.path.join(folder, index.parity.name)) == index.parity.size
    if len(missing) > 1 or (missing and not parity_ok):
        raise _beyond_repair(index, sorted(missing), parity_ok)
    dest = os.path.join(dest_dir, f".{index.bundle}.reassembling")
    try:
        fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # left by a killed run: ours, in our staging folder
        os.unlink(dest)
        fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "r+b") as out:
            bad = sorted(missing)
            for i, p in enumerate(index.parts):
                out.seek(i * index.part_size)
                if p.name in missing:
                    continue
                if not _copy_part(os.path.join(folder, p.name), out, p, on_bytes=on_bytes):
                    bad.append(p.name)
            if len(bad) > 1 or (bad and not parity_ok):
                raise _beyond_repair(index, sorted(bad), parity_ok)
            rebuilt = bad[0] if bad else None
            if rebuilt is not None:
                _rebuild(folder, index, out, name=rebuilt)
            out.truncate(index.size)
            out.flush()
            os.fsync(out.fileno())
        final = os.path.join(dest_dir, index.bundle)
        os.replace(dest, final)
        fsync_dir(dest_dir)
        return Reassembled(final, rebuilt)
    except BaseException as e:
        try:
            os.unlink(dest)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise EnvironmentProblem(f"no space left reassembling {index.bundle} in "
                                     f"{dest_dir}", hint=f"it needs {index.size} bytes free "
                                     "there; free space and retry") from None
        raise


def _rebuild(folder: str, index: PartsIndex, out: Any, *, name: str) -> None:
    """Rebuild part ``name`` from the parity part and the other parts' local copies in
    ``out``; check it against the index."""
    assert index.parity is not None
    target = next(i for i, p in enumerate(index.parts) if p.name == name)
    part = index.parts[target]
    h_parity = hashlib.sha256()
    h_part = hashlib.sha256()
    with open_regular(os.path.join(folder, index.parity.name),
                             what="parity part") as parity:
        offset = 0
        while offset < index.parity.size:
            chunk = parity.read(min(CHUNK, index.parity.size - offset))
            if not chunk:
                break
            h_parity.update(chunk)
            acc = bytearray(chunk)
            for i, p in enumerate(index.parts):
                if i == target or offset >= p.size:
                    continue
                out.seek(i * index.part_size + offset)
                _xor_into(acc, out.read(min(len(chunk), p.size - offset)))
            keep = bytes(acc[:max(0, min(len(acc), part.size - offset))])
            if keep:
                out.seek(target * index.part_size + offset)
                out.write(keep)
                h_part.update(keep)
            offset += len(chunk)
    if h_parity.hexdigest() != index.parity.sha256:
        raise DigestMismatch(f"{name} is missing or damaged and the parity part "
                             f"{index.parity.name} is damaged too: cannot rebuild",
                             hint=f"copy {name} or {index.parity.name} again from the source")
    if h_part.hexdigest() != part.sha256:
        raise DigestMismatch(f"{name} rebuilt from parity does not match the index",
                             hint="the parts come from different bundles: copy them again")


def _beyond_repair(index: PartsIndex, bad: List[str], parity_ok: bool) -> UntrustedContent:
    what = ", ".join(bad)
    if index.parity is None:
        reason = "these bundle parts have no parity part"
    elif not parity_ok:
        reason = f"its parity part {index.parity.name} is missing or of the wrong size"
    else:
        reason = "parity rebuilds only one part"
    return UntrustedContent(f"bundle {index.bundle}: parts missing or damaged: {what}; "
                            f"{reason}", hint=f"copy {what} again from the source")
