"""`airgap-install install|verify FOLDER` on a folder of split parts (installer/sources/parts.py):
the
index is verified against the pinned root first, one lost or damaged part is rebuilt from parity
(and named), anything worse is refused naming every bad part before the root is touched, and
the installed tree is the one a one-file install gives."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.bundles import KeyDir, cli, default_spec, tree, write_spec
from tests.cli_helpers import bundle, bundle_proc

MiB = 1 << 20
NPARTS = 3


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, keys: KeyDir) -> Path:
    """A signed bundle of about 2.3 MiB: parts of 1 MiB, 1 MiB and a shorter third."""
    spec = default_spec("1.0.0")
    spec.images["bulk.tar"] = os.urandom(2 * MiB + 300_000)
    return write_spec(spec, keys, tmp_path_factory.mktemp("orig"))


@pytest.fixture(scope="module")
def split_set(tmp_path_factory: pytest.TempPathFactory, original: Path, keys: KeyDir) -> Path:
    folder = tmp_path_factory.mktemp("split") / "stick"
    folder.mkdir()
    shutil.copy(original, folder / original.name)
    r = bundle_proc("split", str(folder / original.name), "--max-part-size", "2M",
                    "--keys", str(keys.path), cwd=folder.parent)
    assert r.code == 0, r.err
    assert len(list(folder.glob("*.part-0*"))) == NPARTS
    return folder


def _root(base: Path, keys: KeyDir) -> Path:
    root = base / "root"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    return root


def _installed_tree(root: Path) -> dict[str, tuple[str, str, int]]:
    """The root after an install (live files, kept release copies, trust anchor), without the
    state files, which record install times, and the device's own key and last signed report
    (``device/``: a new key per root, a report with its time)."""
    skip = tuple(f"var/lib/rancher/airgap/{n}" for n in
                 ("state.json", "journal.json", "install.lock", "device"))
    out = {k: v for k, v in tree(root).items() if not k.startswith(skip)}
    assert any(k.startswith("var/lib/rancher/airgap/releases/") for k in out)
    return out


@pytest.fixture(scope="module")
def one_file_tree(tmp_path_factory: pytest.TempPathFactory, original: Path,
                  keys: KeyDir) -> dict[str, tuple[str, str, int]]:
    root = _root(tmp_path_factory.mktemp("one"), keys)
    r = cli("install", original, "--root", root, "--skip-start", "--server")
    assert r.returncode == 0, r.stderr
    return _installed_tree(root)


def _copy(split_set: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "stick"
    shutil.copytree(split_set, folder)
    return folder


def _part(folder: Path, original: Path, n: int | str) -> Path:
    return folder / (f"{original.name}.part-{n:03d}" if isinstance(n, int)
                     else f"{original.name}.part-{n}")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("number", range(1, NPARTS + 1))
@pytest.mark.parametrize("damage", ["delete", "flip"])
def test_each_lost_or_damaged_part_is_rebuilt_and_installs_the_same_tree(
        original: Path, keys: KeyDir, split_set: Path, one_file_tree: dict[str, object],
        tmp_path: Path, damage: str, number: int) -> None:
    folder = _copy(split_set, tmp_path)
    victim = _part(folder, original, number)
    victim.unlink() if damage == "delete" else _flip(victim)
    root = _root(tmp_path, keys)
    r = cli("install", folder, "--root", root, "--skip-start", "--server", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["action"] == "installed" and result["rebuilt_part"] == victim.name
    assert result["bundle"] == str(folder) and result["parts"] == NPARTS
    assert _installed_tree(root) == one_file_tree
    # the reassembled copy is gone; the medium is left as it was
    assert os.listdir(root / "var/lib/rancher/airgap/staging") == []
    assert (not victim.exists()) if damage == "delete" else victim.exists()


def test_undamaged_parts_install_without_reading_parity(
        original: Path, keys: KeyDir, split_set: Path, one_file_tree: dict[str, object],
        tmp_path: Path) -> None:
    folder = _copy(split_set, tmp_path)
    _part(folder, original, "parity").unlink()  # not needed when every part is sound
    root = _root(tmp_path, keys)
    r = cli("install", folder, "--root", root, "--skip-start", "--server")
    assert r.returncode == 0, r.stderr
    assert "rebuilt" not in r.stderr + r.stdout
    assert _installed_tree(root) == one_file_tree


def test_verify_folder_reports_the_rebuilt_part_and_changes_nothing(
        original: Path, keys: KeyDir, split_set: Path, tmp_path: Path) -> None:
    folder = _copy(split_set, tmp_path)
    _flip(_part(folder, original, 2))
    root = _root(tmp_path, keys)
    before = tree(root)
    r = cli("verify", folder, "--root", root)
    assert r.returncode == 0, r.stderr
    assert f"rebuilt part {original.name}.part-002 from parity" in r.stdout
    assert r.stdout.startswith("OK ")
    r = cli("verify", folder / f"{original.name}.parts.json", "--root", root, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["rebuilt_part"] == f"{original.name}.part-002"
    assert doc["bundle"] == str(folder)
    staging = root / "var/lib/rancher/airgap/staging"
    assert {k: v for k, v in tree(root).items()
            if not k.startswith(str(staging.relative_to(root)))} == before
    assert not staging.exists() or os.listdir(staging) == []


def test_two_damaged_parts_are_refused_naming_both_before_anything(
        original: Path, keys: KeyDir, split_set: Path, tmp_path: Path) -> None:
    folder = _copy(split_set, tmp_path)
    _part(folder, original, 1).unlink()
    _flip(_part(folder, original, 3))
    root = _root(tmp_path, keys)
    before = tree(root)
    for cmd in ("install", "verify"):
        extra = ("--skip-start", "--server") if cmd == "install" else ("--json",)
        r = cli(cmd, folder, "--root", root, *extra)
        assert r.returncode == 3, r.stderr
        assert f"{original.name}.part-001, {original.name}.part-003" in r.stderr
        assert "parity rebuilds only one part" in r.stderr and "Traceback" not in r.stderr
    after = tree(root)
    staging = "var/lib/rancher/airgap/staging"
    assert {k: v for k, v in after.items() if not k.startswith(staging)} == \
        {k: v for k, v in before.items() if not k.startswith(staging)}
    assert not (root / staging).exists() or os.listdir(root / staging) == []


def test_a_part_of_another_bundle_is_refused_without_parity(
        original: Path, keys: KeyDir, tmp_path: Path) -> None:
    """No parity: a part swapped in from another bundle of the same name is named, never
    used (with parity it would be rebuilt: the test above)."""
    sets = []
    for label, bulk in (("a", None), ("b", os.urandom(2 * MiB + 300_000))):
        folder = tmp_path / label / "stick"
        folder.mkdir(parents=True)
        if bulk is None:
            shutil.copy(original, folder / original.name)
        else:
            spec = default_spec("1.0.0")
            spec.images["bulk.tar"] = bulk
            write_spec(spec, keys, folder)
        r = bundle_proc("split", str(folder / original.name), "--max-part-size", "2M",
                        "--no-parity", "--keys", str(keys.path), cwd=tmp_path)
        assert r.code == 0, r.err
        sets.append(folder)
    shutil.copy(_part(sets[1], original, 2), _part(sets[0], original, 2))
    root = _root(tmp_path, keys)
    p = cli("install", sets[0], "--root", root, "--skip-start", "--server")
    assert p.returncode == 3, p.stderr
    assert f"parts missing or damaged: {original.name}.part-002;" in p.stderr
    assert not (root / "usr").exists()


def test_an_index_signed_by_another_root_is_refused(
        original: Path, keys: KeyDir, tmp_path: Path) -> None:
    stranger = KeyDir(tmp_path / "stranger")
    folder = tmp_path / "stick"
    folder.mkdir()
    shutil.copy(original, folder / original.name)
    r = bundle_proc("split", str(folder / original.name), "--max-part-size", "2M",
                    "--keys", str(stranger.path), cwd=tmp_path)
    assert r.code == 0, r.err
    root = _root(tmp_path, keys)
    for cmd in ("install", "verify"):
        p = cli(cmd, folder, "--root", root, "--json")
        assert p.returncode == 3, p.stderr
        err = json.loads(p.stdout)["error"]
        assert err["kind"] == "SignatureError" and "this host trusts" in err["message"]
    assert not (root / "usr").exists()


# ---------------------------------------------------------------- bundle inspect / verify


def test_bundle_inspect_and_verify_accept_the_parts_folder(
        original: Path, keys: KeyDir, split_set: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(split_set, tmp_path)
    r = bundle(capsys, "inspect", str(folder), "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["file"] == str(folder) and doc["name"] == "edge" and doc["signatures"] == 1
    assert doc["size"] == original.stat().st_size
    _part(folder, original, 3).unlink()
    index = folder / f"{original.name}.parts.json"
    for target in (folder, index):
        r = bundle(capsys, "verify", str(target), "--trust", str(keys.root_json), "--json")
        assert r.code == 0, r.err
        report = json.loads(r.out)
        assert report["rebuilt_part"] == f"{original.name}.part-003"
        assert report["signatures"] == "ok" and report["bundle"] == "edge"
    _flip(_part(folder, original, 1))
    r = bundle(capsys, "verify", str(folder), "--trust", str(keys.root_json))
    assert r.code == 3 and f"{original.name}.part-001, {original.name}.part-003" in r.err
    stranger = KeyDir(tmp_path / "stranger")
    r = bundle(capsys, "verify", str(split_set), "--trust", str(stranger.root_json))
    assert r.code == 3 and "parts index" in r.err and "this trusted root is" in r.err
    assert not list(Path(tempfile.gettempdir()).glob("bundle-parts-*"))


def test_a_fifo_as_the_parts_index_is_refused_not_waited_on(keys: KeyDir,
                                                            tmp_path: Path) -> None:
    """THREATS 36 on the parts path: only a regular file is opened as an index."""
    folder = tmp_path / "stick"
    folder.mkdir()
    fifo = folder / "edge-1.0.0-amd64.tar.parts.json"
    os.mkfifo(fifo)
    root = _root(tmp_path, keys)
    for cmd, source in (("verify", fifo), ("install", fifo), ("install", folder)):
        r = cli(cmd, source, "--root", root, timeout=30)
        assert r.returncode == 2 and "FIFO" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
