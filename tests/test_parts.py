"""Split bundles with parity (installer/sources/parts.py, bundler/assemble/parts.py): every single
part lost or
damaged is rebuilt; two are refused naming both; the index is signed and checked against the
device's root; the reassembled file is the very bundle that was split."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from installer.errors import ConfigError, FormatError, SignatureError, UntrustedContent
from installer.sources import parts
from tests.bundles import KeyDir, cli, default_spec, write_spec
from tests.cli_helpers import bundle_proc

MiB = 1 << 20
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, keys: KeyDir) -> Path:
    """A signed bundle of about 4.5 MiB: 4 parts of 1 MiB and a shorter fifth."""
    spec = default_spec("1.0.0")
    spec.images["bulk.tar"] = os.urandom(4 * MiB + 300_000)
    return write_spec(spec, keys, tmp_path_factory.mktemp("orig"))


def _split(original: Path, tmp_path: Path, *extra: str, keys: KeyDir | None = None) -> Path:
    folder = tmp_path / "stick"
    folder.mkdir()
    shutil.copy(original, folder / original.name)
    args = ["split", str(folder / original.name), "--max-part-size", "2M", *extra]
    args += ["--keys", str(keys.path)] if keys else ["--unsigned"]
    r = bundle_proc(*args, cwd=tmp_path)
    assert r.code == 0, r.err
    return folder


def _dir(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir()
    return path


def _index(folder: Path, keys: KeyDir) -> parts.PartsIndex:
    name = next(p.name for p in folder.iterdir() if p.name.endswith(parts.INDEX_SUFFIX))
    return parts.read_index(str(folder / name), anchor=keys.root_json.read_bytes(), now=NOW)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_writes_parts_parity_and_signed_index(original: Path, keys: KeyDir,
                                                    tmp_path: Path) -> None:
    folder = _split(original, tmp_path, keys=keys)
    names = sorted(p.name for p in folder.iterdir())
    assert original.name not in names  # the parts replace the bundle
    assert names == sorted([*(f"{original.name}.part-{i:03d}" for i in range(1, 6)),
                            f"{original.name}.part-parity", f"{original.name}.parts.json"])
    index = _index(folder, keys)
    assert index.part_size == MiB and [p.size for p in index.parts][:4] == [MiB] * 4
    assert index.size == original.stat().st_size and index.sha256 == _sha(original)
    assert all(p.size < 2 * MiB for p in index.parts)
    out = tmp_path / "dest"
    out.mkdir()
    res = parts.reassemble(str(folder), index, str(out))
    assert res.rebuilt is None and _sha(Path(res.path)) == _sha(original)


@pytest.mark.parametrize("damage", ["delete", "flip", "truncate"])
@pytest.mark.parametrize("number", [1, 3, 5])
def test_any_single_part_is_rebuilt_from_parity(original: Path, keys: KeyDir, tmp_path: Path,
                                                damage: str, number: int) -> None:
    folder = _split(original, tmp_path, keys=keys)
    victim = folder / f"{original.name}.part-{number:03d}"
    if damage == "delete":
        victim.unlink()
    elif damage == "flip":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x20
        victim.write_bytes(bytes(data))
    else:
        victim.write_bytes(victim.read_bytes()[:-1])
    out = tmp_path / "dest"
    out.mkdir()
    res = parts.reassemble(str(folder), _index(folder, keys), str(out))
    assert res.rebuilt == victim.name
    assert _sha(Path(res.path)) == _sha(original)
    # and the result is the signed bundle a device accepts
    root = tmp_path / "root"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    r = cli("verify", res.path, "--root", root)
    assert r.returncode == 0, r.stderr


def test_two_bad_parts_are_refused_naming_both(original: Path, keys: KeyDir,
                                               tmp_path: Path) -> None:
    folder = _split(original, tmp_path, keys=keys)
    (folder / f"{original.name}.part-002").unlink()
    p4 = folder / f"{original.name}.part-004"
    p4.write_bytes(b"\0" * p4.stat().st_size)
    out = tmp_path / "dest"
    out.mkdir()
    with pytest.raises(UntrustedContent) as e:
        parts.reassemble(str(folder), _index(folder, keys), str(out))
    assert "part-002" in str(e.value) and "part-004" in str(e.value)
    assert os.listdir(out) == []  # nothing half-written


def test_missing_parts_are_named_before_anything_is_read(original: Path, keys: KeyDir,
                                                         tmp_path: Path) -> None:
    folder = _split(original, tmp_path, keys=keys)
    index = _index(folder, keys)
    for n in (1, 5):
        (folder / f"{original.name}.part-{n:03d}").unlink()
    assert parts.check_present(str(folder), index) == [
        f"{original.name}.part-001", f"{original.name}.part-005"]
    out = tmp_path / "dest"
    out.mkdir()
    with pytest.raises(UntrustedContent, match="part-001, .*part-005"):
        parts.reassemble(str(folder), index, str(out))


def test_damaged_part_and_damaged_parity_cannot_rebuild(original: Path, keys: KeyDir,
                                                        tmp_path: Path) -> None:
    folder = _split(original, tmp_path, keys=keys)
    (folder / f"{original.name}.part-003").unlink()
    par = folder / f"{original.name}.part-parity"
    data = bytearray(par.read_bytes())
    data[10] ^= 1
    par.write_bytes(bytes(data))
    out = tmp_path / "dest"
    out.mkdir()
    with pytest.raises(UntrustedContent, match="parity part .* is damaged"):
        parts.reassemble(str(folder), _index(folder, keys), str(out))
    assert os.listdir(out) == []


def test_without_parity_a_lost_part_is_named(original: Path, keys: KeyDir,
                                             tmp_path: Path) -> None:
    folder = _split(original, tmp_path, "--no-parity", keys=keys)
    assert not (folder / f"{original.name}.part-parity").exists()
    (folder / f"{original.name}.part-002").unlink()
    out = tmp_path / "dest"
    out.mkdir()
    with pytest.raises(UntrustedContent, match="part-002; these bundle parts have no parity"):
        parts.reassemble(str(folder), _index(folder, keys), str(out))


def test_parts_of_another_bundle_are_refused(original: Path, keys: KeyDir,
                                             tmp_path: Path) -> None:
    """Same file names, other bytes: two swapped parts cannot pass for the signed ones."""
    folder = _split(original, tmp_path, keys=keys)
    other_spec = default_spec("1.0.0")
    other_spec.images["bulk.tar"] = os.urandom(4 * MiB + 300_000)
    other = write_spec(other_spec, keys, _dir(tmp_path, "o"))
    other_folder = _split(other, _dir(tmp_path, "x"), keys=keys)
    for n in (2, 3):
        name = f"{original.name}.part-{n:03d}"
        shutil.copy(other_folder / name, folder / name)
    out = tmp_path / "dest"
    out.mkdir()
    with pytest.raises(UntrustedContent, match="part-002, .*part-003"):
        parts.reassemble(str(folder), _index(folder, keys), str(out))


def test_index_must_be_signed_by_the_devices_root(original: Path, keys: KeyDir,
                                                  tmp_path: Path) -> None:
    unsigned = _split(original, _dir(tmp_path, "u"))
    with pytest.raises(SignatureError):
        _index(unsigned, keys)
    stranger = KeyDir(tmp_path / "stranger")
    signed = _split(original, _dir(tmp_path, "s"), keys=stranger)
    with pytest.raises(SignatureError):
        _index(signed, keys)
    with pytest.raises(ConfigError):
        parts.read_index(str(tmp_path / "nope.parts.json"), anchor=b"", now=NOW)


def test_index_rules_shared_by_writer_and_reader() -> None:
    good = parts.PartsIndex("edge-1.0.0-arm64.tar", 3 * MiB, "a" * 64, 2 * MiB,
                            (parts.PartFile("edge-1.0.0-arm64.tar.part-001", 2 * MiB, "b" * 64),
                             parts.PartFile("edge-1.0.0-arm64.tar.part-002", MiB, "c" * 64)),
                            None)
    assert parts.parse_index(good.to_json()) == good
    bad = [
        dict(good.to_json(), size=3 * MiB + 1),                      # parts do not add up
        dict(good.to_json(), bundle="../x.tar"),                      # a path, not a name
        dict(good.to_json(), part_size=1000),                         # below the minimum
        dict(good.to_json(), parts=[good.parts[1].to_json(), good.parts[0].to_json()]),
        dict(good.to_json(), extra=1),                                # unknown key
        dict(good.to_json(), size=True),                              # bool is not a size
    ]
    for doc in bad:
        with pytest.raises(FormatError):
            parts.parse_index(doc)


def test_split_cli_refuses_unsigned_by_default_and_leaves_small_bundles(
        original: Path, tmp_path: Path) -> None:
    copy = tmp_path / original.name
    shutil.copy(original, copy)
    r = bundle_proc("split", str(copy), "--max-part-size", "2M", cwd=tmp_path)
    assert r.code == 2 and "--keys" in r.err
    r = bundle_proc("split", str(copy), "--max-part-size", "4G", "--unsigned", cwd=tmp_path)
    assert r.code == 0 and "fits in one file" in r.out and copy.exists()
    r = bundle_proc("split", str(copy), "--max-part-size", "1M", "--unsigned", cwd=tmp_path)
    assert r.code == 2 and "too small" in r.err and copy.exists()
    r = bundle_proc("split", str(copy), "--max-part-size", "four", "--unsigned", cwd=tmp_path)
    assert r.code == 2 and "bad size" in r.err
