"""``installer/host/rootfs.py``: the install root resolved as a chroot would (THREATS 32).

A component that does not exist yet is kept literally, but a ``..`` after it removes it and
resolution must go back to checking every later component with ``lstat``: otherwise a
symlink after the ``..`` is appended unchecked and the kernel follows it out of the root."""

import os
from pathlib import Path

import pytest

from installer import errors
from installer.host import rootfs
from tests.bundles import KeyDir, cli, default_spec, tree, write_spec


def test_dotdot_after_a_missing_component_checks_later_components(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "esc")  # absolute: means ROOT/<outside>
    os.symlink("nonexist/../esc", root / "usr")
    r = str(root)
    inroot = r + str(outside)
    assert rootfs.resolve(r, "nonexist/../esc/x") == inroot + "/x"
    assert rootfs.resolve(r, "usr/local/bin/k3s") == inroot + "/local/bin/k3s"
    assert rootfs.resolve(r, "a/b/../../esc/y") == inroot + "/y"
    # a missing component still shadows what follows while it is there
    assert rootfs.resolve(r, "nope/esc/z") == r + "/nope/esc/z"
    # `..` out of a real folder under a missing one keeps the missing flag
    assert rootfs.resolve(r, "nope/deeper/../esc") == r + "/nope/esc"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


def test_install_through_a_dotdot_after_a_missing_component_stays_in_root(
        tmp_path: Path, keydir: KeyDir) -> None:
    """ROOT/usr -> "nonexist/../esc", ROOT/esc -> OUTSIDE (absolute, as on a device image):
    install, status and rollback never touch OUTSIDE (it stands in for the host's /usr)."""
    outside = tmp_path / "outside"
    (outside / "local/bin").mkdir(parents=True)
    (outside / "local/bin/k3s").write_bytes(b"the HOST's own k3s")
    os.chmod(outside / "local/bin/k3s", 0o700)
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(outside), root / "esc")
    os.symlink("nonexist/../esc", root / "usr")
    before = tree(outside)
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    for version in ("1.0.0", "1.1.0"):
        r = cli("install", write_spec(default_spec(version), keydir, tmp_path), "--root", root,
                "--server", "--skip-start")
        assert r.returncode == 0, r.stderr
        assert tree(outside) == before
    assert cli("rollback", "--root", root, "--skip-start").returncode == 0
    assert tree(outside) == before
    placed = root / str(outside).lstrip("/") / "local/bin/k3s"
    assert placed.read_bytes().startswith(b"#!/bin/sh\necho k3s")


def test_symlink_chain_limit_is_forty_as_linux(tmp_path: Path) -> None:
    """40 links in a row resolve (Linux's ELOOP limit), the 41st is a loop error."""
    root = tmp_path / "r"
    (root / "real").mkdir(parents=True)
    for n in range(1, 42):
        os.symlink("real" if n == 1 else f"l{n - 1}", root / f"l{n}")
    r = str(root)
    assert rootfs.resolve(r, "l40/x") == f"{r}/real/x"
    assert rootfs.resolve(r, "l40", follow=True) == f"{r}/real"
    with pytest.raises(errors.EnvironmentProblem, match="too many levels"):
        rootfs.resolve(r, "l41/x")


def test_open_nofollow(tmp_path: Path) -> None:
    path = tmp_path / "new"
    fd = rootfs.open_nofollow(str(path), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    assert os.stat(path).st_mode & 0o777 == 0o600
    os.symlink(str(path), tmp_path / "link")
    with pytest.raises(errors.EnvironmentProblem, match="became a symbolic link"):
        rootfs.open_nofollow(str(tmp_path / "link"), os.O_RDONLY)
    with pytest.raises(FileNotFoundError):
        rootfs.open_nofollow(str(tmp_path / "none" / "x"), os.O_RDONLY)
