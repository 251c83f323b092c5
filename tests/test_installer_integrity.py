"""Bundle integrity through the real CLI: THREATS.md lines 1-7.

Every rejected case checks the exit code, that the message names the problem, and that the
whole tree under the install root is unchanged (``bundles.tree``: every path, type, mode and
content hash).
"""

import json
import os
import random
import shutil
import signal
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from installer.format.bundlefmt import Member
from tests.bundles import (
    KeyDir,
    cli,
    craft,
    default_spec,
    live,
    live_image,
    popen,
    tree,
    wait_stopped,
    write_sparse_bundle,
    write_spec,
)


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


def _host(root: Path, keydir: KeyDir, first: Path) -> Path:
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    r = cli("install", first, "--root", root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture
def installed(tmp_path: Path, keydir: KeyDir) -> Path:
    """A host with edge 1.0.0 installed: a rejected newer bundle must change nothing."""
    return _host(tmp_path / "root", keydir, write_spec(default_spec("1.0.0"), keydir, tmp_path))


def _rejected(root: Path, bundle: Path, code: int, *needles: str) -> str:
    before = tree(root)
    r = cli("install", bundle, "--root", root, "--skip-start")
    assert r.returncode == code, (r.returncode, r.stderr)
    for needle in needles:
        assert needle in r.stderr, r.stderr
    assert tree(root) == before, "the install root changed"
    return r.stderr


def test_threat01_single_byte_flips_all_rejected(tmp_path: Path, keydir: KeyDir) -> None:
    """THREATS 1: 200 seeded single-byte flips anywhere (tar headers, manifest, signatures,
    roots, member data, padding, trailer): 100% rejected, the root tree unchanged."""
    good = write_spec(default_spec("2.0.0"), keydir, tmp_path)
    data = good.read_bytes()
    roots = [_host(tmp_path / f"root{i}", keydir,
                   write_spec(default_spec("1.0.0"), keydir, tmp_path)) for i in range(2)]
    rng = random.Random(20261127)
    offsets = sorted(rng.sample(range(len(data)), 200))
    trees = [tree(r) for r in roots]

    def one(job: int) -> List[str]:
        root = roots[job % 2]
        failures = []
        for offset in offsets[job::2]:
            bad = bytearray(data)
            bad[offset] ^= rng_for(offset)
            path = tmp_path / f"flip-{offset}.tar"
            path.write_bytes(bytes(bad))
            r = cli("install", path, "--root", root, "--skip-start")
            if r.returncode not in (3,) or tree(root) != trees[job % 2]:
                failures.append(f"offset {offset}: exit {r.returncode} {r.stderr[-300:]}")
            path.unlink()
        return failures

    with ThreadPoolExecutor(2) as pool:
        failures = sum(pool.map(one, range(2)), [])
    assert failures == []
    # and the unflipped bundle still installs: the rejections were about the flips
    assert cli("install", good, "--root", roots[0], "--skip-start").returncode == 0


def rng_for(offset: int) -> int:
    return random.Random(offset).randrange(1, 256)


@pytest.mark.parametrize("cut", [100, 1024, 2048 + 7, -20000, -10241, -1])
def test_threat02_truncated_bundle(tmp_path: Path, keydir: KeyDir, installed: Path,
                                   cut: int) -> None:
    """THREATS 2: a bundle cut short anywhere (USB pulled mid-copy) is rejected."""
    data = write_spec(default_spec("2.0.0"), keydir, tmp_path).read_bytes()
    short = tmp_path / "short.tar"
    short.write_bytes(data[:cut])
    _rejected(installed, short, 3)


def test_threat02_interrupted_staging_is_abandoned(tmp_path: Path, keydir: KeyDir,
                                                   installed: Path) -> None:
    """THREATS 2: an install killed while copying from the medium leaves the old release;
    the next run removes the partial staging copy and can install again."""
    old = live(installed)
    bundle = write_spec(default_spec("2.0.0"), keydir, tmp_path)
    r = cli("install", bundle, "--root", installed, "--skip-start",
            env={"AIRGAP_INSTALL_FAILPOINT": "after-stage-member"})
    assert r.returncode == -signal.SIGKILL
    assert live(installed) == old
    assert os.listdir(installed / "var/lib/rancher/airgap/staging")
    r = cli("install", bundle, "--root", installed, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert os.listdir(installed / "var/lib/rancher/airgap/staging") == []


def _drop(path: str) -> Callable[[List[Member]], List[Member]]:
    return lambda ms: [m for m in ms if m.path != path]


CASES_3 = {
    # THREATS 3: not listed / listed twice / missing
    "member-not-listed": dict(listed=_drop("manifests/demo.yaml")),
    "member-listed-twice": dict(listed=lambda ms: ms + [ms[-1]]),
    "member-missing": dict(payload=lambda es: [e for e in es
                                               if e[0].name != "manifests/demo.yaml"]),
    "members-reordered": dict(payload=lambda es: list(reversed(es))),
}


@pytest.mark.parametrize("case", sorted(CASES_3))
def test_threat03_listing_mismatch(tmp_path: Path, keydir: KeyDir, installed: Path,
                                   case: str) -> None:
    bundle = craft(default_spec("2.0.0"), keydir, tmp_path / "b.tar", **CASES_3[case])
    _rejected(installed, bundle, 3)


def _replace_member(member: str, **attrs: object) -> Callable[[list], list]:
    def edit(entries: list) -> list:
        out = []
        for info, data in entries:
            if info.name == member:
                for k, v in attrs.items():
                    setattr(info, k, v)
                if not info.isreg():
                    info.size = 0
            out.append((info, data))
        return out
    return edit


_LAST = "manifests/demo.yaml"  # a later member: the envelope check (bytes) refuses it
_FIRST = "k3s/k3s"              # the first payload member: the reader itself refuses it
CASES_4 = {
    # case: (tar edit, text the refusal must contain)
    "dotdot": (_replace_member(_LAST, name="manifests/../../x"),
               "found file 'manifests/../../x'"),
    "absolute": (_replace_member(_LAST, name="/etc/passwd"), "found file '/etc/passwd'"),
    "symlink": (_replace_member(_LAST, type=tarfile.SYMTYPE, linkname="/etc/shadow"),
                "found symlink"),
    "hardlink": (_replace_member(_LAST, type=tarfile.LNKTYPE, linkname="k3s/k3s"),
                 "found hardlink"),
    "chardev": (_replace_member(_LAST, type=tarfile.CHRTYPE, devmajor=1, devminor=3),
                "found character device"),
    "blockdev": (_replace_member(_LAST, type=tarfile.BLKTYPE, devmajor=8, devminor=0),
                 "found block device"),
    "fifo": (_replace_member(_LAST, type=tarfile.FIFOTYPE), "found FIFO"),
    "directory": (_replace_member(_LAST, type=tarfile.DIRTYPE), "found folder"),
    "setuid": (_replace_member(_FIRST, mode=0o4755), "setuid/setgid/sticky bits (mode 4755)"),
    "setgid": (_replace_member(_FIRST, mode=0o2755), "setuid/setgid/sticky bits (mode 2755)"),
    "first-is-symlink": (_replace_member(_FIRST, type=tarfile.SYMTYPE, linkname="/bin/sh"),
                         "'k3s/k3s' is not a regular file (symlink)"),
    "first-is-fifo": (_replace_member(_FIRST, type=tarfile.FIFOTYPE),
                      "'k3s/k3s' is not a regular file (FIFO)"),
}


@pytest.mark.parametrize("case", sorted(CASES_4))
def test_threat04_unsafe_tar_member_in_signed_bundle(tmp_path: Path, keydir: KeyDir,
                                                     installed: Path, case: str) -> None:
    """THREATS 4: the manifest is validly signed; the tar member is unsafe -> rejected, by
    the check named in the table (the reader for the first member, the envelope otherwise)."""
    edit, needle = CASES_4[case]
    bundle = craft(default_spec("2.0.0"), keydir, tmp_path / "b.tar", payload=edit)
    _rejected(installed, bundle, 3, needle)


@pytest.mark.parametrize("paths", [
    ("manifests/Demo.yaml", "manifests/demo.yaml"),   # case collision (FAT USB stick)
    ("manifests/../k3s", None),                        # ".." in a signed manifest
    ("manifests/.hidden.yaml", None),                  # dotfile K3s would ignore
])
def test_threat04_unsafe_names_in_signed_manifest(tmp_path: Path, keydir: KeyDir,
                                                  installed: Path, paths: tuple) -> None:
    spec = default_spec("2.0.0")
    spec.manifests = {p.split("/", 1)[1]: b"kind: x\n" for p in paths if p}
    bundle = craft(spec, keydir, tmp_path / "b.tar")
    _rejected(installed, bundle, 3)


def test_threat05_size_disagrees_and_endless_data(tmp_path: Path, keydir: KeyDir,
                                                  installed: Path) -> None:
    """THREATS 5: the tar says more (endless) or fewer bytes than the signed manifest."""
    longer = craft(default_spec("2.0.0"), keydir, tmp_path / "long.tar", payload=lambda es: [
        (i, _b(d) + b"x" * (10 << 20)) if i.name == "images/app-2.0.0.tar" else (i, d)
        for i, d in [(_resize(i, _b(d), 10 << 20), d) for i, d in es]])
    _rejected(installed, longer, 3)
    shorter = craft(default_spec("2.0.0"), keydir, tmp_path / "short.tar", payload=lambda es: [
        (_resize(i, _b(d), -100), _b(d)[:-100]) if i.name == "images/app-2.0.0.tar" else (i, d)
        for i, d in es])
    _rejected(installed, shorter, 3)
    spec = default_spec("2.0.0")
    same_size_other_bytes = craft(spec, keydir, tmp_path / "other.tar", payload=lambda es: [
        (i, bytes(len(_b(d)))) if i.name == "images/app-2.0.0.tar" else (i, d) for i, d in es])
    _rejected(installed, same_size_other_bytes, 3, "images/app-2.0.0.tar", "sha256")


def _b(data: Optional[bytes]) -> bytes:
    assert data is not None
    return data


def _resize(info: tarfile.TarInfo, data: bytes, delta: int) -> tarfile.TarInfo:
    if info.name == "images/app-2.0.0.tar":
        info.size = len(data) + delta
    return info


def test_threat07_usb_file_swapped_after_hashing(tmp_path: Path, keydir: KeyDir,
                                                 installed: Path) -> None:
    """THREATS 7: the bundle on the medium is rewritten after it was verified (the installer
    is frozen at the fail point between staging and placement): the installed bytes are the
    verified ones, because only the local staged copy is used."""
    spec = default_spec("2.0.0")
    bundle = write_spec(spec, keydir, tmp_path)
    original = bundle.read_bytes()
    proc = popen("install", bundle, "--root", installed, "--skip-start",
                 env={"AIRGAP_INSTALL_FAILPOINT": "after-staging:stop"})
    try:
        wait_stopped(proc)
        evil = original.replace(b"app images 2.0.0 ", b"EVIL images 2.00 ")
        assert evil != original and len(evil) == len(original)
        bundle.write_bytes(evil)          # in place, same size: the "USB" now lies
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    placed = (installed / live_image("app-2.0.0.tar", spec.images["app-2.0.0.tar"])
              ).read_bytes()
    assert placed == spec.images["app-2.0.0.tar"]
    assert b"EVIL" not in placed


@pytest.mark.slow
def test_threat06_member_over_4gib(tmp_path: Path, keydir: KeyDir) -> None:
    """THREATS 6: a 4 GiB + 1 byte image archive (a hole in a sparse bundle file): sizes and
    hashes are 64-bit correct end to end, the placed file has exactly that size, and a byte
    flipped past the 4 GiB boundary is caught."""
    big = (4 << 30) + 1
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") else tmp_path
    st = os.statvfs(str(base))
    if st.f_bavail * st.f_frsize < big + (1 << 30):
        pytest.skip(f"needs 5 GiB free under {base}")
    root = Path(tempfile.mkdtemp(prefix="airgap-4g-", dir=str(base)))
    try:
        assert cli("trust", keydir.root_json, "--root", root).returncode == 0
        bundle = write_sparse_bundle(default_spec("2.0.0"), keydir, tmp_path / "big.tar",
                                     big_name="big.tar", big_size=big)
        assert bundle.stat().st_size > big
        r = cli("install", bundle, "--root", root, "--server", "--skip-start", timeout=300)
        assert r.returncode == 0, r.stderr
        placed = next((root / live_image("big.tar", b"")).parent.glob("big-*.tar"))
        assert placed.stat().st_size == big
        state = json.loads(cli("status", "--root", root, "--json").stdout)
        assert state["installed"]["version"] == "2.0.0"
        shutil.rmtree(str(root / "var/lib/rancher"))
        with open(bundle, "r+b") as f:  # 1 MiB before the end of the big member's data
            f.seek(bundle.stat().st_size - tarfile.RECORDSIZE - (1 << 20))
            f.write(b"\x01")
        r = cli("verify", bundle, "--root", root, timeout=300)
        assert r.returncode == 3 and "big.tar" in r.stderr, r.stderr
    finally:
        shutil.rmtree(str(root), ignore_errors=True)


def test_verify_changes_nothing(tmp_path: Path, keydir: KeyDir, installed: Path) -> None:
    before = tree(installed)
    r = cli("verify", write_spec(default_spec("2.0.0"), keydir, tmp_path), "--root", installed,
            "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["members"] == 6 and doc["version"] == "2.0.0"
    assert tree(installed) == before


def test_unknown_signer_rejected(tmp_path: Path, installed: Path) -> None:
    """A bundle signed by someone else's key directory is rejected (THREATS 8, end to end)."""
    other = KeyDir(tmp_path / "other")
    _rejected(installed, write_spec(default_spec("2.0.0"), other, tmp_path), 3)
