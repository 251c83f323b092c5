"""Repository commands are all-or-nothing (issue 23 desk item 6, ``bundler.repo.repotxn``).

Per command and per failure (missing key, threshold not met, full disk, kill -9 at each step of
the switch) the repository folder is byte-identical afterwards, or, for a kill after the commit
point, the next command finishes the switch; a device reading in between sees a consistent
publication."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from bundler import keys
from bundler.repo import ringops

from .bundles import REPO, KeyDir, cli, default_spec, write_spec

pytestmark = pytest.mark.slow


def run(*args: object, env: Optional[Dict[str, str]] = None
        ) -> "subprocess.CompletedProcess[str]":
    full = dict(os.environ, PYTHONPATH=str(REPO))
    full.pop("AIRGAP_INSTALL_FAILPOINT", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "bundler", *map(str, args)], env=full,
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))


def tree(folder: Path) -> Dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), folder) + "/"] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


class Setup:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.kd = KeyDir(base / "keys")
        (base / "b").mkdir(exist_ok=True)
        self.repo = base / "repo"
        ringops.init_repo(self.repo, self.kd.path, ring_keys={"stable": (3, 2)})
        self.v1 = write_spec(default_spec("1.0.0"), self.kd, base / "b")
        self.v2 = write_spec(default_spec("2.0.0"), self.kd, base / "b")
        ringops.publish([self.v1], directory=self.repo, keys_dir=self.kd.path, ring="canary")

    def without(self, *pems: str) -> Path:
        """A copy of the key directory lacking some private keys."""
        dest = self.base / ("keys-without-" + "-".join(pems))
        if not dest.exists():
            shutil.copytree(self.kd.path, dest)
            for pem in pems:
                (dest / "keys" / pem).unlink()
        return dest

    def commands(self, keys_dir: Path) -> Dict[str, List[object]]:
        r, k = self.repo, keys_dir
        return {
            "publish": ["publish", self.v2, "--repo", r, "--ring", "canary", "--keys", k],
            "promote": ["promote", "edge", "1.0.0", "--repo", r, "--from", "canary", "--to",
                        "beta", "--keys", k],
            "yank": ["yank", "edge", "1.0.0", "--repo", r, "--ring", "canary", "--keys", k,
                     "--reason", "test"],
            "refresh": ["repo", "refresh", r, "--keys", k],
            "extend": ["repo", "extend", r, "--keys", k, "--days", "30", "--reason", "test",
                       "--role", "canary"],
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("atomic"))


@pytest.mark.parametrize("command,missing,needle", [
    ("publish", "canary-1.pem", "ring canary needs 1 signing key(s), found 0"),
    ("promote", "beta-1.pem", "ring beta needs 1 signing key(s), found 0"),
    ("yank", "canary-1.pem", "ring canary needs 1"),
    ("refresh", "timestamp-1.pem", "timestamp needs 1"),
    ("extend", "root-1.pem", "needs 1 root key(s), found 0"),
])
def test_missing_key_leaves_the_repository_byte_identical(world: Setup, command: str,
                                                          missing: str, needle: str) -> None:
    before = tree(world.repo)
    p = run(*world.commands(world.without(missing))[command])
    assert p.returncode == 2 and needle in p.stderr, p.stdout + p.stderr
    assert tree(world.repo) == before
    assert not any(p.name.endswith(".repo-txn") for p in world.base.iterdir())


def test_refused_publish_leaves_no_bundle_in_targets(world: Setup) -> None:
    """The bug of issue 23: the bundle stayed in targets/ after a refused publish."""
    before = tree(world.repo)
    p = run(*world.commands(world.without("canary-1.pem"))["publish"])
    assert p.returncode == 2
    assert tree(world.repo) == before
    assert not any("edge-2.0.0" in n for n in os.listdir(world.repo / "targets"))


def test_threshold_not_met_for_an_online_role(tmp_path: Path) -> None:
    """Snapshot 2-of-2 with one key here: refresh is refused; a publish is staged (never
    served) and goes live at the first refresh that holds both snapshot keys."""
    s = Setup(tmp_path)
    keys.rotate(s.kd.path, role="snapshot", new_keys=2, threshold=2)
    assert run("repo", "refresh", s.repo, "--keys", s.kd.path).returncode == 0
    short = s.without("snapshot-3.pem")  # snapshot-2 and -3 are the new pair
    before = tree(s.repo)
    p = run(*s.commands(short)["refresh"])
    assert p.returncode == 2 and "snapshot needs 2 signing key(s), found 1" in p.stderr, \
        p.stderr
    assert tree(s.repo) == before
    p = run(*s.commands(short)["publish"])
    assert p.returncode == 0 and "staged, not live" in p.stdout, p.stderr
    after = tree(s.repo)
    assert {k: v for k, v in after.items() if not k.startswith("staged")} == before
    p = run("repo", "refresh", s.repo, "--keys", s.kd.path)
    assert p.returncode == 0 and ".canary.json" in p.stdout, p.stderr
    assert not (s.repo / "staged").exists()


def test_sign_without_a_staged_change_and_init_limits(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    before = tree(s.repo)
    p = run("repo", "sign", s.repo, "--keys", s.kd.path)
    assert p.returncode == 4 and "no staged change" in p.stderr
    assert tree(s.repo) == before
    keys_before = sorted(os.listdir(s.kd.path / "keys"))
    p = run("repo", "init", tmp_path / "other", "--keys", s.kd.path, "--ring-keys",
            "stable=1/100000")
    assert p.returncode == 2 and "1 to 20 keys" in p.stderr, p.stderr
    assert sorted(os.listdir(s.kd.path / "keys")) == keys_before
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("command", ["publish", "promote", "yank", "refresh", "extend"])
def test_kill_before_the_commit_point_changes_nothing(world: Setup, command: str) -> None:
    before = tree(world.repo)
    p = run(*world.commands(world.kd.path)[command],
            env={"AIRGAP_INSTALL_FAILPOINT": "repo-staged"})
    assert p.returncode == -9, p.stdout + p.stderr
    assert tree(world.repo) == before
    assert (world.base / ".repo.repo-txn").is_dir()  # the staging folder, beside the repository
    ok = run("repo", "status", world.repo)  # read-only: still the old publication
    assert ok.returncode == 0 and "interrupted" not in ok.stdout, ok.stderr


def test_kill_after_the_commit_point_is_finished_by_the_next_command(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    dev = tmp_path / "dev"
    assert cli("trust", s.repo / "metadata" / "1.root.json", "--root", dev, "--ring",
               "canary").returncode == 0
    for point in ("repo-committed", "repo-applying"):
        before = tree(s.repo)
        p = run(*s.commands(s.kd.path)["publish" if point == "repo-committed" else "refresh"],
                env={"AIRGAP_INSTALL_FAILPOINT": point})
        assert p.returncode == -9
        # a device reading now sees the old publication: timestamp.json is switched last
        assert tree(s.repo)["metadata/timestamp.json"] == before["metadata/timestamp.json"]
        st = run("repo", "status", s.repo)
        assert "interrupted mid-switch" in st.stdout, st.stdout
        synced = cli("sync", "--source", s.repo, "--root", dev, "--arch", "amd64", "--json",
                     "--server", "--skip-start", "--health-cmd", "true")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        done = run("repo", "refresh", s.repo, "--keys", s.kd.path)
        assert done.returncode == 0, done.stderr
        assert not (tmp_path / ".repo.repo-txn").exists()
    status = json.loads(run("repo", "status", s.repo, "--json").stdout)
    assert status["rings"]["canary"]["arches"]["amd64"]["version"] == "2.0.0"
    synced = cli("sync", "--source", s.repo, "--root", dev, "--arch", "amd64", "--json",
                 "--health-cmd", "true")
    assert json.loads(synced.stdout)["current"]["version"] == "2.0.0", synced.stderr


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _fill(folder: Path, leave: int) -> None:
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    while True:  # tmpfs rounds: top up to the last page
        try:
            with open(folder / "filler", "ab") as f:
                if leave:
                    break
                f.write(b"\0" * 4096)
        except OSError:
            break


def test_full_disk_leaves_the_repository_byte_identical(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    if not _tmpfs(mnt, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        s = Setup(mnt)
        for pem in ("edge-1.0.0-amd64.tar", "edge-2.0.0-amd64.tar"):
            shutil.move(str(mnt / "b" / pem), str(tmp_path / pem))
        s.v2 = tmp_path / "edge-2.0.0-amd64.tar"
        _fill(mnt, 12 * 1024)  # less than the bundle
        before = tree(s.repo)
        p = run(*s.commands(s.kd.path)["publish"])
        assert p.returncode == 6 and "repository is unchanged" in p.stderr, p.stderr
        assert tree(s.repo) == before
        _fill(mnt, 0)
        for command in ("refresh", "yank", "promote", "extend"):
            p = run(*s.commands(s.kd.path)[command])
            assert p.returncode == 6, command + p.stdout + p.stderr
            assert tree(s.repo) == before
        assert not (mnt / ".repo.repo-txn").exists()
        os.unlink(mnt / "filler")
        assert run(*s.commands(s.kd.path)["publish"]).returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_sign_refused_or_killed_leaves_the_staged_change_as_it_was(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    ringops.promote("edge", "1.0.0", directory=s.repo, keys_dir=s.kd.path, source="canary",
                    dest="beta")
    alice = s.without("stable-2.pem", "stable-3.pem", "snapshot-1.pem", "timestamp-1.pem")
    p = run("promote", "edge", "1.0.0", "--repo", s.repo, "--from", "beta", "--to", "stable",
            "--keys", alice)
    assert p.returncode == 0 and "staged, not live" in p.stdout, p.stderr
    before = tree(s.repo)
    assert "staged/pending.json" in before
    p = run("repo", "sign", s.repo, "--keys", alice)  # alice again: nothing to add
    assert p.returncode == 2 and "add no signature" in p.stderr
    assert tree(s.repo) == before
    p = run("repo", "sign", s.repo, "--keys", s.kd.path,
            env={"AIRGAP_INSTALL_FAILPOINT": "repo-staged"})
    assert p.returncode == -9
    assert tree(s.repo) == before
    p = run("repo", "sign", s.repo, "--keys", s.kd.path)  # every key: live now
    assert p.returncode == 0 and "live: promote edge 1.0.0" in p.stdout, p.stdout + p.stderr
    assert not (s.repo / "staged").exists()
    assert not (tmp_path / ".repo.repo-txn").exists()


def test_a_staged_change_can_be_dropped(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    before = tree(s.repo)
    p = run(*s.commands(s.without("snapshot-1.pem"))["publish"])  # no snapshot key: staged
    assert p.returncode == 0 and "staged, not live" in p.stdout, p.stderr
    assert any(k.startswith("staged/targets/") for k in tree(s.repo))
    p = run("repo", "sign", s.repo, "--keys", s.kd.path, "--drop")
    assert p.returncode == 0 and "dropped" in p.stdout, p.stderr
    assert tree(s.repo) == before
