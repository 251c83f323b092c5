"""installer/host/delta.py's ``archive_blobs`` in-process: exact data offsets from a non-zero
start, a pax header's path and size, the size bound, a header ending exactly at it, and an
oversized pax header; the kept base manifest missing and a kept base archive
one byte short of a reference (mutation survivors of issue #24's run, tools/MUTATION.md)."""

from __future__ import annotations

import errno
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from installer.errors import DigestMismatch, FormatError
from installer.format import tarstream
from installer.host import delta
from installer.host.delta import archive_blobs
from installer.host.layout import Layout

PREFIX = b"p" * 1024   # the archive starts inside a bigger file


def _archive(files: list[tuple[str, bytes, dict[str, str]]], *, fmt: int = tarfile.USTAR_FORMAT,
             dirs: tuple[str, ...] = ("blobs", "blobs/sha256")) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            t.addfile(info)
        for name, data, pax in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = pax
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _blob(data: bytes) -> tuple[str, bytes, dict[str, str]]:
    return (f"blobs/sha256/{hashlib.sha256(data).hexdigest()}", data, {})


def _scan(archive: bytes, size: int | None = None) -> list[tuple[str, int, int]]:
    f = io.BytesIO(PREFIX + archive + b"q" * 700)
    return archive_blobs(f, start=len(PREFIX), size=len(archive) if size is None else size,
                         what="images.tar")


def _data(archive: bytes, found: list[tuple[str, int, int]]) -> list[bytes]:
    return [archive[off:off + n] for _, off, n in found]


def test_every_blob_with_its_exact_offset_and_size() -> None:
    blobs = [b"a" * 700, b"", b"b" * 512, b"c" * 1500]
    archive = _archive([_blob(d) for d in blobs] + [
        ("index.json", b"{}", {}), ("blobs/sha256/notahex", b"x", {}),
        (f"blobs/sha512/{hashlib.sha256(b'z').hexdigest()}", b"z", {})])
    found = _scan(archive)
    assert [h for h, _, _ in found] == [hashlib.sha256(d).hexdigest() for d in blobs]
    assert _data(archive, found) == blobs
    assert [n for _, _, n in found] == [len(d) for d in blobs]


def test_a_pax_header_gives_the_path_and_size() -> None:
    data = b"d" * 2000
    hexd = hashlib.sha256(data).hexdigest()
    archive = _archive([("x" * 10, data, {"path": f"blobs/sha256/{hexd}", "mtime": "5"}),
                        _blob(b"e" * 30)], fmt=tarfile.PAX_FORMAT)
    found = _scan(archive)
    assert [h for h, _, _ in found] == [hexd, hashlib.sha256(b"e" * 30).hexdigest()]
    assert _data(archive, found) == [data, b"e" * 30]


def test_the_scan_stops_at_the_given_size_and_takes_a_header_ending_exactly_there() -> None:
    archive = _archive([_blob(b"f" * 600), _blob(b"")], dirs=())
    empty_header_end = 512 + 1024 + 512
    found = _scan(archive, size=empty_header_end)
    assert [n for _, _, n in found] == [600, 0]
    assert [n for _, _, n in _scan(archive, size=empty_header_end - 1)] == [600]


def test_an_oversized_pax_header_is_refused() -> None:
    archive = _archive([("blobs/sha256/" + "0" * 64, b"g",
                         {"comment": "y" * tarstream.MAX_PAX_HEADER})], fmt=tarfile.PAX_FORMAT)
    with pytest.raises(FormatError, match="pax header of"):
        _scan(archive)


DIGEST = "ab" * 32


def _release(tmp_path: Path) -> tuple[Layout, Path]:
    layout = Layout(str(tmp_path))
    folder = Path(layout.release_file(DIGEST, "x")).parent
    folder.mkdir(parents=True)
    return layout, folder


def test_a_missing_kept_base_manifest_is_refused_cleanly(tmp_path: Path) -> None:
    layout, _ = _release(tmp_path)
    with pytest.raises(FormatError, match="cannot be read: it does not exist"):
        delta._base_files(layout, DIGEST)


def test_a_kept_base_archive_one_byte_short_of_a_reference_is_refused(tmp_path: Path) -> None:
    layout, folder = _release(tmp_path)
    (folder / "images").mkdir()
    (folder / "images" / "a.tar").write_bytes(b"z" * 1000)
    seg = ("ref", "images/a.tar", 400, 600, "cd" * 32)
    delta._check_ref(layout, DIGEST, seg, member_path="images/a.tar")
    short = ("ref", "images/a.tar", 400, 601, "cd" * 32)
    with pytest.raises(DigestMismatch, match="needs .*blob sha256:cdcd.* \\(1000 bytes\\)"):
        delta._check_ref(layout, DIGEST, short, member_path="images/a.tar")


def test_a_kept_base_manifest_of_other_bytes_is_refused(tmp_path: Path) -> None:
    layout, folder = _release(tmp_path)
    (folder / "manifest.json").write_bytes(b"{}")
    with pytest.raises(DigestMismatch, match="is not manifest abababab"):
        delta._base_files(layout, DIGEST)


def test_a_kept_base_manifest_that_fails_to_read_is_refused_naming_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout, _ = _release(tmp_path)

    def broken(path: str, **_: object) -> bytes:
        raise OSError(errno.EIO, "Input/output error", path)
    monkeypatch.setattr(delta, "read_regular", broken)
    with pytest.raises(FormatError, match="cannot be read: Input/output error"):
        delta._base_files(layout, DIGEST)
