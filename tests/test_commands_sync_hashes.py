"""A target listed with several hashes (THREATS 53): every listed supported hash must match
the fetched bytes (not only sha256); a target with no supported hash is refused. Real
repositories re-signed by their own keys (``tests.ringrepo``), the real stdlib client and
``sync.copy_target``."""

import hashlib
from pathlib import Path
from typing import Dict

import pytest
from tuf.api.metadata import MetaFile

from bundler.repo import ringops
from installer.errors import DigestMismatch, PolicyRefusal
from tests.ringrepo import (
    StdlibDevice,
    World,
    _dump,
    make_world,
    write_snapshot_timestamp,
)


def _resign_with_hashes(w: World, hashes: Dict[str, str], *, keep_sha256: bool) -> None:
    """The next canary version listing ``hashes`` for its target (beside the real sha256
    when ``keep_sha256``), signed by the ring's keys, with a snapshot and timestamp naming it."""
    r = ringops.Repo(w.repo, w.keydir.path)
    snap = r.snapshot()
    top = r.targets(snap).signed
    md = r.ring("canary", snap)
    for target in md.signed.targets.values():
        kept = {"sha256": target.hashes["sha256"]} if keep_sha256 else {}
        target.hashes = dict(kept, **hashes)
    md.signed.version += 1
    assert top.delegations is not None and top.delegations.roles is not None
    role = top.delegations.roles["canary"]
    md.signatures.clear()
    for s in w.signers([top.delegations.keys[k] for k in role.keyids]):  # type: ignore
        md.sign(s, append=True)
    _dump(md, w.repo / "metadata" / f"{md.signed.version}.canary.json")
    snap.signed.meta["canary.json"] = MetaFile(version=md.signed.version)
    write_snapshot_timestamp(w, snap)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = make_world(tmp_path)
    w.publish("1.0.0")
    return w


def _device(w: World) -> StdlibDevice:
    d = StdlibDevice(w.base / "dev", "canary")
    d.pin(w.root())
    return d


def _bundle_bytes(w: World) -> bytes:
    return next(p for p in (w.repo / "targets").rglob("*") if p.is_file()).read_bytes()


def test_a_wrong_sha512_beside_a_right_sha256_is_refused(world: World) -> None:
    _resign_with_hashes(world, {"sha512": "0" * 128}, keep_sha256=True)
    dev = _device(world)
    assert dev.sync(world.repo) == (False, None)
    assert isinstance(dev.error, DigestMismatch) and "sha512" in str(dev.error)
    assert not list((world.base / "dev" / "dl").glob("*.tar"))


def test_a_right_sha512_beside_sha256_installs(world: World) -> None:
    good = hashlib.sha512(_bundle_bytes(world)).hexdigest()
    _resign_with_hashes(world, {"sha512": good, "blake3": "ignored"}, keep_sha256=True)
    ok, path = _device(world).sync(world.repo)
    assert ok and path == "edge-1.0.0-amd64.tar"


def test_a_target_with_no_supported_hash_is_refused(world: World) -> None:
    _resign_with_hashes(world, {"md5": hashlib.md5(_bundle_bytes(world)).hexdigest()},
                        keep_sha256=False)
    dev = _device(world)
    assert dev.sync(world.repo) == (False, None)
    assert isinstance(dev.error, PolicyRefusal) and "sha256" in str(dev.error)
