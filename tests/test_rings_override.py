"""THREATS 17, second half: expired metadata is refused (a freeze) UNLESS a signed override
exists. The override (``bundle repo extend``, ``installer.trust.tufoverride``) is signed by the root
keys, names each document it extends by role, version and sha256, and has its own short expiry.

Real key directories, real repositories, the real stdlib client and the real CLIs.
"""

import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from bundler import keys
from bundler.errors import SpecError
from bundler.repo import ringops
from bundler.repo.repoextend import extend
from installer.format import canonjson
from installer.trust import tufoverride
from installer.trust.tufclient import ExpiredError, RollbackError

from .bundles import cli
from .ringrepo import StdlibDevice, World, make_world
from .test_rings_e2e import bundle

DAY = 86400


def expired_world(tmp_path: Path) -> World:
    """A device-ready repository whose canary ring expired a day ago (timestamp and snapshot
    fresh): what a site cut off for longer than the ring lifetime holds."""
    w = make_world(tmp_path)
    w.publish("1.0.0", lifetimes=ringops.Lifetimes(ring_days=1), now=int(time.time()) - 2 * DAY)
    ringops.refresh(directory=w.repo, keys_dir=w.keydir.path)
    return w


def device(w: World, name: str) -> StdlibDevice:
    d = StdlibDevice(w.base / name, "canary")
    d.pin(w.root())
    return d


def sign_override(w: World, signed: Dict[str, Any], role: str = "root") -> None:
    """A hand-made override signed by ``role``'s keys (for documents our builder refuses)."""
    root = ringops.Repo(w.repo, w.keydir.path).root().signed
    public = [root.keys[k] for k in root.roles[role].keyids]
    payload = canonjson.encode(signed)
    sigs = [{"keyid": s.public_key.keyid, "sig": s.sign(payload).signature}
            for s in keys.signers_for_keys(w.keydir.path, public)]  # type: ignore[arg-type]
    (w.repo / "metadata" / tufoverride.FILE).write_bytes(
        canonjson.encode({"signed": signed, "signatures": sigs}))


def test_expired_ring_is_refused_then_accepted_under_a_root_signed_override(
        tmp_path: Path) -> None:
    w = expired_world(tmp_path)
    dev = device(w, "d")
    assert dev.sync(w.repo) == (False, None)
    assert isinstance(dev.error, ExpiredError) and "ring canary" in str(dev.error)
    assert "bundle repo extend" in (dev.error.hint or "")

    done = extend(directory=w.repo, keys_dir=w.keydir.path, days=7, reason="site cut off")
    assert [e["role"] for e in done["extend"]] == ["canary"]  # only what expires within 7 d
    assert done["expired_now"] == ["canary"]
    assert dev.sync(w.repo) == (True, "edge-1.0.0-amd64.tar")
    assert dev.trusted is not None


def test_override_summary_reaches_the_refresh_result(tmp_path: Path) -> None:
    from installer.commands import sync
    from installer.trust import tufclient
    w = expired_world(tmp_path)
    extend(directory=w.repo, keys_dir=w.keydir.path, days=3, reason="road closed")
    r = tufclient.refresh(tufclient.Trusted(root=w.root()), sync.folder_fetcher(str(w.repo)),
                          ring="canary", now=int(time.time()))
    assert r.override is not None
    assert r.override["roles"] == ["canary"] and r.override["reason"] == "road closed"
    assert r.override["version"] == 1


def test_override_covers_only_the_exact_bytes_it_names(tmp_path: Path) -> None:
    """An override for yesterday's ring says nothing about a different document of the same
    role: re-signed (new version) but still expired -> refused."""
    w = expired_world(tmp_path)
    extend(directory=w.repo, keys_dir=w.keydir.path, days=7, reason="r", roles=["timestamp"])
    dev = device(w, "d")
    assert dev.sync(w.repo) == (False, None)  # the ring is not named
    assert isinstance(dev.error, ExpiredError)

    # name the ring, then tamper one byte of the override's digest
    extend(directory=w.repo, keys_dir=w.keydir.path, days=7, reason="r", roles=["canary"])
    path = w.repo / "metadata" / tufoverride.FILE
    doc = json.loads(path.read_bytes())
    sha = doc["signed"]["extend"][0]["sha256"]
    doc["signed"]["extend"][0]["sha256"] = ("0" if sha[0] != "0" else "1") + sha[1:]
    path.write_bytes(canonjson.encode(doc))
    assert dev.sync(w.repo) == (False, None)
    assert "override.json is present but refused" in str(dev.error)


def test_override_signed_by_a_non_root_key_is_refused(tmp_path: Path) -> None:
    w = expired_world(tmp_path)
    now = int(time.time())
    ring = w.repo / "metadata" / "2.canary.json"
    assert ring.exists()
    import hashlib
    signed = {"_type": tufoverride.TYPE, "spec_version": "1.0.31", "version": 1,
              "expires": ringops._iso(now + 5 * DAY), tufoverride.ISSUED: now, "reason": "r",
              "extend": [{"role": "canary", "version": 2,
                          "sha256": hashlib.sha256(ring.read_bytes()).hexdigest()}]}
    sign_override(w, signed, role="timestamp")
    dev = device(w, "d")
    assert dev.sync(w.repo) == (False, None)
    assert "needs the root keys" in str(dev.error)
    sign_override(w, signed, role="root")  # the same document, signed by root: accepted
    assert dev.sync(w.repo) == (True, "edge-1.0.0-amd64.tar")


@pytest.mark.parametrize("span_days, issued_ago, want", [
    (91, 0, "at most 90 days"),       # longer than the rules allow
    (1, 2, "expired at"),             # the override itself expired
])
def test_override_limits(tmp_path: Path, span_days: int, issued_ago: int, want: str) -> None:
    import hashlib
    w = expired_world(tmp_path)
    now = int(time.time()) - issued_ago * DAY
    ring = w.repo / "metadata" / "2.canary.json"
    sign_override(w, {"_type": tufoverride.TYPE, "spec_version": "1.0.31", "version": 1,
                      "expires": ringops._iso(now + span_days * DAY), tufoverride.ISSUED: now,
                      "reason": "r",
                      "extend": [{"role": "canary", "version": 2,
                                  "sha256": hashlib.sha256(ring.read_bytes()).hexdigest()}]})
    dev = device(w, "d")
    assert dev.sync(w.repo) == (False, None)
    assert isinstance(dev.error, ExpiredError) and want in str(dev.error)


def test_an_override_does_not_lift_rollback_protection(tmp_path: Path) -> None:
    """A stick with yesterday's (now expired) metadata and an override for it cannot take a
    device back once it saw newer metadata: rollback is checked exactly as without one."""
    w = expired_world(tmp_path)
    extend(directory=w.repo, keys_dir=w.keydir.path, days=7, reason="r")
    old_stick = w.snapshot_copy("old")
    dev = device(w, "d")
    assert dev.sync(old_stick) == (True, "edge-1.0.0-amd64.tar")
    w.publish("2.0.0")  # fresh ring
    assert dev.sync(w.repo) == (True, "edge-2.0.0-amd64.tar")
    assert dev.sync(old_stick) == (False, None)
    assert isinstance(dev.error, RollbackError)


@pytest.mark.parametrize("kw, want", [
    ({"days": 91, "reason": "r"}, "1 to 90 days"),
    ({"days": 0, "reason": "r"}, "1 to 90 days"),
    ({"days": 7, "reason": "  "}, "--reason"),
    ({"days": 7, "reason": "r", "roles": ["root"]}, "no role root"),
    ({"days": 7, "reason": "r", "roles": ["canry"]}, "no role canry"),
])
def test_extend_refuses_bad_requests_and_writes_nothing(tmp_path: Path, kw: Dict[str, Any],
                                                        want: str) -> None:
    w = expired_world(tmp_path)
    with pytest.raises(SpecError, match=want):
        extend(directory=w.repo, keys_dir=w.keydir.path, **kw)
    assert not (w.repo / "metadata" / tufoverride.FILE).exists()


def test_nothing_to_extend_is_said(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.publish("1.0.0")
    with pytest.raises(SpecError, match="nothing .* expires within 1 days"):
        extend(directory=w.repo, keys_dir=w.keydir.path, days=1, reason="r")


def test_extend_without_root_keys_is_refused_by_the_cli(tmp_path: Path) -> None:
    w = expired_world(tmp_path)
    partial = tmp_path / "ci-keys"
    shutil.copytree(w.keydir.path, partial)
    removed: List[str] = []
    for pem in (partial / "keys").glob("root*.pem"):
        pem.unlink()
        removed.append(pem.name)
    assert removed
    p = bundle("repo", "extend", w.repo, "--keys", partial, "--reason", "r")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "needs 1 root key" in p.stderr and "Traceback" not in p.stderr
    assert not (w.repo / "metadata" / tufoverride.FILE).exists()


def test_device_cli_syncs_under_override_and_says_so(tmp_path: Path) -> None:
    w = expired_world(tmp_path)
    root = tmp_path / "dev"
    assert cli("trust", w.repo / "metadata" / "1.root.json", "--root", root,
               "--ring", "canary").returncode == 0
    args = ("sync", "--source", w.repo, "--root", root, "--arch", "amd64", "--server",
            "--skip-start", "--health-cmd", "true")
    refused = cli(*args, "--json")
    assert refused.returncode == 3 and "expired at" in refused.stderr
    p = bundle("repo", "extend", w.repo, "--keys", w.keydir.path, "--days", "5",
               "--reason", "site 12 cut off", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["extend"][0]["role"] == "canary"
    done = cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted under root-signed override v1" in done.stdout + done.stderr
    assert "site 12 cut off" in done.stdout + done.stderr
    st = json.loads(cli("status", "--root", root, "--json").stdout)
    assert st["installed"]["version"] == "1.0.0"


def test_repo_status_shows_the_override(tmp_path: Path) -> None:
    from bundler.repo.repostatus import status, status_text
    w = expired_world(tmp_path)
    assert status(w.repo)["override"] is None
    extend(directory=w.repo, keys_dir=w.keydir.path, days=7, reason="site cut off")
    report = status(w.repo)
    assert report["override"]["valid"] and report["override"]["extend"][0]["role"] == "canary"
    assert any(line.startswith("override v1 until ") and "canary v2" in line
               for line in status_text(report))
    assert status(w.repo, now=int(time.time()) + 8 * DAY)["warnings"][-1].startswith(
        "override v1 expired at")
