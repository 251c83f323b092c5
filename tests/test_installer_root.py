"""The install root contains, the state is not trusted, the anchor moves only with a commit.

THREATS.md lines covered here: 32 (symlinks inside ``--root``, absolute or ``..``, resolved as a
chroot would: nothing outside is created, replaced or deleted; the tree outside is snapshotted
before and compared after), 34 (an edited state or journal, paths outside the root or wrong
types, is refused like a bad manifest and never acted on), and issue #11 item 6 (a root
rotation is pinned only together with the committed state; a failed install.sh leaves the old
anchor and no promoted release behind).
"""

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from installer import errors, fsio
from installer.host import place, rootfs, state
from tests.bundles import KeyDir, cli, default_spec, live, live_image, tree, write_spec

AIRGAP = "var/lib/rancher/airgap"

# ---------------------------------------------------------------------------- the resolver


def test_resolve_is_chroot_semantics(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "a/b").mkdir(parents=True)
    (root / "real").mkdir()
    os.symlink("/real", root / "abs")                    # absolute: restarts at the root
    os.symlink("../../../../../../../real", root / "a/up")  # .. clamped at the root
    os.symlink("b/../../real", root / "a/mixed")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("/real/file", root / "a/last")
    r = str(root)
    assert rootfs.resolve(r, "abs/x") == f"{r}/real/x"
    assert rootfs.resolve(r, "a/up/x") == f"{r}/real/x"
    assert rootfs.resolve(r, "a/mixed/x") == f"{r}/real/x"
    assert rootfs.resolve(r, "../../etc/passwd") == f"{r}/etc/passwd"
    assert rootfs.resolve(r, "/a/b/../../..") == r
    assert rootfs.resolve(r, "missing/../../x/y") == f"{r}/x/y"
    # the last component: an entry unless followed
    assert rootfs.resolve(r, "a/last") == f"{r}/a/last"
    assert rootfs.resolve(r, "a/last", follow=True) == f"{r}/real/file"
    assert rootfs.resolve(r, "abs", follow=True) == f"{r}/real"
    with pytest.raises(errors.EnvironmentProblem) as e:
        rootfs.resolve(r, "loop1/x")
    assert "symbolic links" in e.value.message


def test_resolve_with_root_slash_follows_a_data_partition(tmp_path: Path) -> None:
    """With root ``/`` the rule is plain path resolution: a symlinked /var/lib/rancher (here
    a folder in tmp standing in for it) leads to the data partition."""
    data = tmp_path / "data" / "rancher"
    data.mkdir(parents=True)
    (tmp_path / "var/lib").mkdir(parents=True)
    os.symlink(str(data), tmp_path / "var/lib/rancher")
    rel = str(tmp_path / "var/lib/rancher/airgap/state.json")
    assert rootfs.resolve("/", rel) == str(data / "airgap/state.json")
    assert rootfs.resolve("/", rel) == os.path.realpath(rel)


def test_temp_files_never_follow_a_planted_symlink(tmp_path: Path) -> None:
    """``O_CREAT|O_EXCL|O_NOFOLLOW``: a symlink (or file) already at the temp name is neither
    written through nor renamed into place."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"host file")
    folder = tmp_path / "state"
    folder.mkdir()
    dest = folder / "state.json"
    os.symlink(str(outside), folder / f".tmp-state.json.{fsio._unique()}")
    fsio.write_verified(dest, [b"new state"], mode=0o600)
    assert outside.read_bytes() == b"host file"
    assert not dest.is_symlink() and dest.read_bytes() == b"new state"
    assert os.stat(dest).st_mode & 0o777 == 0o600
    assert os.listdir(folder) == ["state.json"]
    live_dir = tmp_path / "bin"
    live_dir.mkdir()
    os.symlink(str(outside), live_dir / ".airgap-tmp-k3s")
    src = tmp_path / "k3s"
    src.write_bytes(b"binary")
    digest, size = fsio.hash_file(src)
    place.put(str(src), str(live_dir / "k3s"), sha256=digest, size=size, mode=0o755)
    assert outside.read_bytes() == b"host file"
    assert (live_dir / "k3s").read_bytes() == b"binary" and os.listdir(live_dir) == ["k3s"]


# ---------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


def _install(root: Path, bundle: Path, *extra: object, **env: str):  # type: ignore[no-untyped-def]
    return cli("install", bundle, "--root", root, "--skip-start", *extra, env=env)


def _hostile_root(tmp_path: Path) -> Dict[str, Path]:
    """A root whose folders are symlinks that lead outside it on the host: absolute ones
    and ones climbing with ``..``; ``outside`` holds what they point at on the host."""
    outside = tmp_path / "outside"
    for d in ("rancher", "etc-rancher", "usr/local/bin", "images", "lock-dir"):
        (outside / d).mkdir(parents=True)
    (outside / "rancher/sentinel").write_bytes(b"host data")
    (outside / "usr/local/bin/k3s").write_bytes(b"the HOST's own k3s")
    (outside / "images/host.tar").write_bytes(b"host image")
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    os.symlink(str(outside / "rancher"), root / "var/lib/rancher")       # absolute
    os.symlink(str(outside / "etc-rancher"), root / "etc/rancher")       # absolute
    os.symlink("../outside/usr", root / "usr")                           # escapes with ..
    # inside the (in-root) data folder: an images folder climbing far up, an absolute lock
    inroot_rancher = root / str(outside / "rancher").lstrip("/")
    (inroot_rancher / "k3s/agent").mkdir(parents=True)
    (inroot_rancher / "airgap").mkdir()
    os.symlink("../../" * 12 + "outside/images", inroot_rancher / "k3s/agent/images")
    os.symlink(str(outside / "lock-dir/install.lock"), inroot_rancher / "airgap/install.lock")
    return {"root": root, "outside": outside, "rancher": inroot_rancher}


def test_threat32_symlinks_inside_root_never_lead_outside(tmp_path: Path,
                                                           keydir: KeyDir) -> None:
    t = _hostile_root(tmp_path)
    root, outside = t["root"], t["outside"]
    before = tree(outside)
    b1 = write_spec(default_spec("1.0.0"), keydir, tmp_path)
    b2 = write_spec(default_spec("1.1.0"), keydir, tmp_path)
    b3 = write_spec(default_spec("1.2.0"), keydir, tmp_path)
    steps = [
        ("trust", keydir.root_json, "--root", root),
        ("install", b1, "--root", root, "--server", "--skip-start"),
        ("install", b2, "--root", root, "--skip-start"),
        ("status", "--root", root),
        ("rollback", "--root", root, "--skip-start"),
        ("rollback", "--root", root, "--skip-start"),
        ("recover", "--root", root),
    ]
    for args in steps:
        r = cli(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert tree(outside) == before, f"{args[0]} changed the host outside the root"
    r = _install(root, b3, AIRGAP_TEST_SCRIPT_FAIL="1")  # placed, then undone
    assert r.returncode == 6, r.stderr
    assert tree(outside) == before
    # everything landed where a chroot at `root` puts it
    assert (t["rancher"] / "airgap/state.json").is_file()
    assert (root / str(outside / "etc-rancher").lstrip("/") / "airgap/root.json").is_file()
    assert (root / str(outside / "lock-dir/install.lock").lstrip("/")).is_file()
    assert (root / "outside/usr/local/bin/k3s").read_bytes().startswith(b"#!/bin/sh\necho k3s")
    spec11 = default_spec("1.1.0")
    assert sorted(os.listdir(root / "outside/images")) == sorted(
        [".cache.json"] + [live_image(n, spec11.images[n]).rsplit("/", 1)[1]
                           for n in ("app-1.1.0.tar", "k3s-airgap-images-amd64.tar.zst")])
    st = json.loads(cli("status", "--root", root, "--json").stdout)
    assert st["installed"]["version"] == "1.1.0"


def test_threat32_live_file_symlink_is_replaced_not_followed(tmp_path: Path,
                                                             keydir: KeyDir) -> None:
    """A symlink at a live path is the entry: backed up and replaced, its target untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "k3s").write_bytes(b"host binary")
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    os.symlink(str(outside / "k3s"), root / "usr/local/bin/k3s")
    before = tree(outside)
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    r = _install(root, write_spec(default_spec("1.0.0"), keydir, tmp_path), "--server")
    assert r.returncode == 0, r.stderr
    assert tree(outside) == before
    assert not (root / "usr/local/bin/k3s").is_symlink()


# ---------------------------------------------------------------------------- edited state


@pytest.fixture
def upgraded(tmp_path: Path, keydir: KeyDir) -> Dict[str, Any]:
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    assert _install(root, write_spec(default_spec("1.0.0"), keydir, tmp_path),
                    "--server").returncode == 0
    victim = tmp_path / "victim.tar"
    victim.write_bytes(b"must survive")
    return {"root": root, "victim": victim,
            "next": write_spec(default_spec("1.1.0"), keydir, tmp_path)}


def _edit_state(root: Path, edit: Callable[[Dict[str, Any]], None]) -> None:
    path = str(root / AIRGAP / "state.json")
    doc = state.read_dual(path).doc
    assert doc is not None
    edit(doc)
    state.write_dual(path, doc)  # a valid checksum: an edit, not a torn copy


def _first_image(doc: Dict[str, Any]) -> Dict[str, Any]:
    return [t for t in doc["current"]["targets"] if t["member"].startswith("images/")][0]


EDITS: Dict[str, Callable[[Dict[str, Any], Path, Path], None]] = {
    "target-dotdot": lambda d, root, v: _first_image(d).update(
        target=os.path.relpath(v, root)),
    "target-absolute": lambda d, root, v: _first_image(d).update(target=str(v)),
    "target-other-folder": lambda d, root, v: _first_image(d).update(
        target="etc/shadow"),
    "member-dotdot": lambda d, root, v: _first_image(d).update(member="images/../../x"),
    "digest-dotdot": lambda d, root, v: d["current"].update(digest="../../../tmp"),
    "script-target": lambda d, root, v: d["current"]["script"].update(target=str(v)),
    "ratchet-type": lambda d, root, v: d.update(time_ratchet="soon"),
    "size-type": lambda d, root, v: _first_image(d).update(size=True),
    "targets-type": lambda d, root, v: d["current"].update(targets={"a": 1}),
    "options-type": lambda d, root, v: d["current"]["options"].update(exec=7),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_threat34_edited_state_refused_never_acted_on(upgraded: Dict[str, Any],
                                                      case: str) -> None:
    root, victim = upgraded["root"], upgraded["victim"]
    _edit_state(root, lambda d: EDITS[case](d, root, victim))
    before_live, before_state = live(root), tree(root, only=(AIRGAP,))
    for args in (("install", upgraded["next"], "--root", root, "--skip-start"),
                 ("rollback", "--root", root), ("recover", "--root", root),
                 ("status", "--root", root), ("verify", upgraded["next"], "--root", root)):
        r = cli(*args)
        assert r.returncode == errors.FormatError.exit_code == 3, (args, r.stderr)
        assert "state.json is refused" in r.stderr or "understands" in r.stderr, r.stderr
        assert "hint:" in r.stderr and "install the bundle again" in r.stderr
        assert "Traceback" not in r.stderr
    assert victim.read_bytes() == b"must survive"
    assert live(root) == before_live
    assert {k: v for k, v in tree(root, only=(AIRGAP,)).items()
            if not k.endswith("install.lock")} == \
        {k: v for k, v in before_state.items() if not k.endswith("install.lock")}


def test_threat34_edited_journal_refused(upgraded: Dict[str, Any]) -> None:
    """A journal is read back as strictly: an undo record pointing outside is refused."""
    root, victim = upgraded["root"], upgraded["victim"]
    r = _install(root, upgraded["next"],
                 AIRGAP_INSTALL_FAILPOINT="after-journal:kill")
    assert r.returncode == -9
    path = str(root / AIRGAP / "journal.json")
    doc = state.read_dual(path).doc
    assert doc is not None
    doc["undo"][0] = {"target": str(victim), "kind": "absent"}
    state.write_dual(path, doc)
    r = cli("recover", "--root", root)
    assert r.returncode == 3 and "journal.json is refused" in r.stderr, r.stderr
    assert victim.read_bytes() == b"must survive"


def test_threat34_state_recovery_hint_works(upgraded: Dict[str, Any]) -> None:
    """The hint's way out (move the state away, install again) converges."""
    root = upgraded["root"]
    _edit_state(root, lambda d: _first_image(d).update(target="/etc/shadow"))
    for name in ("state.json", "state.json.bak"):
        (root / AIRGAP / name).rename(root / (name + ".saved"))
    r = _install(root, upgraded["next"], "--server")
    assert r.returncode == 0, r.stderr
    st = json.loads(cli("status", "--root", root, "--json").stdout)
    assert st["installed"]["version"] == "1.1.0"


# ---------------------------------------------------------------------------- the anchor


@pytest.fixture
def rotated(tmp_path: Path) -> Dict[str, Any]:
    """A host pinned at root v1 and a bundle signed under root v2 (targets key rotated)."""
    keys = KeyDir(tmp_path / "rotating")
    root = tmp_path / "root"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    v1 = keys.root_json.read_bytes()
    keys.rotate_targets()
    return {"root": root, "v1": v1, "v2": keys.root_json.read_bytes(),
            "bundle": write_spec(default_spec(), keys, tmp_path)}


def _anchor(root: Path) -> bytes:
    return (root / "etc/rancher/airgap/root.json").read_bytes()


def test_anchor_stays_when_install_sh_fails(rotated: Dict[str, Any]) -> None:
    root = rotated["root"]
    r = _install(root, rotated["bundle"], "--server", AIRGAP_TEST_SCRIPT_FAIL="1")
    assert r.returncode == 6 and "install.sh" in r.stderr
    assert _anchor(root) == rotated["v1"]
    assert os.listdir(root / AIRGAP / "releases") == []      # the promoted folder is gone
    assert json.loads(cli("status", "--root", root, "--json").stdout)["trust_root_version"] == 1
    r = _install(root, rotated["bundle"], "--server")
    assert r.returncode == 0, r.stderr
    assert _anchor(root) == rotated["v2"]


@pytest.mark.parametrize("point,anchor", [
    ("after-promote", "v1"), ("after-journal", "v1"), ("after-place-binary", "v1"),
    ("after-placed", "v2"), ("after-install-sh", "v2"), ("after-state", "v2"),
    ("after-anchor", "v2"),
])
def test_anchor_moves_only_with_the_commit_across_kill9(rotated: Dict[str, Any], point: str,
                                                         anchor: str) -> None:
    """Killed before the commit the anchor is the old one; a change recovery finishes (or
    found committed) pins the new one."""
    root = rotated["root"]
    r = _install(root, rotated["bundle"], "--server", AIRGAP_INSTALL_FAILPOINT=point + ":kill")
    assert r.returncode == -9, r.stderr
    if point != "after-anchor":
        assert _anchor(root) == rotated["v1"], "anchor moved before the state was committed"
    r = cli("recover", "--root", root)
    assert r.returncode == 0, r.stderr
    # txn.py line 188 (``>=`` -> ``>``): an anchor pinned already is not re-read as a chain
    assert "not advanced" not in r.stderr
    assert _anchor(root) == rotated[anchor]
    assert not (root / AIRGAP / "journal.json").exists()


def test_advanced_anchor_is_world_readable_0644(rotated: Dict[str, Any]) -> None:
    """txn.py line 169 (``mode=0o644`` -> ``0o645``): the advanced anchor is written 0644,
    like the one ``trust`` pins."""
    root = rotated["root"]
    assert _install(root, rotated["bundle"], "--server").returncode == 0
    assert _anchor(root) == rotated["v2"]
    assert stat.S_IMODE((root / "etc/rancher/airgap/root.json").stat().st_mode) == 0o644


def test_anchor_not_advanced_from_a_damaged_kept_root_and_recovery_converges(
        rotated: Dict[str, Any]) -> None:
    """Committed, killed before the anchor was written, and the kept root copy damaged:
    the anchor is never written from unverified bytes, and recovery still finishes."""
    root = rotated["root"]
    r = _install(root, rotated["bundle"], "--server", AIRGAP_INSTALL_FAILPOINT="after-state:kill")
    assert r.returncode == -9
    (kept,) = (root / AIRGAP / "releases").iterdir()
    (kept / "roots/2.root.json").write_bytes(b"{}")
    r = cli("recover", "--root", root)
    assert r.returncode == 0, r.stderr
    assert "trust anchor not advanced" in r.stderr
    assert _anchor(root) == rotated["v1"]
    assert not (root / AIRGAP / "journal.json").exists()
    st = json.loads(cli("status", "--root", root, "--json").stdout)
    assert st["installed"]["version"] == "1.0.0" and st["trust_root_version"] == 1
