"""The bundle envelope, defined once: which tar members a bundle file holds, in which order,
with which exact headers, at which offsets (``layout``, ``envelope``); the check that a file
is byte for byte that envelope (``check_envelope``); what a path is (``kind_of``); and one
member's bytes read without ``tarfile`` (``read_member``).

The writer (``bundlefmt.iter_bundle``, used by the builder and by the device's delta rebuild)
emits exactly ``layout``; the verifier rebuilds the same ``layout`` from the signed manifest
and compares. Everything read here before a signature is checked goes through ``tarstream``,
the one bounded tar reader. Pure over bytes except ``check_envelope`` (pread on a given
descriptor), ``kind_of`` and ``read_member`` (they open the path they are given).
"""

import os
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, List, Optional, Sequence, Tuple

from installer.errors import FormatError, InstallerError
from installer.format import tarstream
from installer.fsio import open_regular

if TYPE_CHECKING:  # pragma: no cover - types only: bundlefmt imports this module
    from installer.format.bundlefmt import Header

MANIFEST_NAME = "manifest.json"
SIGNATURES_NAME = "signatures.json"
ROOTS_DIR = "roots"
DELTA_NAME = "delta.json"
PARTS_INDEX_SUFFIX = ".parts.json"
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
MAX_TRAILER = RECORD + 2 * BLOCK
READ_MEMBER_LIMIT = 64 * 1024 * 1024   # read_member is for small documents (SBOM, config)

# what kind_of says
BUNDLE = "bundle"
DELTA = "delta"
PARTS = "parts"
NOT_A_BUNDLE = "none"

_DEV_FIELDS = slice(329, 345)  # ustar devmajor + devminor


def member_header(name: str, size: int, mode: int, *, mtime: int) -> tarfile.TarInfo:
    """The exact tar header the writer uses for a member (the verifier rebuilds it too)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def header_bytes(name: str, size: int, mode: int, *, mtime: int) -> bytes:
    """The member's header as written: a pax header plus its ustar block (serialising only:
    no tar is read with ``tarfile``)."""
    return member_header(name, size, mode, mtime=mtime).tobuf(tarfile.PAX_FORMAT, "utf-8",
                                                              "surrogateescape")


@dataclass(frozen=True)
class Slot:
    """One member of the envelope: its canonical header at ``offset``, then ``size`` data
    bytes, then zero padding to the next block. ``sha256`` is the manifest's (None for the
    envelope documents, which have none of their own)."""

    name: str
    offset: int
    header: bytes
    size: int
    mode: int
    sha256: Optional[str]

    @property
    def data_offset(self) -> int:
        return self.offset + len(self.header)

    @property
    def pad(self) -> int:
        return -self.size % BLOCK


@dataclass(frozen=True)
class Envelope:
    """Every member of a bundle file in file order; the archive's end-of-data ``end`` (where
    the zero trailer starts) and the exact file ``size``."""

    slots: Tuple[Slot, ...]
    end: int

    @property
    def size(self) -> int:
        total = self.end + 2 * BLOCK
        return total + (-total % RECORD)

    def slot(self, name: str) -> Optional[Slot]:
        return next((s for s in self.slots if s.name == name), None)


Entry = Tuple[str, int, int, Optional[str]]   # name, size, mode, sha256


def layout(*, small: Sequence[Tuple[str, int]], members: Sequence[Entry],
           mtime: int) -> Envelope:
    """The one layout: the small documents (mode 0644, no sha256) then the members, each a
    canonical header, its data and zero padding; every header's mtime is ``mtime``."""
    entries: List[Entry] = [(name, size, 0o644, None) for name, size in small]
    entries += list(members)
    slots = []
    offset = 0
    for name, size, mode, sha in entries:
        head = header_bytes(name, size, mode, mtime=mtime)
        slots.append(Slot(name, offset, head, size, mode, sha))
        offset += len(head) + size + (-size % BLOCK)
    return Envelope(tuple(slots), offset)


def small_documents(*, manifest_bytes: bytes, signatures: bytes,
                    roots: Sequence[bytes]) -> List[Tuple[str, bytes]]:
    """The envelope documents, in file order: manifest, signatures, the root chain."""
    out = [(MANIFEST_NAME, manifest_bytes), (SIGNATURES_NAME, signatures)]
    out += [(f"{ROOTS_DIR}/{n}.root.json", root) for n, root in enumerate(roots, start=1)]
    return out


def envelope(header: "Header") -> Envelope:
    """The envelope of the full bundle whose header (signed manifest, signatures, root
    chain) is ``header``: what ``bundlefmt.iter_bundle`` writes for it."""
    docs = small_documents(manifest_bytes=header.manifest_bytes,
                           signatures=header.signatures, roots=header.roots)
    return layout(small=[(name, len(data)) for name, data in docs],
                  members=[(m.path, m.size, m.mode, m.sha256) for m in header.manifest.members],
                  mtime=header.manifest.created)


def _with_dev_fields(block: bytes, value: bytes) -> bytes:
    b = bytearray(block)
    b[_DEV_FIELDS] = value
    b[148:156] = b"        "
    b[148:155] = b"%06o\0" % sum(b)
    return bytes(b)


def header_variants(expected: bytes) -> Tuple[bytes, ...]:
    """The header bytes as any Python's tarfile writes them: 3.8 fills devmajor/devminor of
    regular files with "0000000", 3.9+ leaves them NUL. Both are canonical; nothing else is."""
    out = []
    for dev in (bytes(16), b"0000000\0" * 2):
        blocks = [expected[i:i + BLOCK] for i in range(0, len(expected), BLOCK)]
        blocks[0] = _with_dev_fields(blocks[0], dev)    # the pax header's own ustar block
        blocks[-1] = _with_dev_fields(blocks[-1], dev)  # the member's ustar block
        out.append(b"".join(blocks))
    return tuple(out)


def check_envelope(fd: int, header: "Header", *, what: str,
                   env: Optional[Envelope] = None) -> None:
    """Every byte of the bundle outside member data must be exactly what the writer writes
    for this signed manifest: tar headers, zero padding, zero trailer, total size.

    A flipped byte in a tar header, in padding or after the archive's end is thus caught too
    (a tar reader skips padding and stops at the first bad header). Reads only headers and
    padding (pread; the stream position is untouched). ``env``: another layout of the same
    header (a delta's: ``bundlefmt.delta_envelope``; THREATS 49), default the full bundle's.
    """
    env = envelope(header) if env is None else env
    actual = os.fstat(fd).st_size
    if actual != env.size:
        raise FormatError(
            f"{what} is {actual} bytes; its signed manifest implies exactly {env.size}",
            hint="the file is truncated or has data appended; copy it again from its source")
    for s in env.slots:
        block = os.pread(fd, len(s.header), s.offset)
        if block not in header_variants(s.header):
            found = tarstream.describe(block[-BLOCK:])
            raise FormatError(f"{what}: the tar header of {s.name!r} is not the canonical one: "
                              f"found {found}",
                              hint="the bundle was altered or damaged; do not use it")
        if s.pad and os.pread(fd, s.pad, s.data_offset + s.size) != bytes(s.pad):
            raise FormatError(f"{what}: the padding after {s.name!r} is not zero",
                              hint="the bundle was altered or damaged; do not use it")
    tail = env.size - env.end
    if tail > MAX_TRAILER or os.pread(fd, tail, env.end) != bytes(tail):
        raise FormatError(f"{what}: data after the end of the archive",
                          hint="the bundle was altered or damaged; do not use it")


def _open_file(path: str) -> Optional[BinaryIO]:
    """``path`` opened for reading if it is a regular file (``fsio.open_regular``: a FIFO or
    device is never opened blocking), else None."""
    try:
        return open_regular(path, what="bundle")
    except (OSError, InstallerError):
        return None


def kind_of(path: str) -> str:
    """What ``path`` is: ``BUNDLE`` (a regular file whose first tar member is the manifest),
    ``DELTA`` (first member ``delta.json``), ``PARTS`` (a parts index, or a folder holding
    one) or ``NOT_A_BUNDLE``. Reads one tar header at most; verifies nothing."""
    if path.endswith(PARTS_INDEX_SUFFIX):
        return PARTS
    if os.path.isdir(path):
        try:
            names = os.listdir(path)
        except OSError:
            return NOT_A_BUNDLE
        return PARTS if any(n.endswith(PARTS_INDEX_SUFFIX) for n in names) else NOT_A_BUNDLE
    f = _open_file(path)
    if f is None:
        return NOT_A_BUNDLE
    try:
        with f:
            entry = tarstream.TarStream(f, what=path).next()
    except (OSError, InstallerError):
        return NOT_A_BUNDLE
    if entry is None:
        return NOT_A_BUNDLE
    return {MANIFEST_NAME: BUNDLE, DELTA_NAME: DELTA}.get(entry.name, NOT_A_BUNDLE)


def read_member(path: str, name: str, *, limit: int = READ_MEMBER_LIMIT) -> Optional[bytes]:
    """The bytes of member ``name`` of the bundle (or delta) at ``path``, walking the tar
    headers with the bounded reader (member data is seeked over, not read); None when the
    file is unreadable, not a tar this format allows, lacks the member, or the member is
    over ``limit`` bytes. Verifies nothing: check the bytes against the manifest."""
    f = _open_file(path)
    if f is None:
        return None
    try:
        with f:
            stream = tarstream.TarStream(f, what=path, seek=True)
            entry = stream.next()
            while entry is not None and entry.name != name:
                entry = stream.next()
            if entry is None or entry.size > limit:
                return None
            data = stream.read(entry.size)
    except (OSError, InstallerError):
        return None
    return data if len(data) == entry.size else None
