"""Key rotation on a live ring repository, end to end (issue 23, desk items 5 and 7).

Every key is rotated in turn (targets, snapshot, timestamp, root, a ring) with the real
`bundle keys rotate` and `bundle repo refresh`; three devices (real `airgap-install sync`
children, each in its own root) sync after every rotation and take a new canary release, and a
fourth device that was offline for all of them catches up at the end. Then a 2-of-3 promotion
to stable is signed from two separate key folders: the stable device moves only once the
second signature and the snapshot/timestamp keys have made it live.

Only TUF-spec behaviour is asserted on the device side (root chain, rotated keys), so any
conforming client passes.
"""

import json
import shutil
from pathlib import Path
from typing import Dict

import pytest

from .bundles import KeyDir, cli, default_spec, write_spec
from .test_rings_e2e import bundle, do_sync, installed, ok

pytestmark = [pytest.mark.world, pytest.mark.slow]


def _device(tmp: Path, name: str, ring: str, repo: Path) -> Path:
    root = tmp / name
    ok(cli("trust", repo / "metadata" / "1.root.json", "--root", root, "--ring", ring))
    return root


def one_person(keydir: Path, dest: Path, *pems: str) -> Path:
    """A folder holding one person's key(s) alone, with root.json and keyring.json."""
    (dest / "keys").mkdir(parents=True)
    for name in ("root.json", "keyring.json"):
        shutil.copy(keydir / name, dest / name)
    for pem in pems:
        shutil.copy(keydir / "keys" / pem, dest / "keys" / pem)
    return dest


def test_every_key_rotated_devices_follow_and_an_offline_device_catches_up(
        tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    r = tmp_path / "repo"
    ok(bundle("repo", "init", r, "--keys", kd.path, "--ring-keys", "stable=2/3"))
    ok(bundle("publish", write_spec(default_spec("1.0.0"), kd, tmp_path / "b"), "--repo", r,
              "--ring", "canary", "--keys", kd.path))
    for src, dst in (("canary", "beta"), ("beta", "stable")):
        ok(bundle("promote", "edge", "1.0.0", "--repo", r, "--from", src, "--to", dst,
                  "--keys", kd.path))
    dev: Dict[str, Path] = {ring: _device(tmp_path, ring, ring, r)
                            for ring in ("canary", "beta", "stable")}
    offline = _device(tmp_path, "offline", "stable", r)
    for root in [*dev.values(), offline]:
        res = json.loads(ok(do_sync(root, r, "--server", "--skip-start",
                                    "--health-cmd", "true")))
        assert res["current"]["version"] == "1.0.0"

    for n, role in enumerate(("targets", "snapshot", "timestamp", "root", "stable"), start=2):
        ok(bundle("keys", "rotate", kd.path, "--role", role))
        out = ok(bundle("repo", "refresh", r, "--keys", kd.path))
        if role == "targets":
            assert "targets.json" in out  # re-signed with the new targets key
        if role == "stable":
            assert ".stable.json" in out and ".targets.json" in out  # new delegation
        version = f"{n}.0.0"
        ok(bundle("publish", write_spec(default_spec(version), kd, tmp_path / "b"), "--repo",
                  r, "--ring", "canary", "--keys", kd.path))
        for ring, want in (("canary", version), ("beta", "1.0.0"), ("stable", "1.0.0")):
            p = do_sync(dev[ring], r, "--health-cmd", "true")
            assert p.returncode == 0, f"after rotating {role}: {ring}: {p.stdout}{p.stderr}"
            assert installed(dev[ring]) == want, role
    status = json.loads(ok(bundle("repo", "status", r, "--json")))
    assert status["roles"]["root"]["version"] == 5  # v1 + the four top-level rotations
    assert status["roles"]["stable"]["version"] >= 2

    # stable gets 6.0.0 under the rotated stable keys (2 of the 3 new ones sign)
    for src, dst in (("canary", "beta"), ("beta", "stable")):
        ok(bundle("promote", "edge", "6.0.0", "--repo", r, "--from", src, "--to", dst,
                  "--keys", kd.path))
    assert json.loads(ok(do_sync(dev["stable"], r, "--health-cmd", "true")))["action"] == \
        "installed"
    # the device that slept through all five rotations walks the root chain 1 -> 5
    res = json.loads(ok(do_sync(offline, r, "--health-cmd", "true")))
    assert res["action"] == "installed" and installed(offline) == "6.0.0"


def test_two_of_three_promotion_signed_from_two_separate_folders(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    r = tmp_path / "repo"
    ok(bundle("repo", "init", r, "--keys", kd.path, "--ring-keys", "stable=2/3"))
    for version in ("1.0.0", "2.0.0"):
        ok(bundle("publish", write_spec(default_spec(version), kd, tmp_path / "b"), "--repo",
                  r, "--ring", "canary", "--keys", kd.path))
        ok(bundle("promote", "edge", version, "--repo", r, "--from", "canary", "--to", "beta",
                  "--keys", kd.path))
    ok(bundle("promote", "edge", "1.0.0", "--repo", r, "--from", "beta", "--to", "stable",
              "--keys", kd.path))
    stable = _device(tmp_path, "stable", "stable", r)
    ok(do_sync(stable, r, "--server", "--skip-start", "--health-cmd", "true"))
    assert installed(stable) == "1.0.0"

    alice = one_person(kd.path, tmp_path / "alice", "stable-1.pem")
    bob = one_person(kd.path, tmp_path / "bob", "stable-2.pem")
    ops = one_person(kd.path, tmp_path / "ops", "snapshot-1.pem", "timestamp-1.pem")
    live_before = sorted(p.name for p in (r / "metadata").iterdir())

    out = ok(bundle("promote", "edge", "2.0.0", "--repo", r, "--from", "beta", "--to",
                    "stable", "--keys", alice))
    assert "staged, not live" in out
    assert sorted(p.name for p in (r / "metadata").iterdir()) == live_before
    pending = json.loads(ok(bundle("repo", "status", r, "--json")))["pending"]
    assert len(pending) == 1 and "promote edge 2.0.0" in pending[0]["what"]
    [sig] = pending[0]["signatures"]
    assert (sig["role"], sig["present"], sig["needed"]) == ("stable", 1, 2)
    assert json.loads(ok(do_sync(stable, r, "--health-cmd", "true")))["action"] == "up-to-date"

    # a second change waits for the first; the same person cannot sign twice
    p = bundle("promote", "edge", "2.0.0", "--repo", r, "--from", "canary", "--to", "stable",
               "--keys", kd.path)
    assert p.returncode == 4 and "staged change" in p.stderr, p.stderr
    p = bundle("repo", "sign", r, "--keys", alice)
    assert p.returncode == 2 and "add no signature" in p.stderr, p.stderr

    out = ok(bundle("repo", "sign", r, "--keys", bob))  # threshold met, no snapshot key
    assert "still staged" in out and "2 of 2" in out
    assert sorted(p.name for p in (r / "metadata").iterdir()) == live_before
    assert json.loads(ok(do_sync(stable, r, "--health-cmd", "true")))["action"] == "up-to-date"

    out = ok(bundle("repo", "refresh", r, "--keys", ops))  # the online keys publish it
    assert ".stable.json" in out
    assert json.loads(ok(bundle("repo", "status", r, "--json")))["pending"] == []
    assert not (r / "staged").exists()
    res = json.loads(ok(do_sync(stable, r, "--health-cmd", "true")))
    assert res["action"] == "installed" and installed(stable) == "2.0.0"
