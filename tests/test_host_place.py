"""Placing files (installer/host/place.py): group order, links and copies, kept copies, backups and
undo, registries.yaml.

Moved unchanged from test_installer_gaps.py / test_installer_mutants.py."""

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from installer.host import place
from installer.host.layout import (
    AIRGAP_DIR,
    LIVE_TMP_PREFIX,
    REGISTRIES_KEPT,
    REGISTRIES_TARGET,
    Layout,
    Target,
)
from installer.host.state import Options, Release
from tests.bundles import (
    KeyDir,
    cli,
    default_spec,
    installed_host,
    live,
    live_image,
    tree,
    write_spec,
)

_SPEC11 = default_spec("1.1.0")


APP11 = live_image("app-1.1.0.tar", _SPEC11.images["app-1.1.0.tar"])


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def host(tmp_path: Path, keydir: KeyDir) -> Dict[str, Any]:
    return installed_host(tmp_path, keydir)


def test_folder_at_a_target_path_is_refused_before_placing(host: Dict[str, Any],
                                                           keydir: KeyDir) -> None:
    """place.py line 112 (``raise`` -> ``pass``): a folder where the new release puts a file
    is exit 6 naming it, and nothing is placed (no backup of a folder is attempted)."""
    root = host["root"]
    folder = root / APP11
    folder.mkdir()
    (folder / "keep").write_text("operator's")
    before = tree(root)
    r = cli("install", write_spec(_SPEC11, keydir, host["tmp"]), "--root", root,
            "--skip-start")
    assert r.returncode == 6, r.stderr
    assert "is a folder where a file must go" in r.stderr and APP11 in r.stderr
    assert "Traceback" not in r.stderr
    assert tree(root) == before
    status = json.loads(cli("status", "--root", root, "--json").stdout)
    assert status["installed"]["version"] == "1.0.0"


def _release_dir(root: Path) -> Path:
    digest = json.loads(cli("status", "--root", root, "--json").stdout)["installed"]["digest"]
    return root / "var/lib/rancher/airgap/releases" / digest


def test_upgrade_with_a_kept_copy_missing(host: Dict[str, Any], keydir: KeyDir) -> None:
    """place.py line 43 (``b is not None`` -> ``b is None``): the installed release's kept copy
    of an archive the new release also carries is gone; the upgrade still succeeds and lands
    exactly on a fresh install of the new release (no traceback)."""
    root, tmp = host["root"], host["tmp"]
    kept = _release_dir(root)
    shared = [p for p in kept.rglob("*airgap-images*") if p.is_file()]
    assert len(shared) == 1, shared
    shared[0].unlink()
    b2 = write_spec(_SPEC11, keydir, tmp)
    ref = tmp / "ref"
    assert cli("trust", keydir.root_json, "--root", ref).returncode == 0
    assert cli("install", b2, "--root", ref, "--skip-start", "--server").returncode == 0
    r = cli("install", b2, "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert live(root) == live(ref)


def test_failed_upgrade_restores_an_old_only_file_whose_kept_copy_is_gone(
        host: Dict[str, Any], keydir: KeyDir) -> None:
    """place.py line 43 (``a is not None`` -> ``a is None``): the installed release's kept copy
    of a chart the new release drops is gone, so the live chart is backed up; install.sh then
    fails (exit 6) and undo puts the removed chart back: the live tree is the old one."""
    root, tmp = host["root"], host["tmp"]
    before = live(root)
    kept = [p for p in _release_dir(root).rglob("demo-1.0.0.tgz") if p.is_file()]
    assert len(kept) == 1, kept
    kept[0].unlink()
    r = cli("install", write_spec(_SPEC11, keydir, tmp), "--root", root, "--skip-start",
            env={"AIRGAP_TEST_SCRIPT_FAIL": "1"})
    assert r.returncode == 6, r.stderr
    assert "Traceback" not in r.stderr
    assert live(root) == before


def test_old_image_archives_stay_until_the_commit(host: Dict[str, Any], keydir: KeyDir) -> None:
    """place.py line 32 (``_GROUPS[0][1]`` -> ``_GROUPS[1][1]``): until the state is committed
    the old release's image archives stay in place (so an undone change never brings back an
    archive K3s would import again) while its other files are gone. Killed right after the
    removal step, the live tree holds the old app archive and no old chart."""
    root, tmp = host["root"], host["tmp"]
    old_app = live_image("app-1.0.0.tar", default_spec("1.0.0").images["app-1.0.0.tar"])
    old_chart = "var/lib/rancher/k3s/server/static/charts/demo-1.0.0.tgz"
    assert (root / old_app).is_file() and (root / old_chart).is_file()
    r = cli("install", write_spec(_SPEC11, keydir, tmp), "--root", root, "--skip-start",
            env={"AIRGAP_INSTALL_FAILPOINT": "after-remove-old"})
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert (root / old_app).is_file()
    assert not (root / old_chart).exists()
    assert (root / APP11).is_file()


_IMG = "var/lib/rancher/k3s/agent/images/"


_BIN = "usr/local/bin/k3s"


_CHART = "var/lib/rancher/k3s/server/static/charts/c.tgz"


_MAN = "var/lib/rancher/k3s/server/manifests/m.yaml"


def _release(root: Path, digest_char: str, files: Dict[str, bytes],
             modes: Optional[Dict[str, int]] = None) -> Release:
    modes = modes or {}
    digest = digest_char * 64
    targets = []
    for n, (target, data) in enumerate(files.items()):
        member = f"files/{n}"
        src = root / AIRGAP_DIR / "releases" / digest / member
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        targets.append(Target(target=target, member=member,
                              sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                              mode=modes.get(target, 0o644)))
    script = Target(target="", member="install.sh", sha256="0" * 64, size=0, mode=0o755)
    return Release(digest=digest, name="t", version=digest_char, arch="amd64",
                   k3s_version="v1", role="server", options=Options(),
                   targets=tuple(targets), script=script)


def _src(root: Path, rel: Release, target: str) -> Path:
    t = next(t for t in rel.targets if t.target == target)
    return root / AIRGAP_DIR / "releases" / rel.digest / t.member


def _ino(p: Path) -> int:
    return os.lstat(p).st_ino


def test_place_apply_fresh_order_links_and_modes(tmp_path: Path) -> None:
    """place.py apply/put (group order, ``startswith`` filter, hit names, link + chmod, no temp
    left): a first install places every group in order, each file a link of the kept copy."""
    lay = Layout(root=str(tmp_path))
    new = _release(tmp_path, "b", {_BIN: b"bin", _IMG + "a.tar": b"img", _CHART: b"chart",
                                   _MAN: b"man"}, {_BIN: 0o755})
    hits: List[str] = []
    place.apply(lay, None, new, hit=hits.append)
    assert hits == ["after-place-images", "after-place-charts", "after-place-manifests",
                    "after-place-config", "after-place-binary", "after-remove-old"]
    for t in new.targets:
        dest = tmp_path / t.target
        assert _ino(dest) == _ino(_src(tmp_path, new, t.target))
        assert stat.S_IMODE(os.lstat(dest).st_mode) == t.mode
        assert not any(n.startswith(LIVE_TMP_PREFIX) for n in os.listdir(dest.parent))


def test_place_apply_stops_after_a_group_leaves_later_groups_unplaced(tmp_path: Path) -> None:
    """place.py apply (``continue`` on another group's prefix): killed at after-place-images,
    only the archives are live."""
    lay = Layout(root=str(tmp_path))
    new = _release(tmp_path, "b", {_BIN: b"bin", _IMG + "a.tar": b"img"})

    def hit(name: str) -> None:
        if name == "after-place-images":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        place.apply(lay, None, new, hit=hit)
    assert (tmp_path / _IMG / "a.tar").exists() and not (tmp_path / _BIN).exists()


def test_place_upgrade_keeps_unchanged_and_old_images_until_commit(tmp_path: Path) -> None:
    """place.py _already_placed (unchanged archive kept by inode), apply's old-only removal
    (not images), remove_replaced_images (only old-only images, returned)."""
    lay = Layout(root=str(tmp_path))
    old = _release(tmp_path, "a", {_IMG + "same.tar": b"same", _IMG + "gone.tar": b"gone",
                                   _MAN: b"old-man", "usr/local/bin/old": b"x"})
    place.apply(lay, None, old, hit=lambda _: None)
    new = _release(tmp_path, "b", {_IMG + "same.tar": b"same", _MAN: b"new-man"})
    place.apply(lay, old, new, hit=lambda _: None)
    assert _ino(tmp_path / _IMG / "same.tar") == _ino(_src(tmp_path, old, _IMG + "same.tar"))
    assert (tmp_path / _MAN).read_bytes() == b"new-man"
    assert not (tmp_path / "usr/local/bin/old").exists()
    assert (tmp_path / _IMG / "gone.tar").read_bytes() == b"gone"
    assert place.remove_replaced_images(lay, old, new) == [_IMG + "gone.tar"]
    assert not (tmp_path / _IMG / "gone.tar").exists()
    assert (tmp_path / _IMG / "same.tar").exists()
    assert place.remove_replaced_images(lay, None, new) == []


def test_place_already_placed_compares_size_mode_and_hash(tmp_path: Path) -> None:
    """place.py _already_placed: an equal copy (other inode) is left; a wrong mode, size or
    content, or a symlink, is replaced."""
    lay = Layout(root=str(tmp_path))
    new = _release(tmp_path, "b", {_IMG + "a.tar": b"aaaa", _IMG + "b.tar": b"bbbb",
                                   _IMG + "c.tar": b"cccc", _IMG + "d.tar": b"dddd",
                                   _IMG + "e.tar": b"eeee"})
    d = tmp_path / _IMG
    d.mkdir(parents=True)
    (d / "a.tar").write_bytes(b"aaaa")
    os.chmod(d / "a.tar", 0o644)
    (d / "b.tar").write_bytes(b"bbbb")
    os.chmod(d / "b.tar", 0o600)
    (d / "c.tar").write_bytes(b"ccccc")
    os.chmod(d / "c.tar", 0o644)
    (d / "d.tar").write_bytes(b"DDDD")
    os.chmod(d / "d.tar", 0o644)
    os.symlink(_src(tmp_path, new, _IMG + "e.tar"), d / "e.tar")
    equal = _ino(d / "a.tar")
    place.apply(lay, None, new, hit=lambda _: None)
    assert _ino(d / "a.tar") == equal
    for n in "bcde":
        assert _ino(d / f"{n}.tar") == _ino(_src(tmp_path, new, _IMG + f"{n}.tar")), n


def test_place_put_copies_when_a_link_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """place.py put (``e.errno not in _NO_LINK`` / ``raise``): os.link refused with EXDEV (the
    kernel fault of another filesystem, injected) is a verified copy with the target mode;
    any other link error is raised."""
    lay = Layout(root=str(tmp_path))
    new = _release(tmp_path, "b", {_BIN: b"bin"}, {_BIN: 0o755})

    def exdev(*a: Any, **k: Any) -> None:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "link", exdev)
    place.apply(lay, None, new, hit=lambda _: None)
    dest = tmp_path / _BIN
    assert dest.read_bytes() == b"bin"
    assert _ino(dest) != _ino(_src(tmp_path, new, _BIN))
    assert stat.S_IMODE(os.lstat(dest).st_mode) == 0o755
    assert not any(n.startswith(LIVE_TMP_PREFIX) for n in os.listdir(dest.parent))

    def eacces(*a: Any, **k: Any) -> None:
        raise OSError(errno.EACCES, "denied")

    monkeypatch.setattr(os, "link", eacces)
    dest.unlink()
    with pytest.raises(PermissionError):
        place.apply(lay, None, new, hit=lambda _: None)


def test_place_put_replaces_a_stale_temp_and_same_inode(tmp_path: Path) -> None:
    """place.py put (stale temp name removed; a rename onto the same inode leaves no temp)."""
    src = tmp_path / "src"
    src.write_bytes(b"x")
    dest = tmp_path / "d" / "f"
    dest.parent.mkdir()
    (dest.parent / (LIVE_TMP_PREFIX + "f")).write_bytes(b"stale")
    place.put(str(src), str(dest), sha256=None, size=None, mode=0o600)
    assert _ino(dest) == _ino(src) and os.listdir(dest.parent) == ["f"]
    place.put(str(src), str(dest), sha256=None, size=None, mode=0o600)
    assert _ino(dest) == _ino(src) and os.listdir(dest.parent) == ["f"]
    assert stat.S_IMODE(os.lstat(dest).st_mode) == 0o600


def test_place_prepare_records_and_undo_restores(tmp_path: Path) -> None:
    """place.py prepare (absent / release / backup records, 5-digit names, folder refused) and
    undo (each kind put back, idempotent)."""
    lay = Layout(root=str(tmp_path))
    old = _release(tmp_path, "a", {_IMG + "o.tar": b"old", _MAN: b"old-man"})
    place.apply(lay, None, old, hit=lambda _: None)
    os.unlink(_src(tmp_path, old, _MAN))          # kept copy gone: backed up instead
    foreign = tmp_path / _CHART
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"operator")
    os.chmod(foreign, 0o640)
    link = tmp_path / "usr/local/bin/k3s"
    link.parent.mkdir(parents=True)
    os.symlink("/elsewhere", link)
    new = _release(tmp_path, "b", {_IMG + "n.tar": b"new", _CHART: b"chart", _BIN: b"bin",
                                   _IMG + "o.tar": b"changed"})
    backup = tmp_path / "backup"
    records = place.prepare(lay, str(backup), old, new=new)
    assert records == [
        {"target": _IMG + "n.tar", "kind": "absent"},
        {"target": _CHART, "kind": "backup", "backup": "00001"},
        {"target": _BIN, "kind": "backup", "backup": "00002"},
        {"target": _IMG + "o.tar", "kind": "release"},
        {"target": _MAN, "kind": "backup", "backup": "00004"},
    ]
    assert os.readlink(backup / "00002") == "/elsewhere"
    place.apply(lay, old, new, hit=lambda _: None)
    assert not (tmp_path / _MAN).exists()
    for _ in range(2):
        place.undo(lay, str(backup), old, records=records)
        assert not (tmp_path / _IMG / "n.tar").exists()
        assert foreign.read_bytes() == b"operator"
        assert stat.S_IMODE(os.lstat(foreign).st_mode) == 0o640
        assert os.readlink(link) == "/elsewhere"
        assert (tmp_path / _IMG / "o.tar").read_bytes() == b"old"
        assert (tmp_path / _MAN).read_bytes() == b"old-man"
    (tmp_path / _IMG / "n.tar").mkdir()
    with pytest.raises(place.EnvironmentProblem, match="is a folder where a file must go"):
        place.prepare(lay, str(tmp_path / "b2"), old, new=new)


def test_place_backup_copies_when_a_link_is_refused(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """place.py _backup (EXDEV -> copy with the file's mode; another error raised)."""
    lay = Layout(root=str(tmp_path))
    foreign = tmp_path / _CHART
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"operator")
    os.chmod(foreign, 0o640)
    new = _release(tmp_path, "b", {_CHART: b"chart"})

    def fail(code: int) -> Callable[..., None]:
        def link(*a: Any, **k: Any) -> None:
            raise OSError(code, os.strerror(code))
        return link

    monkeypatch.setattr(os, "link", fail(errno.EXDEV))
    place.prepare(lay, str(tmp_path / "bk"), None, new=new)
    saved = tmp_path / "bk" / "00000"
    assert saved.read_bytes() == b"operator" and _ino(saved) != _ino(foreign)
    assert stat.S_IMODE(os.lstat(saved).st_mode) == 0o640
    monkeypatch.setattr(os, "link", fail(errno.EACCES))
    with pytest.raises(PermissionError):
        place.prepare(lay, str(tmp_path / "bk2"), None, new=new)


def test_place_sweep_and_foreign_files(tmp_path: Path) -> None:
    """place.py sweep_temp_files (only our temp names, missing folders skipped) and
    foreign_files (sorted, dotfiles and our files left out, no folder -> [])."""
    lay = Layout(root=str(tmp_path))
    assert place.foreign_files(lay, None) == []
    place.sweep_temp_files(lay)
    rel = _release(tmp_path, "b", {_IMG + "ours.tar": b"o"})
    place.apply(lay, None, rel, hit=lambda _: None)
    d = tmp_path / _IMG
    for n in ("z.tar", "b.tar", ".hidden", LIVE_TMP_PREFIX + "x"):
        (d / n).write_bytes(b"f")
    (d / (LIVE_TMP_PREFIX + "dir")).mkdir()
    assert place.foreign_files(lay, rel) == [_IMG + "b.tar", _IMG + "z.tar"]
    assert place.foreign_files(lay, None) == [_IMG + "b.tar", _IMG + "ours.tar", _IMG + "z.tar"]
    place.sweep_temp_files(lay)
    assert sorted(os.listdir(d)) == sorted([".hidden", LIVE_TMP_PREFIX + "dir", "b.tar",
                                            "ours.tar", "z.tar"])


def test_place_union_targets_new_first_then_old_leftovers(tmp_path: Path) -> None:
    """place.py union_targets (``not in`` dedup, old None)."""
    old = _release(tmp_path, "a", {"x": b"1", "y": b"2"})
    new = _release(tmp_path, "b", {"y": b"3", "z": b"4"})
    assert place.union_targets(old, new) == ["y", "z", "x"]
    assert place.union_targets(None, new) == ["y", "z"]


def test_place_rerun_and_unchanged_archive_are_not_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """place.py line 132 (``return True`` -> ``False``) and line 133 (``old_src is not None``
    -> ``is None``): a file already linked from the kept copy, and an archive the old release
    placed with the same sha256, are recognised by inode: never hashed or placed again (a
    re-run does not read gigabytes of archives; K3s does not re-import an unchanged one)."""
    lay = Layout(root=str(tmp_path))
    old = _release(tmp_path, "a", {_IMG + "same.tar": b"same"})
    place.apply(lay, None, old, hit=lambda _: None)
    new = _release(tmp_path, "b", {_IMG + "same.tar": b"same", _MAN: b"new"})
    hashed: List[str] = []
    real = place.hash_file

    def spy(path: Any) -> Any:
        hashed.append(str(path))
        return real(path)

    monkeypatch.setattr(place, "hash_file", spy)
    place.apply(lay, old, new, hit=lambda _: None)
    assert hashed == []
    assert _ino(tmp_path / _IMG / "same.tar") == _ino(_src(tmp_path, old, _IMG + "same.tar"))
    real_put = place.put
    puts: List[str] = []

    def put_spy(src: str, dest: str, **kw: Any) -> None:
        puts.append(dest)
        real_put(src, dest, **kw)

    monkeypatch.setattr(place, "put", put_spy)
    place.apply(lay, old, new, hit=lambda _: None)  # the same change run again
    assert hashed == [] and puts == []  # nothing re-linked: the live folders see no event
    assert _ino(tmp_path / _MAN) == _ino(_src(tmp_path, new, _MAN))


def test_place_undo_skips_a_backup_that_is_gone(tmp_path: Path) -> None:
    """place.py line 187 (``and`` -> ``or``): undo of a backup record whose kept file is gone
    (a repeated undo after the tx folder was cleaned) leaves the live path alone, no error."""
    lay = Layout(root=str(tmp_path))
    live_file = tmp_path / _CHART
    live_file.parent.mkdir(parents=True)
    live_file.write_bytes(b"now")
    records = [{"target": _CHART, "kind": "backup", "backup": "00000"}]
    place.undo(lay, str(tmp_path / "no-backup"), None, records=records)
    assert live_file.read_bytes() == b"now"


def test_place_listing_follows_folder_symlinks_inside_the_root_only(tmp_path: Path) -> None:
    """place.py line 208 / line 223 (``follow=True`` -> ``False``): a managed folder that is an
    absolute symlink is resolved inside the root (THREATS 32), so sweep_temp_files never
    removes, and foreign_files never lists, files of the host folder the link names."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / (LIVE_TMP_PREFIX + "host")).write_bytes(b"host's")
    (outside / "host.tar").write_bytes(b"host's")
    root = tmp_path / "root"
    for rel in ("usr/local/bin", _IMG.rstrip("/")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(str(outside), root / rel)
    inside = root / str(outside).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "in.tar").write_bytes(b"ours")
    (inside / (LIVE_TMP_PREFIX + "in")).write_bytes(b"tmp")
    lay = Layout(root=str(root))
    assert place.foreign_files(lay, None) == [_IMG + "in.tar"]
    place.sweep_temp_files(lay)
    assert sorted(os.listdir(outside)) == [LIVE_TMP_PREFIX + "host", "host.tar"]
    assert os.listdir(inside) == ["in.tar"]


def test_place_hand_written_registries_yaml_kept_and_put_back(tmp_path: Path) -> None:
    """place.py _keep_registries / _restore_registries: a hand-written registries.yaml is kept
    aside (content and mode) when a release brings its own, and put back when a release
    without one replaces it; nothing is kept when the old release owned the file, when the new
    one has none, or when there is none; a folder in either place is left alone."""
    lay = Layout(root=str(tmp_path))
    live_reg, kept = tmp_path / REGISTRIES_TARGET, tmp_path / REGISTRIES_KEPT
    plain = _release(tmp_path, "a", {_MAN: b"m"})
    assert place.apply(lay, None, plain, hit=lambda _: None) == []   # none there, none brought
    live_reg.parent.mkdir(parents=True)
    live_reg.write_bytes(b"mine")
    os.chmod(live_reg, 0o600)
    assert place.apply(lay, plain, plain, hit=lambda _: None) == []  # none brought: left alone
    assert live_reg.read_bytes() == b"mine" and not kept.exists()
    mirrors = _release(tmp_path, "b", {_MAN: b"m", REGISTRIES_TARGET: b"bundle's"})
    notes = place.apply(lay, plain, mirrors, hit=lambda _: None)
    assert len(notes) == 1 and f"kept the hand-written /{REGISTRIES_TARGET}" in notes[0]
    assert f"as /{REGISTRIES_KEPT}: bundle t b brings its own" in notes[0]
    assert kept.read_bytes() == b"mine" and stat.S_IMODE(os.lstat(kept).st_mode) == 0o600
    assert live_reg.read_bytes() == b"bundle's"
    mirrors2 = _release(tmp_path, "c", {_MAN: b"m", REGISTRIES_TARGET: b"bundle's 2"})
    assert place.apply(lay, mirrors, mirrors2, hit=lambda _: None) == []  # old owned it
    assert kept.read_bytes() == b"mine" and live_reg.read_bytes() == b"bundle's 2"
    plain2 = _release(tmp_path, "d", {_MAN: b"m2"})
    notes = place.apply(lay, mirrors2, plain2, hit=lambda _: None)
    assert notes == [f"put the hand-written /{REGISTRIES_TARGET} back from /{REGISTRIES_KEPT}"]
    assert live_reg.read_bytes() == b"mine" and not kept.exists()
    # the bundle's file removed with no kept one: no note, nothing there
    place.apply(lay, plain2, mirrors2, hit=lambda _: None)
    kept.unlink()
    assert place.apply(lay, mirrors2, plain2, hit=lambda _: None) == []
    assert not live_reg.exists()
    # a folder where the kept copy would be: not put back
    place.apply(lay, plain2, mirrors2, hit=lambda _: None)
    kept.mkdir()
    assert place.apply(lay, mirrors2, plain2, hit=lambda _: None) == []
    assert kept.is_dir() and not live_reg.exists()
    kept.rmdir()
    # a folder where registries.yaml goes: nothing kept (the placing then fails on it)
    live_reg.mkdir()
    with pytest.raises(OSError):
        place.apply(lay, plain2, mirrors2, hit=lambda _: None)
    assert live_reg.is_dir() and not kept.exists()
