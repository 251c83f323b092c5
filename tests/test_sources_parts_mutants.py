"""installer/sources/parts.py in-process: the index rules at their boundaries, the index file's
size limit and shape, the signature error's wording, and reassembly of real parts written by
the builder's own ``split`` (every part rebuilt, two or more chunks per part, a shorter last
part, the reassembled file's mode, a leftover from a killed run, no space left). Mutation
survivors of issue #24's run (tools/MUTATION.md)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from bundler.assemble import parts as builder
from installer.errors import (
    DigestMismatch,
    EnvironmentProblem,
    FormatError,
    SignatureError,
    UntrustedContent,
)
from installer.format import canonjson
from installer.sources import parts
from tests.bundles import KeyDir

MiB = 1 << 20
NOW = 1_800_000_000
NAME = "edge-1.0.0-arm64.tar"
SIZE = 4 * MiB + 300_000   # parts of 2 MiB: two whole parts and a shorter third


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, keys: KeyDir, data: bytes) -> Path:
    """A folder of real parts (2 MiB each, with parity) and a signed index, by the builder."""
    folder = tmp_path_factory.mktemp("pristine")
    (folder / NAME).write_bytes(data)
    builder.split(folder / NAME, max_part_size=3 * MiB, parity=True, sign=keys.sign,
                  roots=keys.chain())
    return folder


@pytest.fixture
def stick(pristine: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "stick"
    shutil.copytree(pristine, folder)
    return folder


def _index(folder: Path, keys: KeyDir) -> parts.PartsIndex:
    return parts.read_index(str(folder / parts.index_name(NAME)),
                            anchor=keys.root_json.read_bytes(), now=NOW)


def _out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def _good(n: int = 2, *, last: int = MiB, part_size: int = 2 * MiB,
          parity: bool = False) -> parts.PartsIndex:
    ps = tuple(parts.PartFile(parts.part_name(NAME, i), part_size if i < n else last,
                              "b" * 64) for i in range(1, n + 1))
    par = parts.PartFile(NAME + parts.PARITY_SUFFIX, part_size, "c" * 64) if parity else None
    return parts.PartsIndex(NAME, sum(p.size for p in ps), "a" * 64, part_size, ps, par)


def _refused(doc: Any) -> str:
    with pytest.raises(FormatError) as e:
        parts.parse_index(doc)
    return e.value.message


# ---------------------------------------------------------------- the index rules (pure)

def test_names_and_the_frozen_records() -> None:
    assert parts.part_name(NAME, 7) == NAME + ".part-007"
    assert parts.index_name(NAME) == NAME + ".parts.json"
    index = _good(parity=True)
    for obj, field in ((index, "size"), (index.parts[0], "size")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parts.Reassembled("x", None).path = "y"  # type: ignore[misc]
    assert parts.parse_index(index.to_json()) == index
    assert _good().to_json()["parity"] is None and parts.parse_index(_good().to_json()).parity \
        is None


def test_a_part_entry_must_be_exact() -> None:
    doc = _good().to_json()
    entry = doc["parts"][0]
    bad_entries: List[Any] = [
        [entry], dict(entry, extra=1), {"name": entry["name"], "size": entry["size"]},
        dict(entry, name=7), dict(entry, name="a/" + entry["name"]),
        dict(entry, name="." + entry["name"]), dict(entry, size="2"), dict(entry, size=True),
        dict(entry, size=0), dict(entry, size=1 << 50), dict(entry, sha256=5),
        dict(entry, sha256="B" * 64), dict(entry, sha256="b" * 63),
    ]
    for bad in bad_entries:
        assert "parts index part 1" in _refused(dict(doc, parts=[bad, doc["parts"][1]]))
    assert "parts index parity" in _refused(dict(doc, parity={"name": "x"}))


def test_sizes_at_their_bounds() -> None:
    top = (1 << 50) - 1
    one = parts.PartsIndex(NAME, top, "a" * 64, top,
                           (parts.PartFile(parts.part_name(NAME, 1), top, "b" * 64),), None)
    assert parts.parse_index(one.to_json()) == one
    for key in ("size", "part_size"):
        for value in (0, 1 << 50, True, "1"):
            assert f"bad {key}" in _refused(dict(one.to_json(), **{key: value}))
    assert parts.validate(_good(part_size=MiB, last=MiB)).part_size == MiB
    with pytest.raises(FormatError, match="below"):
        parts.validate(_good(part_size=MiB - 1, last=1))


def test_every_part_rule_of_validate() -> None:
    assert parts.validate(_good(last=2 * MiB)).size == 4 * MiB     # a full last part
    assert parts.validate(_good(1, last=5)).size == 5              # one short part
    tiny = _good(1, last=1)
    assert parts.parse_index(tiny.to_json()) == tiny               # a 1-byte bundle
    with pytest.raises(FormatError, match="the last at most"):
        parts.validate(_good(last=2 * MiB + 1))
    short_first = _good(3)
    ps = (dataclasses.replace(short_first.parts[0], size=MiB),) + short_first.parts[1:]
    with pytest.raises(FormatError, match="part-001 is 1048576 bytes"):
        parts.validate(dataclasses.replace(short_first, parts=ps, size=4 * MiB))
    swapped = _good(2)
    with pytest.raises(FormatError, match="part 1 must be named"):
        parts.validate(dataclasses.replace(swapped, parts=swapped.parts[::-1]))
    with pytest.raises(FormatError, match="add up"):
        parts.validate(dataclasses.replace(swapped, size=swapped.size - 1))
    for bundle in ("x.zip", "../x.tar", ".x.tar"):
        with pytest.raises(FormatError, match="bad bundle name"):
            parts.validate(dataclasses.replace(swapped, bundle=bundle))
    with pytest.raises(FormatError, match="bundle sha256"):
        parts.validate(dataclasses.replace(swapped, sha256="A" * 64))
    with pytest.raises(FormatError, match="0 parts"):
        parts.validate(dataclasses.replace(swapped, parts=(), size=0))


def test_the_parity_part_rules() -> None:
    index = _good(parity=True)
    assert parts.validate(index).parity == index.parity
    assert index.parity is not None
    with pytest.raises(FormatError, match="must be named"):
        parts.validate(dataclasses.replace(
            index, parity=dataclasses.replace(index.parity, name=NAME + ".part-par")))
    with pytest.raises(FormatError, match="as long as the first part"):
        parts.validate(dataclasses.replace(
            index, parity=dataclasses.replace(index.parity, size=MiB)))


def test_at_most_999_parts() -> None:
    assert len(parts.validate(_good(999, last=1)).parts) == 999
    with pytest.raises(FormatError, match="1000 parts"):
        parts.validate(_good(1000, last=1))
    doc = _good(1001, last=1).to_json()
    assert "1000 parts" in _refused(doc)   # read no further than one past the limit


def test_the_signed_object_shape() -> None:
    doc = _good().to_json()
    assert "exactly" in _refused(dict(doc, extra=1))
    assert "exactly" in _refused([doc])
    with pytest.raises(FormatError) as e:
        parts.parse_index(dict(doc, format="k3s-airgap-parts/v2"))
    assert e.value.hint and "as new as" in e.value.hint
    assert "must be strings" in _refused(dict(doc, bundle=1))
    assert "must be strings" in _refused(dict(doc, sha256=None))
    assert "must be a list" in _refused(dict(doc, parts=doc["parts"][0]))


# ---------------------------------------------------------------- the index file

def _index_file(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / parts.index_name(NAME)
    path.write_bytes(canonjson.encode(doc))
    return path


def test_an_index_file_of_exactly_the_limit_is_read_one_byte_more_is_not(
        tmp_path: Path) -> None:
    signed = _good().to_json()
    base = {"signed": signed, "signatures": [], "roots": [{"pad": ""}]}
    pad = parts.MAX_INDEX - len(canonjson.encode(base))
    path = _index_file(tmp_path, dict(base, roots=[{"pad": "x" * pad}]))
    assert path.stat().st_size == parts.MAX_INDEX == 4 * MiB
    assert parts.read_index_unverified(str(path)) == _good()
    _index_file(tmp_path, dict(base, roots=[{"pad": "x" * (pad + 1)}]))
    with pytest.raises(FormatError, match="larger than"):
        parts.read_index_unverified(str(path))


def test_the_index_file_shape(tmp_path: Path) -> None:
    signed = _good().to_json()
    for doc, words in (({"signed": signed, "signatures": []}, "exactly signed"),
                       ({"signed": signed, "signatures": [], "roots": {}}, "roots must"),
                       ({"signed": signed, "signatures": [], "roots": [[]]}, "roots must")):
        path = _index_file(tmp_path, doc)
        with pytest.raises(FormatError, match=words):
            parts.read_index_unverified(str(path))


def test_a_signature_error_names_the_index_and_both_roots(stick: Path, tmp_path: Path) -> None:
    stranger = KeyDir(tmp_path / "stranger")
    with pytest.raises(SignatureError) as e:
        _index(stick, stranger)
    assert f"parts index {parts.index_name(NAME)}" in e.value.message
    assert "bundle manifest" not in e.value.message
    assert "this host trusts" in e.value.message
    assert e.value.hint and "sign with the targets keys" in e.value.hint   # rootmeta's own


def test_a_signed_index_reads_back(stick: Path, keys: KeyDir, data: bytes) -> None:
    index = _index(stick, keys)
    assert index.size == SIZE and index.part_size == 2 * MiB and len(index.parts) == 3
    assert index.sha256 == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- reassembly

def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_intact_parts_reassemble_with_progress_and_a_private_mode(
        stick: Path, keys: KeyDir, tmp_path: Path, data: bytes) -> None:
    index = _index(stick, keys)
    out = _out(tmp_path)
    (out / f".{NAME}.reassembling").write_bytes(b"left by a killed run")
    seen: List[int] = []
    old = os.umask(0o022)
    try:
        res = parts.reassemble(str(stick), index, str(out), on_bytes=seen.append)
    finally:
        os.umask(old)
    assert res == parts.Reassembled(str(out / NAME), None)
    assert Path(res.path).read_bytes() == data
    assert sum(seen) == SIZE
    assert stat.S_IMODE(os.stat(res.path).st_mode) == 0o600
    assert sorted(os.listdir(out)) == [NAME]


@pytest.mark.parametrize("number", [1, 2, 3])
@pytest.mark.parametrize("damage", ["delete", "flip", "append"])
def test_any_one_part_is_rebuilt(stick: Path, keys: KeyDir, tmp_path: Path, data: bytes,
                                 number: int, damage: str) -> None:
    index = _index(stick, keys)
    victim = stick / parts.part_name(NAME, number)
    if damage == "delete":
        victim.unlink()
    elif damage == "flip":   # in the second MiB of the part (its second chunk)
        raw = bytearray(victim.read_bytes())
        raw[-5] ^= 0x40
        victim.write_bytes(bytes(raw))
    else:
        with open(victim, "ab") as f:
            f.write(b"!")
    res = parts.reassemble(str(stick), index, str(_out(tmp_path)))
    assert res.rebuilt == victim.name
    assert Path(res.path).read_bytes() == data


def test_check_present_names_absent_wrong_size_and_odd_files(stick: Path, keys: KeyDir) -> None:
    index = _index(stick, keys)
    assert parts.check_present(str(stick), index) == []
    (stick / parts.part_name(NAME, 1)).unlink()
    (stick / parts.part_name(NAME, 1)).mkdir()
    with open(stick / parts.part_name(NAME, 3), "ab") as f:
        f.write(b"x")
    assert parts.check_present(str(stick), index) == [parts.part_name(NAME, 1),
                                                      parts.part_name(NAME, 3)]


def test_copy_part_keeps_to_the_size_and_hash(stick: Path, keys: KeyDir) -> None:
    index = _index(stick, keys)
    p = index.parts[2]
    path = stick / p.name
    out = io.BytesIO()
    seen: List[int] = []
    assert parts._copy_part(str(path), out, p, on_bytes=seen.append)
    assert out.getvalue() == path.read_bytes() and sum(seen) == p.size
    with open(path, "ab") as f:
        f.write(b"more")
    out = io.BytesIO()
    assert not parts._copy_part(str(path), out, p, on_bytes=None)
    assert len(out.getvalue()) <= p.size       # never a byte past the part
    path.write_bytes(path.read_bytes()[:p.size - 1])
    assert not parts._copy_part(str(path), io.BytesIO(), p, on_bytes=None)
    raw = bytearray(path.read_bytes() + b"x")
    raw[0] ^= 1
    path.write_bytes(bytes(raw))
    assert not parts._copy_part(str(path), io.BytesIO(), p, on_bytes=None)
    whole = index.parts[0]          # 2 MiB: read in whole chunks up to its very size
    path = stick / whole.name
    assert parts._copy_part(str(path), io.BytesIO(), whole, on_bytes=None)
    with open(path, "ab") as f:
        f.write(b"!")               # one byte more (grown after check_present looked)
    out = io.BytesIO()
    assert not parts._copy_part(str(path), out, whole, on_bytes=None)
    assert len(out.getvalue()) == whole.size


def _beyond(stick: Path, keys: KeyDir, tmp_path: Path, *, reads: bool = False) -> str:
    out = _out(tmp_path)
    seen: List[int] = []
    with pytest.raises(UntrustedContent) as e:
        parts.reassemble(str(stick), _index(stick, keys), str(out), on_bytes=seen.append)
    assert os.listdir(out) == []
    if not reads:
        assert seen == []       # refused before any part was read
    assert e.value.hint and "copy" in e.value.hint
    return e.value.message


def test_two_bad_parts_are_named_with_the_reason(stick: Path, keys: KeyDir,
                                                 tmp_path: Path) -> None:
    (stick / parts.part_name(NAME, 1)).unlink()
    (stick / parts.part_name(NAME, 3)).unlink()
    assert _beyond(stick, keys, tmp_path).endswith(
        f"{NAME}.part-001, {NAME}.part-003; parity rebuilds only one part")


def test_one_missing_and_one_damaged_part_are_named(stick: Path, keys: KeyDir,
                                                    tmp_path: Path) -> None:
    (stick / parts.part_name(NAME, 3)).unlink()
    victim = stick / parts.part_name(NAME, 1)
    raw = bytearray(victim.read_bytes())
    raw[0] ^= 1
    victim.write_bytes(bytes(raw))
    assert f"{NAME}.part-001, {NAME}.part-003; parity rebuilds" in _beyond(
        stick, keys, tmp_path, reads=True)


@pytest.mark.parametrize("parity", ["missing", "short"])
def test_a_lost_part_with_a_lost_parity_part_is_named(stick: Path, keys: KeyDir,
                                                      tmp_path: Path, parity: str) -> None:
    par = stick / (NAME + parts.PARITY_SUFFIX)
    if parity == "missing":
        par.unlink()
    else:
        par.write_bytes(par.read_bytes()[:-1])
    (stick / parts.part_name(NAME, 2)).unlink()
    assert f"part-002; its parity part {par.name} is missing or of the wrong size" in _beyond(
        stick, keys, tmp_path)


def test_a_damaged_part_with_a_lost_parity_part_is_named(stick: Path, keys: KeyDir,
                                                         tmp_path: Path) -> None:
    (stick / (NAME + parts.PARITY_SUFFIX)).unlink()
    victim = stick / parts.part_name(NAME, 2)
    raw = bytearray(victim.read_bytes())
    raw[0] ^= 1
    victim.write_bytes(bytes(raw))
    assert "part-002; its parity part" in _beyond(stick, keys, tmp_path, reads=True)


def test_intact_parts_without_their_parity_part_reassemble(stick: Path, keys: KeyDir,
                                                           tmp_path: Path, data: bytes) -> None:
    (stick / (NAME + parts.PARITY_SUFFIX)).unlink()
    old = os.umask(0o022)
    try:
        res = parts.reassemble(str(stick), _index(stick, keys), str(_out(tmp_path)))
    finally:
        os.umask(old)
    assert res.rebuilt is None and Path(res.path).read_bytes() == data
    assert stat.S_IMODE(os.stat(res.path).st_mode) == 0o600


def test_parts_and_parity_are_read_a_chunk_at_a_time(stick: Path, keys: KeyDir,
                                                     tmp_path: Path, data: bytes,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Never a whole part in memory (parts are up to 4 GiB): every read asks for at most one
    chunk, and a part that grew is read one byte past its size, no more."""
    index = _index(stick, keys)
    asked: List[int] = []
    real = parts.open_regular

    class Counting:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def read(self, n: int) -> bytes:
            asked.append(n)
            return bytes(self.f.read(n))

    monkeypatch.setattr(parts, "open_regular", lambda *a, **kw: Counting(real(*a, **kw)))
    (stick / parts.part_name(NAME, 2)).unlink()
    res = parts.reassemble(str(stick), index, str(_out(tmp_path)))
    assert Path(res.path).read_bytes() == data
    assert asked and max(asked) <= parts.CHUNK
    whole = index.parts[0]
    path = stick / whole.name
    with open(path, "ab") as f:
        f.write(b"four")
    seen: List[int] = []
    assert not parts._copy_part(str(path), io.BytesIO(), whole, on_bytes=seen.append)
    assert max(seen) <= parts.CHUNK and sum(seen) == whole.size + 1


def test_a_damaged_parity_part_is_named_when_it_is_needed(stick: Path, keys: KeyDir,
                                                          tmp_path: Path) -> None:
    par = stick / (NAME + parts.PARITY_SUFFIX)
    raw = bytearray(par.read_bytes())
    raw[-1] ^= 1     # in its second chunk
    par.write_bytes(bytes(raw))
    (stick / parts.part_name(NAME, 3)).unlink()
    out = _out(tmp_path)
    with pytest.raises(DigestMismatch, match="parity part .* is damaged too") as e:
        parts.reassemble(str(stick), _index(stick, keys), str(out))
    assert e.value.hint and parts.part_name(NAME, 3) in e.value.hint
    assert os.listdir(out) == []


def test_a_part_rebuilt_from_other_parts_does_not_match(stick: Path, keys: KeyDir,
                                                        tmp_path: Path) -> None:
    """Parity and parts of another bundle with the same layout: the rebuilt part is refused
    (the index's hashes of the parity and the part decide, not the parity's own)."""
    index = _index(stick, keys)
    (stick / parts.part_name(NAME, 1)).unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / NAME).write_bytes(os.urandom(SIZE))
    builder.split(other / NAME, max_part_size=3 * MiB, parity=True, sign=None, roots=[])
    for name in (parts.part_name(NAME, 2), parts.part_name(NAME, 3), NAME + ".part-parity"):
        shutil.copy(other / name, stick / name)
    other_index = parts.read_index_unverified(str(other / parts.index_name(NAME)))
    mixed = dataclasses.replace(index, parts=(index.parts[0],) + other_index.parts[1:],
                                parity=other_index.parity)
    out = _out(tmp_path)
    with pytest.raises(DigestMismatch, match="part-001 rebuilt from parity does not match"):
        parts.reassemble(str(stick), mixed, str(out))
    assert os.listdir(out) == []


def test_no_space_left_is_an_environment_problem(stick: Path, keys: KeyDir, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(parts.os, "fsync", full)
    out = _out(tmp_path)
    with pytest.raises(EnvironmentProblem, match="no space left") as e:
        parts.reassemble(str(stick), _index(stick, keys), str(out))
    assert e.value.hint and str(SIZE) in e.value.hint
    assert os.listdir(out) == []


def test_other_errors_pass_through_and_leave_nothing(stick: Path, keys: KeyDir, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")
    monkeypatch.setattr(parts.os, "fsync", broken)
    out = _out(tmp_path)
    with pytest.raises(OSError) as e:
        parts.reassemble(str(stick), _index(stick, keys), str(out))
    assert not isinstance(e.value, EnvironmentProblem) and e.value.errno == errno.EIO
    assert os.listdir(out) == []


def _xor(chunks: Iterator[bytes]) -> bytes:
    acc = bytearray(next(chunks))
    for c in chunks:
        parts._xor_into(acc, c)
    return bytes(acc)


def test_xor_of_a_shorter_chunk_leaves_the_tail() -> None:
    assert _xor(iter([b"\x0f\xf0\xaa", b"\xff"])) == b"\xf0\xf0\xaa"
