"""``installer/format/tarstream.py``, the bounded tar reader used before any signature is
checked: what the writer emits (ustar, a pax header with path, size and mtime) is accepted,
everything else refused with a FormatError or UnsafeMember. In-process, crafted bytes."""

import io
import tarfile
from typing import Dict, List, Optional

import pytest

from installer.errors import FormatError, UnsafeMember
from installer.format import tarstream
from installer.format.tarstream import TarStream


def _ustar(name: str, size: int, *, mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
           fmt: int = tarfile.USTAR_FORMAT, mtime: int = 1_790_000_000) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = size, mode, kind, mtime
    return info.tobuf(fmt, "utf-8", "surrogateescape")  # type: ignore[arg-type]


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return f"{n}{body}".encode()


def _pax_header(records: Dict[str, str]) -> bytes:
    data = b"".join(_pax_record(k, v) for k, v in records.items())
    head = _ustar("././@PaxHeader", len(data), kind=tarfile.XHDTYPE)
    return head + data + bytes(-len(data) % 512)


def _tar(*parts: bytes, end: bool = True) -> io.BytesIO:
    return io.BytesIO(b"".join(parts) + (bytes(1024) if end else b""))


def _entries(f: io.BytesIO) -> List[tarstream.Entry]:
    t = TarStream(f, what="t")
    out: List[tarstream.Entry] = []
    while True:
        e = t.next()
        if e is None:
            return out
        out.append(e)


def test_a_valid_pax_header_is_accepted() -> None:
    long_name = "images/" + "a" * 150 + ".tar"
    data = b"x" * 700
    pax = _pax_header({"path": long_name, "size": str(len(data)), "mtime": "1790000001"})
    f = _tar(pax, _ustar("placeholder", 0), data + bytes(-len(data) % 512))
    t = TarStream(f, what="t")
    e = t.next()
    assert e == tarstream.Entry(name=long_name, size=700, mode=0o644, mtime=1790000001)
    assert t.read(1000) == data and t.read(10) == b""
    assert t.next() is None


def test_the_writers_own_pax_form_is_read() -> None:
    info = tarfile.TarInfo("k3s/" + "b" * 120)
    info.size, info.mode, info.mtime = 3, 0o755, 1_790_000_000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"abc"))
    buf.seek(0)
    assert [(e.name, e.size, e.mode) for e in _entries(buf)] == [(info.name, 3, 0o755)]


@pytest.mark.parametrize("records,said", [
    ({"size": "12a"}, "not a number"),
    ({"size": "1" * 20}, "not a number"),
    ({"mtime": "x"}, "not a number"),
    ({"linkpath": "x"}, "is not one bundles use"),
    ({"GNU.sparse.map": "0,1"}, "is not one bundles use"),
])
def test_bad_pax_values_refused(records: Dict[str, str], said: str) -> None:
    f = _tar(_pax_header(records), _ustar("m", 0))
    with pytest.raises(FormatError, match=said):
        _entries(f)


@pytest.mark.parametrize("data,said", [
    (b"10 size=5\n10 size=6\n", "twice"),
    (b"010 size=5\n", "malformed pax record length"),
    (b"x size=5\n", "malformed pax record length"),
    (b"99 size=5\n", "malformed pax record at byte 0"),
    (b"10 size=5X", "malformed pax record at byte 0"),
    (b"2 \n", "malformed pax record at byte 0"),
    (b"8 size5\n", "is not one bundles use"),
    (b"11 path=\xff\xfe\n", "not UTF-8"),
])
def test_parse_pax_refuses(data: bytes, said: str) -> None:
    with pytest.raises(FormatError, match=said):
        tarstream.parse_pax(data, what="t")


def test_parse_pax_accepts_negative_mtime_and_exact_lengths() -> None:
    data = _pax_record("mtime", "-5") + _pax_record("path", "a/b")
    assert tarstream.parse_pax(data, what="t") == {"mtime": "-5", "path": "a/b"}
    assert tarstream.parse_pax(b"", what="t") == {}


def test_pax_structure_refused() -> None:
    big = _ustar("././@PaxHeader", tarstream.MAX_PAX_HEADER + 1, kind=tarfile.XHDTYPE)
    with pytest.raises(FormatError, match="over the 4096-byte limit"):
        _entries(_tar(big))
    ok_size = _ustar("././@PaxHeader", tarstream.MAX_PAX_HEADER, kind=tarfile.XHDTYPE)
    with pytest.raises(FormatError, match="truncated"):  # read, not refused for its size
        _entries(io.BytesIO(ok_size))
    with pytest.raises(FormatError, match="pax header without a member"):
        _entries(_tar(_pax_header({"size": "1"})))
    with pytest.raises(FormatError, match="two pax headers in a row"):
        _entries(_tar(_pax_header({"size": "1"}), _pax_header({"size": "1"})))


def _block(name: str = "m", **kw: object) -> bytearray:
    return bytearray(_ustar(name, 0, **kw))  # type: ignore[arg-type]


def _resum(b: bytearray) -> bytes:
    b[148:156] = b"        "
    b[148:155] = b"%06o\0" % sum(b)
    return bytes(b)


def test_parse_block_refuses() -> None:
    with pytest.raises(FormatError, match="a tar header is 512 bytes, found 10"):
        tarstream.parse_block(b"x" * 10, what="t")
    b = _block()
    b[257:265] = b"ustar  \0"
    with pytest.raises(FormatError, match="not a POSIX"):
        tarstream.parse_block(_resum(b), what="t")
    b = _block()
    b[0] ^= 1
    with pytest.raises(FormatError, match="checksum mismatch"):
        tarstream.parse_block(bytes(b), what="t")
    b = _block()
    b[345:350] = b"pre/x"
    with pytest.raises(FormatError, match="name prefix"):
        tarstream.parse_block(_resum(b), what="t")
    b = _block()
    b[0:2] = b"\xff\xfe"
    with pytest.raises(FormatError, match="not UTF-8"):
        tarstream.parse_block(_resum(b), what="t")
    b = _block()
    b[124] = 0x80
    with pytest.raises(FormatError, match="base-256"):
        tarstream.parse_block(_resum(b), what="t")
    b = _block()
    b[124:136] = b"0000000000x\0"
    with pytest.raises(FormatError, match="not an octal number"):
        tarstream.parse_block(_resum(b), what="t")


def test_parse_block_reads_fields() -> None:
    head = tarstream.parse_block(_ustar("a/b", 0o17, mode=0o755, mtime=0o1234), what="t")
    assert head == tarstream.Block(name="a/b", mode=0o755, size=0o17, mtime=0o1234,
                                   type=b"0")


@pytest.mark.parametrize("kind,mode,word", [
    (tarfile.SYMTYPE, 0o644, "symlink"), (tarfile.LNKTYPE, 0o644, "hardlink"),
    (tarfile.FIFOTYPE, 0o644, "FIFO"), (tarfile.DIRTYPE, 0o755, "folder"),
    (b"Z", 0o644, "type b'Z'"), (tarfile.REGTYPE, 0o4755, "setuid"),
    (tarfile.REGTYPE, 0o1644, "setuid/setgid/sticky"),
])
def test_unsafe_members_refused(kind: bytes, mode: int, word: str) -> None:
    with pytest.raises(UnsafeMember, match=word.replace("(", r"\(")):
        _entries(_tar(_ustar("m", 0, kind=kind, mode=mode)))


def test_describe() -> None:
    assert tarstream.describe(_ustar("a", 5)) == "file 'a' size 5 mode 644"
    assert tarstream.describe(_ustar("l", 0, kind=tarfile.SYMTYPE)) == "symlink 'l' size 0 mode 644"
    assert tarstream.describe(_ustar("q", 0, kind=b"Q")) == "type b'Q' 'q' size 0 mode 644"
    assert tarstream.describe(b"junk").startswith("an invalid tar header (")


@pytest.mark.parametrize("cut", [10, 512, 600])
def test_truncation_is_named(cut: int) -> None:
    data = _ustar("m", 700) + b"y" * 700 + bytes(-700 % 512) + bytes(1024)
    t = TarStream(io.BytesIO(data[:cut]), what="bundle b")
    with pytest.raises(FormatError, match=r"bundle b is truncated"):
        e: Optional[tarstream.Entry] = t.next()
        while e is not None:
            t.read(e.size)
            e = t.next()


def test_skipping_unread_data_and_offsets() -> None:
    one, two = b"1" * 1500, b"2" * 10
    data = (_ustar("one", len(one)) + one + bytes(-len(one) % 512)
            + _ustar("two", len(two)) + two + bytes(-len(two) % 512) + bytes(1024))
    for seek in (False, True):
        t = TarStream(io.BytesIO(data), what="t", seek=seek)
        a = t.next()
        assert a is not None and a.name == "one" and t.read(3) == b"111"
        b = t.next()  # the rest of "one" and its padding skipped
        assert b is not None and b.name == "two" and t.read(100) == two
        assert t.next() is None
        assert t.offset == len(data) - 512
    big = _ustar("big", 3 * tarstream.SKIP_CHUNK + 1) + bytes(3 * tarstream.SKIP_CHUNK + 1)
    t = TarStream(io.BytesIO(big + bytes(-len(big) % 512) + bytes(1024)), what="t")
    assert t.next() is not None and t.next() is None


class _Pipe:
    """A stream that can only be read (a pipe, stdin): no seek, no tell."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._b.read(n)


def test_default_reader_never_seeks_and_ends_cleanly() -> None:
    one = b"1" * 1500
    data = _ustar("one", len(one)) + one + bytes(-len(one) % 512) + bytes(1024)
    t = TarStream(_Pipe(data), what="t")  # type: ignore[arg-type]
    e = t.next()
    assert e is not None and t.read(1) == b"1"
    assert t.next() is None
    assert t.read(10) == b""  # nothing left to read after the end


def test_entries_are_frozen() -> None:
    import dataclasses
    e = tarstream.Entry(name="a", size=1, mode=0o644, mtime=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.name = "b"  # type: ignore[misc]
    b = tarstream.parse_block(_ustar("a", 0), what="t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.size = 5  # type: ignore[misc]


def test_header_fields_at_their_exact_offsets() -> None:
    name = "n" * 100  # a full name field, no NUL
    head = tarstream.parse_block(_ustar(name, 0, mtime=0o17777777777), what="t")
    assert head.name == name and head.mtime == 0o17777777777
    b = _block()
    b[345] = ord("p")  # a one-byte name prefix
    with pytest.raises(FormatError, match="name prefix"):
        tarstream.parse_block(_resum(b), what="t")
    b = _block()
    b[500] = 1  # ustar padding after the prefix field is not read
    assert tarstream.parse_block(_resum(b), what="t").name == "m"


def test_pax_record_of_an_empty_key() -> None:
    with pytest.raises(FormatError, match="is not one bundles use"):
        tarstream.parse_pax(b"3 \n", what="t")
