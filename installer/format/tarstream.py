"""A bounded reader of the one tar dialect ``bundlefmt.write_bundle`` writes.

The bundle file is read before any signature is checked, so the reader must not let its
input choose how much memory or time it costs (the stdlib ``tarfile`` parses pax, GNU longname
and sparse headers without bounds: CVE-2024-6232 and friends). What ``write_bundle`` emits,
and so all this reader accepts:

- 512-byte POSIX ustar headers (magic ``ustar\\0`` version ``00``), checksum checked, no name
  prefix, numbers in octal (never GNU base-256);
- type ``0`` (regular file) for every member; links, devices, FIFOs, folders, GNU longname or
  sparse headers, global pax headers and the old ``\\0`` type are refused;
- at most one pax extended header (type ``x``) right before a member, at most
  ``MAX_PAX_HEADER`` bytes (checked before it is read), holding only the keys ``path``, ``size``
  and ``mtime``, each at most once, lengths and numbers of a few digits;
- an all-zero block ends the archive (what follows is ``verify.check_envelope``'s business).

Every read is of a size fixed here or capped by the caller before anything is allocated, so
memory is bounded and time linear in the bytes read. This module knows nothing of manifests:
``bundlefmt.BundleReader`` builds on it. It does no I/O beyond ``read`` on the file it is given.
"""

import re
from dataclasses import dataclass
from typing import BinaryIO, Dict, Optional

from installer.errors import FormatError, UnsafeMember

BLOCK = 512
MAX_PAX_HEADER = 4096          # ours: a path of ~210 characters, a size and an mtime
PAX_KEYS = ("path", "size", "mtime")
SKIP_CHUNK = 1024 * 1024
_ZERO = bytes(BLOCK)
_MAGIC = b"ustar\x0000"
_OCTAL_RE = re.compile(rb"[0-7]{1,11}")
_PAX_NUMBER = {"size": re.compile(r"[0-9]{1,19}"), "mtime": re.compile(r"-?[0-9]{1,19}")}
_TYPE_NAMES = {b"1": "hardlink", b"2": "symlink", b"3": "character device",
               b"4": "block device", b"5": "folder", b"6": "FIFO", b"7": "contiguous file",
               b"\x00": "old-style file", b"g": "global pax header", b"L": "GNU long name",
               b"K": "GNU long link", b"S": "GNU sparse file"}


@dataclass(frozen=True)
class Block:
    """The fields of one ustar header block this reader uses."""

    name: str
    mode: int
    size: int
    mtime: int
    type: bytes


@dataclass(frozen=True)
class Entry:
    """A regular-file member: its name, size and mode after any pax header was applied."""

    name: str
    size: int
    mode: int
    mtime: int


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:
        raise FormatError(f"{what} is a base-256 number, which bundles never use")
    digits = field.rstrip(b"\x00 ")
    if not _OCTAL_RE.fullmatch(digits):
        raise FormatError(f"{what} is not an octal number ({field!r})")
    return int(digits, 8)


def parse_block(block: bytes, *, what: str) -> Block:
    """Parse one 512-byte ustar header; FormatError for anything ``write_bundle`` never writes."""
    if len(block) != BLOCK:
        raise FormatError(f"{what}: a tar header is {BLOCK} bytes, found {len(block)}")
    if block[257:265] != _MAGIC:
        raise FormatError(f"{what}: not a POSIX (ustar/pax) tar header",
                          hint="the file is damaged or not a bundle")
    stored = _octal(block[148:156], f"{what}: header checksum")
    if stored != sum(block[:148]) + 8 * 0x20 + sum(block[156:]):
        raise FormatError(f"{what}: tar header checksum mismatch",
                          hint="the file is damaged; copy it again from its source")
    if block[345:500].strip(b"\x00"):
        raise FormatError(f"{what}: tar header uses a name prefix, which bundles never do")
    raw_name = block[:100].split(b"\x00", 1)[0]
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what}: tar member name {raw_name!r} is not UTF-8") from None
    return Block(name=name, mode=_octal(block[100:108], f"{what}: mode of {name!r}"),
                 size=_octal(block[124:136], f"{what}: size of {name!r}"),
                 mtime=_octal(block[136:148], f"{what}: mtime of {name!r}"),
                 type=block[156:157])


def parse_pax(data: bytes, *, what: str) -> Dict[str, str]:
    """Parse pax records ``"<len> <key>=<value>\\n"``; only ``PAX_KEYS``, each once."""
    out: Dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 5)  # len(data) <= MAX_PAX_HEADER: 4 digits at most
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit() or digits.startswith(b"0"):
            raise FormatError(f"{what}: malformed pax record length at byte {pos}")
        end = pos + int(digits)
        if end > len(data) or end <= space + 1 or data[end - 1:end] != b"\n":
            raise FormatError(f"{what}: malformed pax record at byte {pos}")
        key_b, eq, value_b = data[space + 1:end - 1].partition(b"=")
        key = key_b.decode("ascii", "replace")
        if not eq or key not in PAX_KEYS:
            raise FormatError(f"{what}: pax header key {key[:40]!r} is not one bundles use "
                              f"(only {', '.join(PAX_KEYS)})",
                              hint="sparse files, long links and other extensions are refused")
        if key in out:
            raise FormatError(f"{what}: pax header sets {key!r} twice")
        try:
            value = value_b.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what}: pax {key} is not UTF-8") from None
        number = _PAX_NUMBER.get(key)
        if number is not None and not number.fullmatch(value):
            raise FormatError(f"{what}: pax {key} {value[:40]!r} is not a number of at most "
                              "19 digits")
        out[key] = value
        pos = end
    return out


def describe(block: bytes) -> str:
    """A human description of a header block, for error messages; never raises."""
    try:
        b = parse_block(block, what="header")
    except FormatError as e:
        return f"an invalid tar header ({e.message})"
    kind = "file" if b.type == b"0" else _TYPE_NAMES.get(b.type, f"type {b.type!r}")
    return f"{kind} {b.name!r} size {b.size} mode {b.mode:o}"


class TarStream:
    """Read members front to back from a binary file (a USB stick, a pipe), bounded."""

    def __init__(self, fileobj: BinaryIO, *, what: str, seek: bool = False) -> None:
        self._f = fileobj
        self._what = what
        self._seek = seek   # skip member data by seeking (a regular file), not by reading
        self._left = 0      # unread data bytes of the current member
        self._pad = 0       # its padding to the next block
        self._name = ""     # the current member, for messages
        self.offset = 0     # bytes consumed so far

    def _exact(self, n: int, *, during: str) -> bytes:
        parts = []
        need = n
        while need:
            data = self._f.read(need)
            if not data:
                raise FormatError(f"{self._what} is truncated ({during})",
                                  hint="the bundle is incomplete; copy it again from its source")
            parts.append(data)
            need -= len(data)
        self.offset += n
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        if self._seek and n:
            self._f.seek(n, 1)  # a truncated file fails at the next header read
            self.offset += n
            return
        while n:
            step = min(n, SKIP_CHUNK)
            self._exact(step, during="skipping member data")
            n -= step

    def next(self) -> Optional[Entry]:
        """The next member's header (data not yet read); None at the end-of-archive block."""
        self._skip(self._left + self._pad)
        self._left = self._pad = 0
        block = self._exact(BLOCK, during="reading a tar header")
        if block == _ZERO:
            return None
        head = parse_block(block, what=self._what)
        pax: Dict[str, str] = {}
        if head.type == b"x":
            if head.size > MAX_PAX_HEADER:
                raise FormatError(f"{self._what}: pax header of {head.size} bytes, over the "
                                  f"{MAX_PAX_HEADER}-byte limit",
                                  hint="the file is not a bundle this installer wrote")
            data = self._exact(head.size, during="reading a pax header")
            self._skip(-head.size % BLOCK)
            pax = parse_pax(data, what=self._what)
            block = self._exact(BLOCK, during="reading a tar header")
            if block == _ZERO:
                raise FormatError(f"{self._what}: pax header without a member")
            head = parse_block(block, what=self._what)
            if head.type == b"x":
                raise FormatError(f"{self._what}: two pax headers in a row")
        name = pax.get("path", head.name)
        check_entry(name, head.type, head.mode)
        size = int(pax["size"]) if "size" in pax else head.size
        mtime = int(pax["mtime"]) if "mtime" in pax else head.mtime
        self._left, self._pad, self._name = size, -size % BLOCK, name
        return Entry(name=name, size=size, mode=head.mode, mtime=mtime)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the current member's data; b"" at its end."""
        n = min(n, self._left)
        if n <= 0:
            return b""
        data = self._exact(n, during=f"in member {self._name!r}")
        self._left -= n
        return data


def check_entry(name: str, type_: bytes, mode: int) -> None:
    """Only regular files without setuid/setgid/sticky bits are members of a bundle."""
    if type_ != b"0":
        kind = _TYPE_NAMES.get(type_, f"type {type_!r}")
        raise UnsafeMember(f"bundle member {name!r} is not a regular file ({kind})",
                           hint="links, devices and FIFOs are never accepted")
    if mode & 0o7000:
        raise UnsafeMember(f"bundle member {name!r} has setuid/setgid/sticky bits "
                           f"(mode {mode:o})")
