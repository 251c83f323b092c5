"""``installer.commands.sync`` called in-process (issue #24 mutation run): real ring
repositories (``tests.ringrepo``) and the real stdlib TUF client, the installed state and
``install.install``/``install.rollback`` as stand-ins (the CLI tests in
tests/test_commands_sync_*.py and tests/test_rings_*.py run the real ones). Covers the choice
(install, delta, its fallback, up to date, the yanked downgrade), the checks after the install,
the gate and its pending record, the ratchet hint, the metadata fetcher and the target copy."""

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

from bundler.repo import ringops
from installer.commands import install, sync, syncgate, syncstate
from installer.errors import (
    ConfigError,
    DigestMismatch,
    HealthGateFailed,
    InstallerError,
    PolicyRefusal,
    TransferError,
    UntrustedContent,
)
from installer.host.layout import Layout
from installer.host.state import Options
from installer.sources import remote
from installer.trust import tufclient
from tests.ringrepo import World, make_world

PASS = "true"
FAIL = "exit 1"


def _manifests(w: World) -> Dict[str, Dict[str, Any]]:
    """target sha256 -> its ring entry (name, version, manifest digest, path)."""
    ring = sorted((w.repo / "metadata").glob("*.canary.json"),
                  key=lambda p: int(p.name.split(".")[0]))[-1]
    targets = json.loads(ring.read_bytes())["signed"]["targets"]
    return {t["hashes"]["sha256"]: dict(t["custom"], path=p) for p, t in targets.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """canary lists 1.0.0 and 2.0.0 (and the delta from 1.0.0 to 2.0.0)."""
    w = make_world(tmp_path_factory.mktemp("sync"))
    w.publish("1.0.0")
    w.publish("2.0.0")
    remember(w)
    return w


@pytest.fixture(scope="module")
def yanked_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """canary lists 2.0.0 only: 1.0.0 and 3.0.0 are yanked."""
    w = make_world(tmp_path_factory.mktemp("yanked"))
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        w.publish(v)
    remember(w)
    for v in ("1.0.0", "3.0.0"):
        ringops.yank("edge", v, directory=w.repo, keys_dir=w.keydir.path, ring="canary",
                     reason="bad")
    return w


class Rel:
    def __init__(self, digest: str, version: str) -> None:
        self.digest, self.name, self.version = digest, "edge", version

    def summary(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest}


_DIGESTS: Dict[Path, Dict[str, str]] = {}


def remember(w: World) -> None:
    """The manifest digest of each version the ring lists now (kept once yanked)."""
    _DIGESTS.setdefault(w.repo, {}).update(
        {c["version"]: c["manifest_sha256"] for c in _manifests(w).values() if "name" in c})


def digest_of(w: World, version: str) -> str:
    return _DIGESTS[w.repo][version]


class Device:
    def __init__(self, w: World, layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
        self.w, self.layout = w, layout
        self.manifests = _manifests(w)
        self.current: Optional[Rel] = None
        self.previous: Optional[Rel] = None
        self.time_ratchet = 0
        self.installs: List[Any] = []
        self.rollbacks: List[bool] = []
        self.fail_installs = 0
        self.install_digest: Optional[str] = None
        self.install_action = "installed"
        self.said: List[str] = []
        monkeypatch.setattr(syncstate, "load_state", lambda layout: (self, None))
        monkeypatch.setattr(syncgate, "load_state", lambda layout: (self, None))
        monkeypatch.setattr(install, "install", self._install)
        monkeypatch.setattr(install, "rollback", self._rollback)

    def at(self, version: Optional[str], previous: Optional[str] = None) -> "Device":
        self.current = version and Rel(digest_of(self.w, version), version)  # type: ignore
        self.previous = previous and Rel(digest_of(self.w, previous), previous)  # type: ignore
        return self

    def _install(self, layout: Layout, req: install.InstallRequest, *, report: Any) -> Any:
        self.installs.append(req)
        assert os.path.isfile(req.source)
        if self.fail_installs:
            self.fail_installs -= 1
            raise InstallerError("it did not apply")
        entry = self.manifests[os.path.basename(req.source).split(".", 1)[0]]
        digest = self.install_digest or entry["manifest_sha256"]
        return SimpleNamespace(to_json=lambda: {"action": self.install_action,
                                                "current": {"digest": digest},
                                                "previous": {"digest": "p"}})

    def _rollback(self, layout: Layout, *, wait: bool, report: Any) -> Any:
        self.rollbacks.append(wait)
        assert self.previous is not None
        back = self.previous.summary()
        return SimpleNamespace(current=back, to_json=lambda: {
            "action": "rolled-back", "current": back, "previous": None})

    def sync(self, health: Optional[str] = PASS, *, source: Optional[Path] = None,
             now: Optional[int] = None, **kw: Any) -> Any:
        req = sync.SyncRequest(source=str(source or self.w.repo), health_cmd=health,
                               health_timeout=0.3 if health in (FAIL, None) else 5,
                               health_interval=0.05,
                               arch=kw.pop("arch", "amd64"), **kw)
        return sync.sync(self.layout, req, report=self.said.append, now=now)

    def record(self) -> Dict[str, Any]:
        return syncstate.read_record(self.layout)

    def installed_names(self) -> List[str]:
        return [os.path.basename(r.source).split(".", 1)[1] for r in self.installs]


def _device(w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Device:
    layout = Layout(str(tmp_path / "dev"))
    os.makedirs(os.path.dirname(layout.trust_anchor))
    Path(layout.trust_anchor).write_bytes(w.root())
    syncstate.set_ring(layout, "canary")
    return Device(w, layout, monkeypatch)


@pytest.fixture
def dev(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Device:
    return _device(world, tmp_path, monkeypatch)


@pytest.fixture
def ydev(yanked_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Device:
    return _device(yanked_world, tmp_path, monkeypatch)


# ---------------------------------------------------------------------------- sync()

def test_a_first_install_fetches_the_full_bundle_and_records_the_sync(dev: Device) -> None:
    got = dev.sync(now=int(time.time()) - 5, arch="x86_64",
                   options=Options(exec_args="--x", skip_start=True), role="agent")
    assert got.action == "installed" and got.current == {
        "digest": digest_of(dev.w, "2.0.0")}
    assert dev.installed_names() == ["edge-2.0.0-amd64.tar"]
    req = dev.installs[0]
    assert req.arch == "amd64" and req.given.skip_start is True
    assert req.given.exec_args == "--x" and req.given.role == "agent"
    record = dev.record()
    assert record["result"] == "installed edge 2.0.0" and "pending" not in record
    assert record["ring"] == "canary" and record["ratchet"] > 0
    assert not os.path.exists(os.path.join(syncstate.tuf_dir(dev.layout), "incoming"))
    assert any("installing edge 2.0.0" in s for s in dev.said)


def test_the_given_clock_is_the_one_recorded(dev: Device) -> None:
    now = int(time.time()) - 100
    dev.sync(now=now)
    assert dev.record()["last_sync"] == now


def test_without_options_the_recorded_ones_are_kept(dev: Device) -> None:
    dev.sync()
    given = dev.installs[0].given
    assert given.skip_start is None and given.exec_args is None
    assert dev.installs[0].arch == "amd64"


def test_up_to_date_is_recorded(dev: Device) -> None:
    got = dev.at("2.0.0", "1.0.0").sync()
    assert got.action == "up-to-date" and not dev.installs
    assert got.current == dev.current.summary()  # type: ignore[union-attr]
    assert dev.record()["result"] == "up to date"


def test_the_delta_from_the_installed_release_is_used(dev: Device) -> None:
    got = dev.at("1.0.0").sync()
    assert got.action == "installed"
    assert dev.installed_names() == ["edge-2.0.0-amd64.from-" + digest_of(dev.w, "1.0.0")[:12]
                                     + ".delta.tar"]
    assert any(s.startswith("fetched the delta") for s in dev.said)
    assert "delta_fell_back" not in got.to_json()


def test_a_delta_that_does_not_apply_is_followed_by_the_full_bundle(dev: Device) -> None:
    dev.at("1.0.0").fail_installs = 1
    got = dev.sync()
    assert got.action == "installed" and got.to_json()["delta_fell_back"] is True  # rings.md
    assert [n.endswith(".delta.tar") for n in dev.installed_names()] == [True, False]
    assert any("the delta did not apply" in s for s in dev.said)


def test_a_delta_missing_from_the_source_is_replaced_by_the_full_bundle(
        dev: Device, tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    shutil.copytree(dev.w.repo, stick)
    for p in (stick / "targets").rglob("*.delta.tar"):
        p.unlink()
    assert dev.at("1.0.0").sync(source=stick).action == "installed"
    assert dev.installed_names() == ["edge-2.0.0-amd64.tar"]
    assert any("cannot be used" in s for s in dev.said)


def test_a_failed_full_install_is_recorded_and_not_retried(dev: Device) -> None:
    dev.fail_installs = 2
    with pytest.raises(InstallerError, match="did not apply"):
        dev.sync()
    assert len(dev.installs) == 1
    record = dev.record()
    assert record["result"] == "edge 2.0.0 not installed: it did not apply"
    assert "pending" not in record


def test_a_bundle_of_another_manifest_is_rolled_back(dev: Device) -> None:
    dev.at("1.0.0", None).install_digest = "f" * 64
    dev.previous = dev.current
    with pytest.raises(PolicyRefusal, match="names manifest"):
        dev.sync()
    assert dev.rollbacks == [False]


def test_an_unchanged_install_is_not_checked_against_the_manifest(dev: Device) -> None:
    dev.install_digest, dev.install_action = "f" * 64, "none"
    assert dev.sync().action == "installed" and not dev.rollbacks


def test_a_failing_gate_rolls_back_and_records_the_failure(dev: Device) -> None:
    dev.at("1.0.0")
    dev.previous = Rel("9" * 64, "0.9")
    with pytest.raises(HealthGateFailed, match="rolled back to edge 0.9"):
        dev.sync(FAIL, wait=True, now=int(time.time()))
    assert dev.rollbacks == [True]
    record = dev.record()
    assert [f["version"] for f in record["failed"]] == ["2.0.0"]
    assert "pending" not in record


def test_a_failing_gate_never_goes_back_to_a_yanked_release(ydev: Device) -> None:
    ydev.at("1.0.0", "1.0.0")
    with pytest.raises(HealthGateFailed, match="edge 1.0.0 is yanked"):
        ydev.sync(FAIL)
    assert not ydev.rollbacks and "degraded" in ydev.record()["result"]


def test_the_gate_is_pending_while_it_runs(dev: Device, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    dev.sync(f"cat {syncstate.tuf_dir(dev.layout)}/sync.json > {seen}")
    pending = json.loads(seen.read_bytes())["pending"]
    assert pending["version"] == "2.0.0" and pending["digest"] == digest_of(dev.w, "2.0.0")
    assert "pending" not in dev.record()


def test_the_default_health_command_is_used_when_none_is_given(dev: Device) -> None:
    with pytest.raises(HealthGateFailed):
        dev.sync(None)   # no k3s in this root: the default check fails


def test_a_pending_gate_is_resumed_before_any_refresh(dev: Device) -> None:
    dev.at("2.0.0", "1.0.0")
    syncstate.save_record(dev.layout, {"ratchet": 0, "failed": [], "pending": {
        "digest": dev.current.digest, "name": "edge", "version": "2.0.0",  # type: ignore
        "since": 1, "yanked": []}})
    empty = dev.w.base / "empty"
    empty.mkdir(exist_ok=True)
    got = dev.sync(source=empty)   # never read: no metadata/ there
    assert got.gate == "passed" and not dev.installs


def test_a_yanked_current_release_goes_back_to_the_kept_previous(ydev: Device) -> None:
    got = ydev.at("3.0.0", "2.0.0").sync(wait=True)
    assert got.action == "rolled-back" and ydev.rollbacks == [True] and not ydev.installs
    assert ydev.record()["result"] == "rolled back to edge 2.0.0"
    assert any("rolling back to edge 2.0.0" in s for s in ydev.said)


@pytest.mark.parametrize("previous", [None, "1.0.0"])
def test_a_downgrade_to_a_release_not_kept_here_is_refused(ydev: Device,
                                                          previous: Optional[str]) -> None:
    ydev.at("3.0.0", previous)
    with pytest.raises(PolicyRefusal, match="not the previous release kept here"):
        ydev.sync()
    assert not ydev.rollbacks


def test_a_ratchet_far_ahead_of_the_clock_says_how_to_recover(dev: Device) -> None:
    ahead = int(time.time()) + 20 * 365 * 86400
    syncstate.save_record(dev.layout, {"ratchet": ahead, "failed": []})
    with pytest.raises(UntrustedContent) as e:
        dev.sync()
    assert "ahead of its clock" in e.value.message and "sync.json aside" in str(e.value.hint)


def test_a_ratchet_within_the_slack_is_not_blamed(dev: Device, tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    shutil.copytree(dev.w.repo, stick)
    ts = stick / "metadata" / "timestamp.json"
    doc = json.loads(ts.read_bytes())
    doc["signed"]["version"] += 1   # the signature no longer matches
    ts.write_text(json.dumps(doc))
    now = int(time.time())   # the ratchet at the very end of the slack: not blamed
    syncstate.save_record(dev.layout, {"ratchet": now + tufclient.FUTURE_SLACK, "failed": []})
    with pytest.raises(UntrustedContent) as e:
        dev.sync(source=stick, now=now)
    assert "ahead of its clock" not in e.value.message


# ---------------------------------------------------------------------------- pieces

def test_the_request_defaults_are_the_cli_defaults() -> None:
    req = sync.SyncRequest(source="x")
    assert (req.health_timeout, req.health_interval, req.wait, req.plain_http) == (
        300, 2, False, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.source = "y"  # type: ignore[misc]


def test_the_metadata_fetcher(world: World, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no metadata/ folder"):
        sync.folder_fetcher(str(tmp_path))
    fetch = sync.folder_fetcher(str(world.repo))
    assert fetch("timestamp.json") == (world.repo / "metadata/timestamp.json").read_bytes()
    (world.repo / "metadata" / ".hidden.json").write_bytes(b"{}")
    try:
        for name in ("../metadata/timestamp.json", "x/timestamp.json", ".hidden.json",
                     "9.nothing.json"):
            assert fetch(name) is None, name
    finally:
        (world.repo / "metadata" / ".hidden.json").unlink()


def _entry(world: World, version: str = "1.0.0", **hashes: str) -> tufclient.Entry:
    sha, custom = next((s, c) for s, c in _manifests(world).items()
                       if c.get("version") == version)
    return tufclient.Entry(path=custom["path"], length=30720 if "length" not in hashes else 0,
                           hashes=dict({"sha256": sha}, **hashes), custom=custom)


def test_copy_target_into_an_existing_folder_and_its_other_hashes(world: World,
                                                                   tmp_path: Path) -> None:
    entry = _entry(world)
    entry = dataclasses.replace(entry, length=os.path.getsize(
        next((world.repo / "targets").rglob(f"{entry.sha256}.*"))))
    data = next((world.repo / "targets").rglob(f"{entry.sha256}.*")).read_bytes()
    good = dataclasses.replace(entry, hashes=dict(entry.hashes, sha512=hashlib.sha512(
        data).hexdigest(), md5="ignored"))
    dest = sync.copy_target(str(world.repo), good, str(tmp_path / "in"))
    assert Path(dest).read_bytes() == data
    assert dest == str(tmp_path / "in" / f"{entry.sha256}.{os.path.basename(entry.path)}")
    bad = dataclasses.replace(entry, hashes=dict(entry.hashes, sha512="0" * 128))
    with pytest.raises(DigestMismatch, match="sha512"):
        sync.copy_target(str(world.repo), bad, str(tmp_path / "in"))
    assert not os.path.exists(dest)


def test_copy_target_refuses_an_entry_without_sha256(world: World, tmp_path: Path) -> None:
    entry = dataclasses.replace(_entry(world), hashes={"sha512": "0" * 128})
    with pytest.raises(PolicyRefusal, match="no sha256"):
        sync.copy_target(str(world.repo), entry, str(tmp_path / "in"))


def test_a_target_missing_from_a_folder_or_a_mirror(world: World, tmp_path: Path) -> None:
    entry = dataclasses.replace(_entry(world), hashes={"sha256": "0" * 64})
    with pytest.raises(ConfigError, match="the source lacks it"):
        sync.copy_target(str(world.repo), entry, str(tmp_path / "in"))

    class Mirror:
        def fetch(self, path: str, dest: str, *, sha256: str, size: int) -> None:
            raise remote.Missing(f"{path} is not there")
    with pytest.raises(TransferError, match="the source lacks it") as e:
        sync.copy_target(Mirror(), entry, str(tmp_path / "in"))  # type: ignore[arg-type]
    assert not isinstance(e.value, ConfigError)


def test_prune_incoming_keeps_only_the_partial_download(tmp_path: Path) -> None:
    sync._prune_incoming(str(tmp_path / "none"), keep="k")   # no folder: nothing to do
    inc = tmp_path / "in"
    (inc / "d").mkdir(parents=True)
    (inc / "d" / "f").write_text("x")
    (inc / "old").write_text("x")
    (inc / "k").write_text("partial")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("kept")
    (inc / "link").symlink_to(outside)
    sync._prune_incoming(str(inc), keep="k")
    assert sorted(os.listdir(inc)) == ["k"] and (outside / "f").read_text() == "kept"


def test_a_staged_folder_that_cannot_be_removed_does_not_stop_the_sync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in" / "d").mkdir(parents=True)

    def refuse(*args: Any, **kw: Any) -> None:
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "rmdir", refuse)
    sync._prune_incoming(str(tmp_path / "in"), keep="k")   # no error raised
    assert (tmp_path / "in" / "d").is_dir()                  # left for the next sync
