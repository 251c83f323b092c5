"""installer/format/envelope.py: the one definition of a bundle's tar envelope, what the
writer writes and what the verifier, the builder, inspect, delta and parts read."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from bundler.assemble.bundlewrite import is_current
from installer.errors import FormatError
from installer.format import bundlefmt, envelope, tarstream
from installer.format.bundlefmt import BundleReader, Header
from installer.trust import verify
from tests.bundles import _members, default_spec, manifest_for

SIGS = bundlefmt.unsigned_signatures()
ROOTS = [b'{"root": 1}', b'{"root": 2}']


def _write(tmp_path: Path, name: str = "edge-1.0.0-amd64.tar") -> tuple[Path, Header]:
    pairs = _members(default_spec())
    manifest = manifest_for(default_spec(), [m for m, _ in pairs])
    data = {m.path: d for m, d in pairs}
    out = tmp_path / name
    with open(out, "wb") as f:
        bundlefmt.write_bundle(f, manifest=manifest, signatures=SIGS, roots=ROOTS,
                               open_member=lambda m: io.BytesIO(data[m.path]))
    with open(out, "rb") as f:
        return out, BundleReader(f, what=str(out)).header()


def test_the_envelope_is_what_the_writer_wrote(tmp_path: Path) -> None:
    path, header = _write(tmp_path)
    blob = path.read_bytes()
    env = envelope.envelope(header)
    assert env.size == len(blob)
    names = [s.name for s in env.slots]
    assert names[:4] == ["manifest.json", "signatures.json", "roots/1.root.json",
                         "roots/2.root.json"]
    assert names[4:] == [m.path for m in header.manifest.members]
    for s in env.slots:
        assert blob[s.offset:s.data_offset] in envelope.header_variants(s.header)
        data = blob[s.data_offset:s.data_offset + s.size]
        assert blob[s.data_offset + s.size:s.data_offset + s.size + s.pad] == bytes(s.pad)
        if s.sha256 is not None:
            assert hashlib.sha256(data).hexdigest() == s.sha256
    assert env.slot("manifest.json") is not None and env.slot("nope") is None
    assert blob[env.end:] == bytes(len(blob) - env.end)


def test_check_envelope_accepts_the_writer_and_the_builder_agrees(tmp_path: Path) -> None:
    path, header = _write(tmp_path)
    with open(path, "rb") as f:
        envelope.check_envelope(f.fileno(), header, what=str(path))
    # the builder's "already written" check uses the same envelope
    assert is_current(path, manifest_bytes=header.manifest_bytes, signatures=SIGS, roots=ROOTS)


@pytest.mark.parametrize("where", ["header", "padding", "appended", "trailer"])
def test_check_envelope_refuses_any_byte_outside_member_data(tmp_path: Path,
                                                              where: str) -> None:
    path, header = _write(tmp_path)
    env = envelope.envelope(header)
    blob = bytearray(path.read_bytes())
    slot = next(s for s in env.slots if s.pad)
    if where == "header":
        blob[slot.offset + len(slot.header) - 512 + 100] ^= 1   # the ustar block's mode
    elif where == "padding":
        blob[slot.data_offset + slot.size] = 1
    elif where == "appended":
        blob += bytes(512)
    else:
        blob[env.end + 3] = 7
    path.write_bytes(bytes(blob))
    with open(path, "rb") as f, pytest.raises(FormatError):
        envelope.check_envelope(f.fileno(), header, what=str(path))


def test_kind_of(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    assert envelope.kind_of(str(path)) == envelope.BUNDLE
    delta = tmp_path / "edge-1.0.0-amd64.delta.tar"
    doc = b"{}"
    delta.write_bytes(envelope.header_bytes("delta.json", len(doc), 0o644, mtime=0) + doc
                      + bytes(510) + bytes(1024))
    assert envelope.kind_of(str(delta)) == envelope.DELTA
    index = tmp_path / "parts" / "edge-1.0.0-amd64.tar.parts.json"
    index.parent.mkdir()
    index.write_text("{}")
    assert envelope.kind_of(str(index)) == envelope.PARTS
    assert envelope.kind_of(str(index.parent)) == envelope.PARTS
    (tmp_path / "empty").mkdir()
    assert envelope.kind_of(str(tmp_path / "empty")) == envelope.NOT_A_BUNDLE
    assert envelope.kind_of(str(tmp_path / "missing.tar")) == envelope.NOT_A_BUNDLE
    (tmp_path / "text.tar").write_bytes(b"not a tar at all" * 100)
    assert envelope.kind_of(str(tmp_path / "text.tar")) == envelope.NOT_A_BUNDLE
    other = tmp_path / "other.tar"
    other.write_bytes(envelope.header_bytes("readme", 1, 0o644, mtime=0) + b"x" + bytes(511))
    assert envelope.kind_of(str(other)) == envelope.NOT_A_BUNDLE


def test_kind_of_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "bundle.tar"
    os.mkfifo(fifo)
    assert envelope.kind_of(str(fifo)) == envelope.NOT_A_BUNDLE   # returns: no writer needed
    assert envelope.read_member(str(fifo), "manifest.json") is None


def test_read_member(tmp_path: Path) -> None:
    path, header = _write(tmp_path)
    last = header.manifest.members[-1]
    data = envelope.read_member(str(path), last.path)
    assert data is not None and hashlib.sha256(data).hexdigest() == last.sha256
    assert envelope.read_member(str(path), "manifest.json") == header.manifest_bytes
    assert envelope.read_member(str(path), "absent.yaml") is None
    assert envelope.read_member(str(path), last.path, limit=last.size - 1) is None
    (tmp_path / "junk.tar").write_bytes(b"\xff" * 2048)
    assert envelope.read_member(str(tmp_path / "junk.tar"), last.path) is None
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[:envelope.envelope(header).slots[-1].offset + 600])
    assert envelope.read_member(str(cut), last.path) is None          # truncated member


def test_the_tar_reader_seeks_or_reads_to_the_same_members(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)

    def names(seek: bool) -> list[tuple[str, int]]:
        with open(path, "rb") as f:
            stream = tarstream.TarStream(f, what="t", seek=seek)
            out = []
            entry = stream.next()
            while entry is not None:
                out.append((entry.name, stream.offset))
                entry = stream.next()
            return out
    assert names(True) == names(False)


def test_bundlefmt_and_verify_name_the_one_definition() -> None:
    assert bundlefmt.MANIFEST_NAME is envelope.MANIFEST_NAME
    assert bundlefmt.member_header is envelope.member_header
    assert verify.check_envelope is envelope.check_envelope
    assert verify.header_variants is envelope.header_variants
