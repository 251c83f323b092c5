"""OTA rings end to end: one repository (written by the real `bundle` commands), three devices
(canary, beta, stable) each running the real `airgap-install` in its own root.

THREATS 14 (lower version -> no downgrade unless yanked), 15 (yesterday's stick refused),
19 (canary-only bundle not installed on stable), 20 (K3s minor skip via a ring refused),
25 (failing or hanging health command -> automatic rollback, version marked failed).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

from bundler.repo import ringops
from installer.commands import sync
from installer.trust import rings, tufclient

from .bundles import REPO, KeyDir, cli, default_spec, live, write_spec


def bundle(*args: object) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "bundler", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))


def ok(p: "subprocess.CompletedProcess[str]") -> str:
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def do_sync(root: Path, source: Path, *extra: object) -> "subprocess.CompletedProcess[str]":
    return cli("sync", "--source", source, "--root", root, "--arch", "amd64", "--json", *extra)


def installed(root: Path) -> str:
    st = json.loads(ok(cli("status", "--root", root, "--json")))
    return st["installed"]["version"] if st["installed"] else "nothing"


def test_promotion_health_gate_yank_and_replay(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    b = tmp_path / "b"
    b.mkdir()
    v1 = write_spec(default_spec("1.0.0"), kd, b)
    v2 = write_spec(default_spec("2.0.0"), kd, b)
    r = tmp_path / "repo"
    ok(bundle("repo", "init", r, "--keys", kd.path, "--ring-keys", "stable=2/3"))
    ok(bundle("publish", v1, "--repo", r, "--ring", "canary", "--keys", kd.path))
    for src, dst in (("canary", "beta"), ("beta", "stable")):
        ok(bundle("promote", "edge", "1.0.0", "--repo", r, "--from", src, "--to", dst,
                  "--keys", kd.path))
    dev: Dict[str, Path] = {}
    for ring in ("canary", "beta", "stable"):
        dev[ring] = tmp_path / ring
        ok(cli("trust", r / "metadata" / "1.root.json", "--root", dev[ring], "--ring", ring))
        res = json.loads(ok(do_sync(dev[ring], r, "--server", "--skip-start",
                                    "--health-cmd", "true")))
        assert res["action"] == "installed" and res["current"]["version"] == "1.0.0"
    stable_files = live(dev["stable"])

    # v2 to canary: only canary moves (THREATS 19)
    ok(bundle("publish", v2, "--repo", r, "--ring", "canary", "--keys", kd.path))
    for ring, want in (("canary", "installed"), ("beta", "up-to-date"),
                       ("stable", "up-to-date")):
        assert json.loads(ok(do_sync(dev[ring], r, "--health-cmd", "true")))["action"] == want
    assert [installed(dev[x]) for x in ("canary", "beta", "stable")] == ["2.0.0", "1.0.0",
                                                                          "1.0.0"]
    # soak not over: refused with exit 4, nothing written
    before = sorted(os.listdir(r / "metadata"))
    p = bundle("promote", "edge", "2.0.0", "--repo", r, "--from", "canary", "--to", "beta",
               "--keys", kd.path, "--min-soak", "24h")
    assert p.returncode == 4 and "soak" in p.stderr
    assert sorted(os.listdir(r / "metadata")) == before
    ok(bundle("promote", "edge", "2.0.0", "--repo", r, "--from", "canary", "--to", "beta",
              "--keys", kd.path))

    # beta moves, its health command fails: rolled back to v1, v2 marked failed (THREATS 25)
    p = do_sync(dev["beta"], r, "--health-cmd", "echo not ready >&2; exit 1",
                "--health-timeout", "1", "--health-interval", "0.2")
    assert p.returncode == 7, p.stdout + p.stderr
    assert "rolled back to edge 1.0.0" in p.stderr
    assert installed(dev["beta"]) == "1.0.0"
    st = json.loads(ok(cli("status", "--root", dev["beta"], "--json")))
    assert [f["version"] for f in st["sync"]["failed"]] == ["2.0.0"]
    assert "not ready" in st["sync"]["failed"][0]["why"]
    again = json.loads(ok(do_sync(dev["beta"], r, "--health-cmd", "true")))
    assert again["action"] == "up-to-date" and installed(dev["beta"]) == "1.0.0"

    # stable never moved
    assert json.loads(ok(do_sync(dev["stable"], r, "--health-cmd", "true")))["action"] == \
        "up-to-date"
    assert live(dev["stable"]) == stable_files

    # yesterday's stick, then today's yank
    yesterday = tmp_path / "stick-yesterday"
    shutil.copytree(r, yesterday)
    ok(bundle("yank", "edge", "2.0.0", "--repo", r, "--ring", "canary", "--keys", kd.path,
              "--reason", "crashloops on arm boards"))
    res = json.loads(ok(do_sync(dev["canary"], r, "--health-cmd", "true")))
    assert res["action"] == "rolled-back" and res["current"]["version"] == "1.0.0"
    assert "yanked" in res["reason"]
    canary_files = live(dev["canary"])
    p = do_sync(dev["canary"], yesterday, "--health-cmd", "true")
    assert p.returncode == 3 and "older than" in p.stderr, p.stderr
    assert live(dev["canary"]) == canary_files and installed(dev["canary"]) == "1.0.0"

    status = json.loads(ok(bundle("repo", "status", r, "--json")))
    assert status["rings"]["canary"]["yanked"][0]["reason"] == "crashloops on arm boards"
    assert status["rings"]["beta"]["arches"]["amd64"]["version"] == "2.0.0"
    assert status["rings"]["stable"]["arches"]["amd64"]["version"] == "1.0.0"


def test_hanging_health_command_rolls_back(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    r = tmp_path / "repo"
    ringops.init_repo(r, kd.path)
    root = tmp_path / "dev"
    ok(cli("trust", r / "metadata" / "1.root.json", "--root", root, "--ring", "canary"))
    for version in ("1.0.0", "1.1.0"):
        ringops.publish([write_spec(default_spec(version), kd, tmp_path / "b")], directory=r,
                     keys_dir=kd.path, ring="canary")
        start = time.monotonic()
        p = do_sync(root, r, "--server", "--skip-start", "--health-cmd",
                    "true" if version == "1.0.0" else "sleep 60", "--health-timeout", "1")
    assert p.returncode == 7 and "still running" in p.stderr
    assert time.monotonic() - start < 30
    assert installed(root) == "1.0.0"


def test_k3s_minor_skip_through_a_ring_is_refused(tmp_path: Path) -> None:
    """THREATS 20 and 14 through sync: the install path's checks all stay."""
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    r = tmp_path / "repo"
    ringops.init_repo(r, kd.path)
    root = tmp_path / "dev"
    ok(cli("trust", r / "metadata" / "1.root.json", "--root", root, "--ring", "canary"))
    ringops.publish([write_spec(default_spec("1.0.0"), kd, tmp_path / "b")], directory=r,
                 keys_dir=kd.path, ring="canary")
    ok(do_sync(root, r, "--server", "--skip-start", "--health-cmd", "true"))
    # THREATS 18: the time ratchet is persisted: the newest verified signing time
    record = json.loads((root / "var/lib/rancher/airgap/tuf/sync.json").read_bytes())
    issued = json.loads((r / "metadata" / "timestamp.json").read_bytes())["signed"]
    assert record["ratchet"] == issued["x-airgap-issued"] > 1_790_000_000
    skip = default_spec("2.0.0", k3s_version="v1.35.1+k3s1")
    ringops.publish([write_spec(skip, kd, tmp_path / "b")], directory=r, keys_dir=kd.path,
                 ring="canary")
    p = do_sync(root, r, "--health-cmd", "true")
    assert p.returncode == 4 and "v1.35" in p.stderr, p.stderr
    assert installed(root) == "1.0.0"


def test_percent_rollout_is_stable_and_near_the_fraction(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    r = tmp_path / "repo"
    ringops.init_repo(r, kd.path)
    ringops.publish([write_spec(default_spec("1.0.0"), kd, tmp_path / "b")], directory=r,
                 keys_dir=kd.path, ring="canary")
    root = (r / "metadata" / "1.root.json").read_bytes()

    def movers(percent: int) -> set:  # type: ignore[type-arg]
        ringops.promote("edge", "1.0.0", directory=r, keys_dir=kd.path, source="canary",
                     dest="stable", percent=percent)
        out = set()
        for i in range(100):
            refreshed = tufclient.refresh(tufclient.Trusted(root=root),
                                          sync.folder_fetcher(str(r)), ring="stable",
                                          now=int(time.time()))
            choice = rings.choose(refreshed.entries, arch="amd64", device_id=f"device-{i:03d}",
                                  installed_name=None, installed_version=None,
                                  yanked=refreshed.yanked, failed=(), ring="stable")
            if choice.entry is not None:
                out.add(i)
        return out

    first = movers(10)
    assert 5 <= len(first) <= 15, len(first)
    assert movers(10) == first  # the same devices every time
    wider = movers(50)
    assert first < wider and 35 <= len(wider) <= 65


def test_publish_refuses_a_bundle_of_another_key_directory(tmp_path: Path) -> None:
    mine, theirs = KeyDir(tmp_path / "mine"), KeyDir(tmp_path / "theirs")
    (tmp_path / "b").mkdir()
    r = tmp_path / "repo"
    ringops.init_repo(r, mine.path)
    foreign = write_spec(default_spec("1.0.0"), theirs, tmp_path / "b")
    before = sorted(os.listdir(r / "metadata"))
    p = bundle("publish", foreign, "--repo", r, "--ring", "canary", "--keys", mine.path)
    assert p.returncode == 3 and "does not verify against root v1" in p.stderr, p.stderr
    assert sorted(os.listdir(r / "metadata")) == before
    assert not any((r / "targets").iterdir())




def test_repo_init_without_signing_keys_writes_nothing(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    (kd.path / "keys" / "snapshot-1.pem").unlink()  # the snapshot key kept elsewhere
    keys_before = sorted(os.listdir(kd.path / "keys"))
    p = bundle("repo", "init", tmp_path / "repo", "--keys", kd.path)
    assert p.returncode == 2 and "snapshot needs 1 signing key(s), found 0" in p.stderr
    assert not (tmp_path / "repo").exists()
    assert sorted(os.listdir(kd.path / "keys")) == keys_before
