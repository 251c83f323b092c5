"""Crash, power and disk faults through the real CLI: THREATS.md lines 21-24.

kill -9 is real: the installer SIGKILLs itself at a named fail point
(``AIRGAP_INSTALL_FAILPOINT=<name>``) or the test SIGKILLs it after a random delay. Afterwards
the next run must leave exactly the old release or exactly the new one (``bundles.live``:
every live file's path, mode and sha256), and re-running the install converges on the new one.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest

from tests.bundles import (
    KeyDir,
    cli,
    default_spec,
    live,
    popen,
    tree,
    wait_stopped,
    write_spec,
)

MiB = 1 << 20


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """Keys, a 1.0.0 and a 2.0.0 bundle (a few MiB, so kills land inside the work), a
    template root with 1.0.0 installed, and the expected live trees of both releases."""
    base = tmp_path_factory.mktemp("crash")
    keys = KeyDir(base / "keys")
    specs = {}
    for v in ("1.0.0", "2.0.0"):
        spec = default_spec(v)
        spec.images[f"bulk-{v}.tar"] = os.urandom(3 * MiB)
        specs[v] = spec
    b1 = write_spec(specs["1.0.0"], keys, base)
    b2 = write_spec(specs["2.0.0"], keys, base)
    template = base / "template"
    assert cli("trust", keys.root_json, "--root", template).returncode == 0
    assert cli("install", b1, "--root", template, "--server", "--skip-start").returncode == 0
    old = live(template)
    ref = base / "ref"
    shutil.copytree(str(template), str(ref), symlinks=True)
    assert cli("install", b2, "--root", ref, "--skip-start").returncode == 0
    new = live(ref)
    assert old != new
    return {"keys": keys, "b1": b1, "b2": b2, "template": template, "old": old, "new": new,
            "base": base}


def _fresh(world: Dict[str, object], tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(str(world["template"]), str(root), symlinks=True)
    return root


def _version(root: Path) -> str:
    st = json.loads(cli("status", "--root", root, "--json").stdout)
    return st["installed"]["version"]


def _consistent(world: Dict[str, object], root: Path) -> str:
    """The live tree is exactly one release and the state names that same release."""
    now = live(root)
    version = _version(root)
    if now == world["old"]:
        assert version == "1.0.0", f"files are 1.0.0, state says {version}"
        return "old"
    assert now == world["new"], _diff(now, world)
    assert version == "2.0.0", f"files are 2.0.0, state says {version}"
    return "new"


def _diff(now: Dict[str, Tuple[str, str, int]], world: Dict[str, object]) -> str:
    return "a mix: {}".format(sorted(
        k for k in set(now) | set(world["old"]) | set(world["new"])  # type: ignore
        if now.get(k) not in (world["old"].get(k), world["new"].get(k))))  # type: ignore


def _clean(root: Path) -> None:
    airgap = root / "var/lib/rancher/airgap"
    assert not (airgap / "journal.json").exists()
    assert os.listdir(airgap / "staging") == [] and os.listdir(airgap / "txn") == []
    assert not [n for d in ("usr/local/bin", "var/lib/rancher/k3s/agent/images")
                for n in os.listdir(root / d) if n.startswith(".") and n != ".cache.json"]
    assert len(os.listdir(airgap / "releases")) <= 2


INSTALL_POINTS = [
    "after-lock", "after-header", "after-preflight", "after-stage-member", "after-staging",
    "after-promote", "after-backups", "after-journal.json-primary", "after-journal",
    "after-place-images", "after-place-charts", "after-place-manifests", "after-place-binary",
    "after-remove-old", "after-placed", "after-install-sh", "after-state.json-primary",
    "after-state", "after-remove-replaced-images", "after-commit",
]


@pytest.mark.parametrize("point", INSTALL_POINTS)
def test_threat21_kill9_at_named_point_then_recover_and_converge(
        world: Dict[str, object], tmp_path: Path, point: str) -> None:
    """THREATS 21: kill -9 at each step of an install; the next run leaves old or new, never
    a mix; re-running the install converges on the new release."""
    root = _fresh(world, tmp_path)
    r = cli("install", world["b2"], "--root", root, "--skip-start",
            env={"AIRGAP_INSTALL_FAILPOINT": point})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    rec = cli("recover", "--root", root)
    assert rec.returncode == 0, rec.stderr
    _consistent(world, root)
    _clean(root)
    again = cli("install", world["b2"], "--root", root, "--skip-start")
    assert again.returncode == 0, again.stderr
    assert _consistent(world, root) == "new"
    _clean(root)


def test_threat21_kill9_install_sh_rerun_when_finishing(world: Dict[str, object],
                                                        tmp_path: Path) -> None:
    """Killed after the files were placed: recovery finishes forward and runs install.sh of
    the new release (the service may already run the new binary)."""
    root = _fresh(world, tmp_path)
    record = tmp_path / "record"
    env = {"AIRGAP_TEST_RECORD": str(record)}
    r = cli("install", world["b2"], "--root", root, "--skip-start",
            env=dict(env, AIRGAP_INSTALL_FAILPOINT="after-placed"))
    assert r.returncode == -signal.SIGKILL
    assert cli("recover", "--root", root, env=env).returncode == 0
    assert _consistent(world, root) == "new"
    assert "--- edge 2.0.0" in record.read_text()


def _trace(path: Path) -> list:
    """``[(point, monotonic seconds), ...]`` the installer reached (failpoint trace)."""
    if not path.exists():
        return []
    return [(n, float(t)) for n, t in (line.split() for line in path.read_text().splitlines())]


def test_threat21_kill9_at_random_moments(world: Dict[str, object], tmp_path: Path) -> None:
    """THREATS 21: SIGKILL after seeded random delays inside an install's critical window
    (after the lock was taken, before the state was committed). The failpoint trace proves
    where each kill landed: every one of the 8 counted kills is mid-install, and they spread
    over several steps."""
    rng = random.Random(21)
    probe = _fresh(world, tmp_path / "probe")
    probe_trace = tmp_path / "probe.trace"
    start = time.monotonic()
    assert cli("install", world["b2"], "--root", probe, "--skip-start",
               env={"AIRGAP_INSTALL_FAILPOINT_TRACE": str(probe_trace)}).returncode == 0
    points = dict(_trace(probe_trace))
    window = (points["after-lock"] - start, points["after-commit"] - start)
    assert window[1] > window[0] > 0
    landed: list[tuple[str, str]] = []
    for i in range(80):  # bounded: a kill that misses the window is retried, not counted
        if len(landed) == 8:
            break
        root = _fresh(world, tmp_path / str(i))
        trace = tmp_path / f"{i}.trace"
        proc = popen("install", world["b2"], "--root", root, "--skip-start",
                     env={"AIRGAP_INSTALL_FAILPOINT_TRACE": str(trace)})
        time.sleep(rng.uniform(*window))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        reached = [n for n, _ in _trace(trace)]
        assert cli("recover", "--root", root).returncode == 0
        outcome = _consistent(world, root)
        if proc.returncode == -signal.SIGKILL and "after-lock" in reached \
                and "after-commit" not in reached:
            landed.append((reached[-1], outcome))
        assert cli("install", world["b2"], "--root", root, "--skip-start").returncode == 0
        assert _consistent(world, root) == "new"
    assert len(landed) == 8, f"only {len(landed)} kills landed mid-install: {landed}"
    assert len({point for point, _ in landed}) >= 3, landed


@pytest.mark.parametrize("point", ["after-journal", "after-place-images", "after-place-binary",
                                   "after-remove-old", "after-placed",
                                   "after-state.json-primary"])
def test_threat21_kill9_during_rollback(world: Dict[str, object], tmp_path: Path,
                                        point: str) -> None:
    root = _fresh(world, tmp_path)
    assert cli("install", world["b2"], "--root", root, "--skip-start").returncode == 0
    r = cli("rollback", "--root", root, "--skip-start", env={"AIRGAP_INSTALL_FAILPOINT": point})
    assert r.returncode == -signal.SIGKILL
    assert cli("recover", "--root", root).returncode == 0
    _consistent(world, root)
    _clean(root)


@pytest.mark.parametrize("torn", ["state.json", "state.json.bak"])
def test_threat22_torn_state_copy_recovered(world: Dict[str, object], tmp_path: Path,
                                            torn: str) -> None:
    """THREATS 22: one copy of the state torn (cut in half, or one byte changed) -> the
    other is used, status says so, the next changing run rewrites both."""
    root = _fresh(world, tmp_path)
    assert cli("install", world["b2"], "--root", root, "--skip-start").returncode == 0
    path = root / "var/lib/rancher/airgap" / torn
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    st = json.loads(cli("status", "--root", root, "--json").stdout)
    assert st["installed"]["version"] == "2.0.0" and st["previous"]["version"] == "1.0.0"
    assert st["state_copies_damaged"] == [str(path)]
    assert cli("recover", "--root", root).returncode == 0
    other = root / "var/lib/rancher/airgap" / ("state.json" if torn.endswith("bak")
                                               else "state.json.bak")
    assert path.read_bytes() == other.read_bytes()
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 3] ^= 0x04  # a bit flip inside, still valid JSON maybe
    path.write_bytes(bytes(flipped))
    assert _version(root) == "2.0.0"
    assert cli("rollback", "--root", root, "--skip-start").returncode == 0
    assert _consistent(world, root) == "old"


def test_threat22_both_copies_torn_is_a_clear_error(world: Dict[str, object],
                                                    tmp_path: Path) -> None:
    root = _fresh(world, tmp_path)
    for name in ("state.json", "state.json.bak"):
        (root / "var/lib/rancher/airgap" / name).write_bytes(b"{\"doc\":")
    r = cli("install", world["b2"], "--root", root, "--skip-start")
    assert r.returncode == 6 and "both copies" in r.stderr
    assert live(root) == world["old"]


@pytest.fixture
def small_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): needs root and CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> Path:
    st = os.statvfs(str(mnt))
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    fd = os.open(str(filler), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(free - leave, 1))
    finally:
        os.close(fd)
    return filler


def test_threat23_disk_full_mid_install_on_tmpfs(world: Dict[str, object],
                                                 small_tmpfs: Path) -> None:
    """THREATS 23: the root is a small tmpfs that fills up while staging (filled by the test
    while the installer is frozen right after its free-space check): clean abort, exit 6,
    old release intact, staging removed; after freeing space the install succeeds."""
    root = small_tmpfs / "root"
    shutil.copytree(str(world["template"]), str(root), symlinks=True)
    before = tree(root)
    proc = popen("install", world["b2"], "--root", root, "--skip-start",
                 env={"AIRGAP_INSTALL_FAILPOINT": "after-preflight:stop"})
    try:
        wait_stopped(proc)
        filler = _fill(small_tmpfs, 1 * MiB)   # the 2.0.0 payload needs ~3 MiB
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 6, err
    assert "no space left" in err
    assert tree(root) == before
    filler.unlink()
    r = cli("install", world["b2"], "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert live(root) == world["new"]


def test_threat23_not_enough_space_refused_before_writing(world: Dict[str, object],
                                                          small_tmpfs: Path) -> None:
    root = small_tmpfs / "root"
    shutil.copytree(str(world["template"]), str(root), symlinks=True)
    _fill(small_tmpfs, 40 * MiB)  # under the 64 MiB margin + payload
    before = tree(root)
    r = cli("install", world["b2"], "--root", root, "--skip-start")
    assert r.returncode == 6 and "not enough free space" in r.stderr
    assert str(small_tmpfs) in r.stderr
    assert tree(root) == before


def test_threat24_second_run_fails_clearly_or_waits(world: Dict[str, object],
                                                    tmp_path: Path) -> None:
    """THREATS 24: while one install holds the lock a second fails with exit 6 naming the
    lock; with --wait it queues, then finds the work done (nothing to do, exit 0)."""
    root = _fresh(world, tmp_path)
    first = popen("install", world["b2"], "--root", root, "--skip-start",
                  env={"AIRGAP_INSTALL_FAILPOINT": "after-lock:stop"})
    waiter = None
    try:
        wait_stopped(first)
        second = cli("install", world["b2"], "--root", root, "--skip-start")
        assert second.returncode == 6 and "holds the lock" in second.stderr
        assert "--wait" in second.stderr
        assert cli("rollback", "--root", root).returncode == 6
        assert cli("status", "--root", root).returncode == 0  # read-only: no lock
        waiter = popen("install", world["b2"], "--root", root, "--skip-start", "--wait",
                       "--json")
        time.sleep(0.7)
        assert waiter.poll() is None, "--wait did not wait"
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=60) == 0
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        assert json.loads(out)["action"] == "none"
    finally:
        for p in (first, waiter):
            if p is not None and p.poll() is None:
                p.kill()
    assert _consistent(world, root) == "new"


def test_lock_released_by_kill9(world: Dict[str, object], tmp_path: Path) -> None:
    """A run killed while holding the lock does not block the next one (flock dies with it)."""
    root = _fresh(world, tmp_path)
    r = cli("install", world["b2"], "--root", root, "--skip-start",
            env={"AIRGAP_INSTALL_FAILPOINT": "after-lock"})
    assert r.returncode == -signal.SIGKILL
    assert cli("install", world["b2"], "--root", root, "--skip-start").returncode == 0
