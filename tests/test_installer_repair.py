"""Damage to placed files is found, repaired, and never rolled back onto: THREATS.md line 35.

The live files are hard links into ``releases/<digest>/`` on this test machine's ext4 (no
reflink), so a byte flipped inside a live file also damages its kept copy: exactly the case
issue #11 item 7 describes. ``status --verify`` must name both, ``install`` of the same bundle
must repair both from the verified bundle, and rollback must repair a damaged kept copy from a
verified identical one or refuse.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

from installer import fsio
from installer.host import place
from tests.bundles import KeyDir, cli, default_spec, live, live_image, write_spec

AIRGAP = "var/lib/rancher/airgap"
K3S = "usr/local/bin/k3s"
_SPEC1 = default_spec("1.0.0")
SHARED = live_image("k3s-airgap-images-amd64.tar.zst",
                    _SPEC1.images["k3s-airgap-images-amd64.tar.zst"])
APP1 = live_image("app-1.0.0.tar", _SPEC1.images["app-1.0.0.tar"])
APP11 = live_image("app-1.1.0.tar", default_spec("1.1.0").images["app-1.1.0.tar"])


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


def _install(root: Path, bundle: Path, *extra: object, **env: str):  # type: ignore[no-untyped-def]
    return cli("install", bundle, "--root", root, "--skip-start", *extra, env=env)


@pytest.fixture
def host(tmp_path: Path, keydir: KeyDir) -> Dict[str, Any]:
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    b1 = write_spec(default_spec("1.0.0"), keydir, tmp_path)
    assert _install(root, b1, "--server").returncode == 0
    return {"root": root, "b1": b1, "v1": live(root), "tmp": tmp_path}


def _flip(path: Path, offset: int = 5) -> None:
    """Damage a file in place (same inode), as a bad write or a stray editor would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def _status(root: Path) -> Any:
    r = cli("status", "--root", root, "--verify", "--json")
    return r.returncode, json.loads(r.stdout)


def _release_dir(root: Path) -> Path:
    digest = json.loads(cli("status", "--root", root, "--json").stdout)["installed"]["digest"]
    return root / AIRGAP / "releases" / digest


def test_threat35_status_verify_names_a_damaged_live_binary(host: Dict[str, Any]) -> None:
    root = host["root"]
    code, st = _status(root)
    assert code == 0 and st["verify"]["ok"] and st["verify"]["damaged"] == []
    assert st["verify"]["checked"] > 6
    _flip(root / K3S)
    code, st = _status(root)
    assert code == 3
    damaged = {(d["what"], d["path"]) for d in st["verify"]["damaged"]}
    kept = str(_release_dir(root) / "k3s/k3s")
    assert damaged == {("live", K3S), ("kept", kept)}  # a hard link: both are damaged
    assert all("sha256" in d["problem"] for d in st["verify"]["damaged"])
    text = cli("status", "--root", root, "--verify")
    assert text.returncode == 3 and f"DAMAGED live (1.0.0): {K3S}" in text.stdout
    assert "install the same bundle again" in text.stdout
    assert cli("status", "--root", root).returncode == 0  # without --verify: no hashing


def test_threat35_status_verify_missing_wrong_mode_and_replaced(host: Dict[str, Any]) -> None:
    root = host["root"]
    (root / "var/lib/rancher/k3s/server/manifests/demo.yaml").unlink()
    os.chmod(root / "var/lib/rancher/k3s/server/static/charts/demo-1.0.0.tgz", 0o600)
    replaced = root / APP1
    tmp = replaced.with_name(".x")
    tmp.write_bytes(b"not the image")
    os.replace(tmp, replaced)  # replaced, not written into: the kept copy is untouched
    code, st = _status(root)
    assert code == 3
    problems = {d["path"]: d["problem"] for d in st["verify"]["damaged"]}
    assert problems == {
        "var/lib/rancher/k3s/server/manifests/demo.yaml": "missing",
        # chmod on a hard link changes the kept copy's mode too, which is not checked
        "var/lib/rancher/k3s/server/static/charts/demo-1.0.0.tgz": "mode 0600, expected 0644",
        APP1: "size 13, expected {}".format(
            len(b"app images 1.0.0 " * 500)),
    }


def test_threat35_reinstall_repairs_live_and_kept_copies(host: Dict[str, Any]) -> None:
    root = host["root"]
    record = host["tmp"] / "record"
    _flip(root / K3S)
    (root / "var/lib/rancher/k3s/server/manifests/demo.yaml").unlink()
    r = _install(root, host["b1"], "--json", AIRGAP_TEST_RECORD=str(record))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["action"] == "repaired" and out["still_damaged"] == []
    assert K3S in out["repaired"] and "damaged live file" in r.stderr
    assert live(root) == host["v1"]
    code, st = _status(root)
    assert code == 0 and st["verify"]["ok"], st["verify"]
    assert record.read_text().count("--- edge 1.0.0") == 1  # install.sh ran again
    # and with nothing damaged, the same install is "nothing to do" without running install.sh
    r = _install(root, host["b1"], "--json", AIRGAP_TEST_RECORD=str(record))
    assert r.returncode == 0 and json.loads(r.stdout)["action"] == "none", r.stderr
    assert record.read_text().count("--- edge 1.0.0") == 1


def test_threat35_reinstall_repairs_only_a_kept_copy(host: Dict[str, Any]) -> None:
    """A kept copy damaged on its own (the live file is another inode) is replaced without
    touching the live tree or running install.sh."""
    root = host["root"]
    kept = _release_dir(root) / "charts/demo-1.0.0.tgz"
    live_chart = root / "var/lib/rancher/k3s/server/static/charts/demo-1.0.0.tgz"
    data = live_chart.read_bytes()
    live_chart.unlink()
    live_chart.write_bytes(data)  # a separate, correct live file
    os.chmod(live_chart, 0o644)
    _flip(kept)
    r = _install(root, host["b1"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["repaired"] == [str(kept)]
    assert fsio.hash_file(kept) == fsio.hash_file(live_chart)
    assert _status(root)[0] == 0


def test_threat35_rollback_refuses_a_damaged_kept_copy(host: Dict[str, Any],
                                                       keydir: KeyDir) -> None:
    root = host["root"]
    v1_dir = _release_dir(root)
    assert _install(root, write_spec(default_spec("1.1.0"), keydir, host["tmp"])).returncode == 0
    v2 = live(root)
    _flip(v1_dir / "images/app-1.0.0.tar")  # only 1.0.0 has it: nothing to mend it from
    code, st = _status(root)
    assert code == 3 and [d["path"] for d in st["verify"]["damaged"]] == [
        str(v1_dir / "images/app-1.0.0.tar")]
    r = cli("rollback", "--root", root, "--skip-start")
    assert r.returncode == 3 and "kept copy of images/app-1.0.0.tar" in r.stderr
    assert "roll forward" in r.stderr
    assert live(root) == v2


def test_threat35_rollback_mends_a_kept_copy_shared_with_the_live_file(
        host: Dict[str, Any], keydir: KeyDir) -> None:
    """The shared image archive did not change from 1.0.0 to 1.1.0, so the live file is still
    1.0.0's inode; a byte flipped in it damages the copy rollback needs. The 1.1.0 copy is
    verified and identical: rollback repairs from it and lands on exactly 1.0.0."""
    root = host["root"]
    assert _install(root, write_spec(default_spec("1.1.0"), keydir, host["tmp"])).returncode == 0
    _flip(root / SHARED)
    code, st = _status(root)
    assert code == 3 and {d["what"] for d in st["verify"]["damaged"]} == {"live", "kept"}
    r = cli("rollback", "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert "repaired the kept copy" in r.stderr
    assert live(root) == host["v1"]
    assert _status(root)[0] == 0


def test_threat35_reinstall_mends_the_previous_release_through_a_shared_file(
        host: Dict[str, Any], keydir: KeyDir) -> None:
    """The damaged live shared archive is the previous release's kept copy: re-installing the
    current bundle repairs the live file and that kept copy too, so rollback works again."""
    root = host["root"]
    b2 = write_spec(default_spec("1.1.0"), keydir, host["tmp"])
    assert _install(root, b2).returncode == 0
    v2 = live(root)
    _flip(root / SHARED)
    code, st = _status(root)
    assert code == 3 and {(d["what"], d["release"]) for d in st["verify"]["damaged"]} == {
        ("live", "1.1.0"), ("kept", "1.0.0")}
    r = _install(root, b2, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["action"] == "repaired"
    assert live(root) == v2
    assert _status(root)[0] == 0
    assert cli("rollback", "--root", root, "--skip-start").returncode == 0
    assert live(root) == host["v1"]


def test_put_falls_back_to_a_hard_link_without_reflink(tmp_path: Path) -> None:
    """On a filesystem without FICLONE (this machine's ext4) ``fsio.reflink`` says so and
    leaves nothing behind, and placement hard-links (no second copy of the bytes)."""
    src = tmp_path / "src"
    src.write_bytes(b"payload" * 1000)
    assert fsio.reflink(str(src), str(tmp_path / ".tmp"), mode=0o644) is False
    assert not (tmp_path / ".tmp").exists()
    dest = tmp_path / "live" / "file"
    digest, size = fsio.hash_file(src)
    place.put(str(src), str(dest), sha256=digest, size=size, mode=0o644)
    assert os.stat(dest).st_ino == os.stat(src).st_ino
    assert os.listdir(dest.parent) == ["file"]


@pytest.fixture
def xfs_reflink(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A small loop-mounted XFS with reflink=1 (needs root, a loop device and xfsprogs)."""
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("mkfs.xfs not installed (.ci/setup installs xfsprogs)")
    img, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(400 << 20)
    made = subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)],
                          capture_output=True, text=True)
    mounted = made.returncode == 0 and subprocess.run(
        ["mount", "-o", "loop", str(img), str(mnt)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot make and loop-mount an XFS here: " + made.stderr.strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_threat35_reflinked_kept_copy_survives_in_place_damage(xfs_reflink: Path,
                                                                keydir: KeyDir) -> None:
    """On a reflink filesystem the live files are clones, not links: no second copy of the
    bytes, yet a byte flipped in the live k3s leaves the kept copy intact, so only the live
    file is reported and the repair needs nothing but the kept copy's bytes."""
    root = xfs_reflink / "root"
    spec = default_spec("1.0.0")
    spec.images["bulk.tar"] = os.urandom(48 << 20)
    bundle = write_spec(spec, keydir, xfs_reflink.parent)
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    st = os.statvfs(str(xfs_reflink))
    free_before = st.f_bavail * st.f_frsize
    assert _install(root, bundle, "--server").returncode == 0
    st = os.statvfs(str(xfs_reflink))
    used = free_before - st.f_bavail * st.f_frsize
    assert used < 64 << 20, f"{used} bytes used for a 48 MiB payload: a second copy was made"
    kept = _release_dir(root)
    live_bulk = root / live_image("bulk.tar", spec.images["bulk.tar"])
    assert os.stat(live_bulk).st_ino != os.stat(kept / "images/bulk.tar").st_ino
    assert os.stat(live_bulk).st_nlink == 1
    v1 = live(root)
    _flip(root / K3S)
    _flip(live_bulk, offset=1 << 20)
    code, status = _status(root)
    assert code == 3
    assert sorted((d["what"], d["path"]) for d in status["verify"]["damaged"]) == [
        ("live", "usr/local/bin/k3s"), ("live", live_image("bulk.tar", spec.images["bulk.tar"]))]
    r = _install(root, bundle, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["action"] == "repaired", r.stderr
    assert live(root) == v1 and _status(root)[0] == 0


# ---------------------------------------------------------------------------- placement


def test_foreign_file_backed_up_and_restored_when_install_sh_fails(
        host: Dict[str, Any], keydir: KeyDir) -> None:
    """A file the installer never placed sits where the new release puts a file; install.sh
    then fails: the foreign file is back byte for byte, and the old install.sh ran again."""
    root = host["root"]
    foreign = root / APP11
    foreign.write_bytes(b"operator's own archive")
    record = host["tmp"] / "record"
    r = _install(root, write_spec(default_spec("1.1.0"), keydir, host["tmp"]),
                 AIRGAP_TEST_SCRIPT_FAIL="1", AIRGAP_TEST_RECORD=str(record))
    assert r.returncode == 6, r.stderr
    assert foreign.read_bytes() == b"operator's own archive"
    runs = [line for line in record.read_text().splitlines() if line.startswith("---")]
    assert runs == ["--- edge 1.1.0", "--- edge 1.0.0"]
    assert {k: v for k, v in live(root).items() if k != str(foreign.relative_to(root))} == \
        host["v1"]


def test_live_file_of_wrong_size_or_mode_is_placed_again(host: Dict[str, Any],
                                                         keydir: KeyDir) -> None:
    """An unchanged archive is left alone only if it still is the old release's file or has
    the right size, mode and sha256; a separate copy with another mode or size is replaced."""
    root = host["root"]
    shared = root / SHARED
    data = shared.read_bytes()
    shared.unlink()
    shared.write_bytes(data)
    os.chmod(shared, 0o600)                    # right bytes, wrong mode, another inode
    demo = root / "var/lib/rancher/k3s/server/manifests/demo.yaml"
    demo.unlink()
    demo.write_bytes(b"short")                 # wrong size (demo.yaml differs in 1.1.0)
    ref = host["tmp"] / "ref"
    assert cli("trust", keydir.root_json, "--root", ref).returncode == 0
    b2 = write_spec(default_spec("1.1.0"), keydir, host["tmp"])
    assert _install(ref, host["b1"], "--server").returncode == 0
    assert _install(ref, b2).returncode == 0
    assert _install(root, b2).returncode == 0
    assert live(root) == live(ref)
    assert os.stat(shared).st_mode & 0o777 == 0o644
