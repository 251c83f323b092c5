"""The stdlib TUF client against python-tuf's ``ngclient.Updater``, on the same repositories.

Each case builds a real ring repository (``bundler.repo``), lets both clients sync a good
state, then changes the repository (a normal publication, a key rotation, or an attack made
with the real keys) and syncs both again: they must agree on accept/reject and on the target
chosen, and the expected decision is asserted too.

THREATS: 15 (replayed timestamp, rolled-back snapshot), 16 (mix-and-match), 17 (expired ring),
19 (a ring signed by another ring's key, below threshold), and target hash mismatch.
"""

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import pytest
from tuf.api.metadata import MetaFile

from bundler import keys
from bundler.repo import ringops
from installer.errors import DigestMismatch, SignatureError
from installer.trust import tufclient

from .ringrepo import (
    PyTufDevice,
    StdlibDevice,
    World,
    make_world,
    resign_ring,
    sign_timestamp,
)

DAY = 86400


def both(w: World, ring: str, base: Path) -> Tuple[PyTufDevice, StdlibDevice]:
    a, b = PyTufDevice(base / f"pytuf-{ring}", ring), StdlibDevice(base / f"ours-{ring}", ring)
    a.pin(w.root())
    b.pin(w.root())
    return a, b


def agree(a: PyTufDevice, b: StdlibDevice, source: Path) -> Tuple[bool, Optional[str]]:
    theirs, ours = a.sync(source), b.sync(source)
    assert theirs == ours, (f"python-tuf {theirs} ({getattr(a, 'error', None)!r}) vs stdlib "
                            f"{ours} ({b.error!r})")
    return ours


# --- cases: (setup after the first sync) -> source folder, expected outcome ---------------

def happy(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    w.publish("2.0.0")
    return w.repo, (True, "edge-2.0.0-amd64.tar")


def rotation(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    keys.rotate(w.keydir.path, role="timestamp")
    keys.rotate(w.keydir.path, role="snapshot")
    ringops.refresh(directory=w.repo, keys_dir=w.keydir.path)
    w.publish("2.0.0")
    return w.repo, (True, "edge-2.0.0-amd64.tar")


def replayed_timestamp(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    w.publish("2.0.0")
    return w.stick_before, (False, None)  # type: ignore[attr-defined]  # the stick copied before this sync's state


def rolled_back_snapshot(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    # the timestamp key signs a NEW timestamp naming the previous snapshot
    r = ringops.Repo(w.repo, w.keydir.path)
    ts = r.timestamp().signed
    old = ts.snapshot_meta.version - 1
    data = (w.repo / "metadata" / f"{old}.snapshot.json").read_bytes()
    sign_timestamp(w, MetaFile.from_data(old, data, ["sha256"]), ts.version + 1)
    return w.repo, (False, None)


def mix_and_match(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    w.publish("2.0.0")
    meta = w.repo / "metadata"
    current = ringops.Repo(w.repo, w.keydir.path).snapshot().signed.meta["canary.json"].version
    shutil.copy(meta / f"{current - 1}.canary.json", meta / f"{current}.canary.json")
    return w.repo, (False, None)


def expired_ring(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    w.publish("2.0.0", lifetimes=ringops.Lifetimes(ring_days=1), now=int(time.time()) - 2 * DAY)
    ringops.refresh(directory=w.repo, keys_dir=w.keydir.path)  # timestamp + snapshot fresh
    return w.repo, (False, None)


def wrong_threshold(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    resign_ring(w, "stable", signers=1)  # stable needs 2 of its 3 keys
    return w.repo, (False, None)


def other_rings_key(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    resign_ring(w, "stable", signer_ring="canary")
    return w.repo, (False, None)


def target_hash_mismatch(w: World) -> Tuple[Path, Tuple[bool, Optional[str]]]:
    w.publish("2.0.0")
    blob = next((w.repo / "targets").glob("*.edge-2.0.0-amd64.tar"))
    data = bytearray(blob.read_bytes())
    data[1000] ^= 1
    blob.write_bytes(bytes(data))
    return w.repo, (False, None)


CASES: Dict[str, Tuple[str, Callable[[World], Tuple[Path, Tuple[bool, Optional[str]]]]]] = {
    "happy": ("canary", happy),
    "rotation": ("canary", rotation),
    "replayed-timestamp": ("canary", replayed_timestamp),
    "rolled-back-snapshot": ("canary", rolled_back_snapshot),
    "mix-and-match": ("canary", mix_and_match),
    "expired-ring": ("canary", expired_ring),
    "wrong-threshold-ring": ("stable", wrong_threshold),
    "ring-signed-by-another-rings-key": ("stable", other_rings_key),
    "target-hash-mismatch": ("canary", target_hash_mismatch),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stdlib_client_agrees_with_python_tuf(tmp_path: Path, case: str) -> None:
    ring, attack = CASES[case]
    w = make_world(tmp_path)
    w.publish("1.0.0")
    ringops.promote("edge", "1.0.0", directory=w.repo, keys_dir=w.keydir.path, source="canary",
                 dest="stable")
    w.stick_before = w.snapshot_copy("stick-before")  # type: ignore[attr-defined]
    a, b = both(w, ring, tmp_path)
    w.publish("1.1.0")  # the state both devices see first
    if ring == "stable":
        ringops.promote("edge", "1.1.0", directory=w.repo, keys_dir=w.keydir.path,
                     source="canary", dest="stable")
    assert agree(a, b, w.repo) == (True, "edge-1.1.0-amd64.tar")
    source, expected = attack(w)
    assert agree(a, b, source) == expected


def test_stable_device_never_sees_canary_only_bundle(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.publish("1.0.0")
    a, b = both(w, "stable", tmp_path)
    assert agree(a, b, w.repo) == (True, None)
    c, d = both(w, "canary", tmp_path)
    assert agree(c, d, w.repo) == (True, "edge-1.0.0-amd64.tar")


def test_reasons_name_the_attack(tmp_path: Path) -> None:
    """The stdlib client's errors say what happened (not only that it failed)."""
    w = make_world(tmp_path)
    w.publish("1.0.0")
    stick = w.snapshot_copy("old")
    dev = StdlibDevice(tmp_path / "d", "canary")
    dev.pin(w.root())
    w.publish("1.1.0")
    assert dev.sync(w.repo)[0]
    assert dev.sync(stick) == (False, None)
    assert isinstance(dev.error, tufclient.RollbackError)
    assert str(dev.error).startswith("timestamp v") and "older than" in str(dev.error)
    resign_ring(w, "canary", signer_ring="beta")
    assert dev.sync(w.repo) == (False, None)
    assert isinstance(dev.error, SignatureError) and "ring canary" in str(dev.error)


def test_clock_at_1970_uses_the_ratchet_and_far_future_names_both_times(tmp_path: Path) -> None:
    """THREATS 18: with the clock reset, stale metadata is still refused (ratchet); with a clock
    years ahead, the error names the expiry and the clock."""
    w = make_world(tmp_path)
    now = int(time.time())
    w.publish("1.0.0", lifetimes=ringops.Lifetimes(timestamp_days=1), now=now - 3 * DAY)
    stale = w.snapshot_copy("stale")  # its timestamp expired two days ago
    fresh_dev = StdlibDevice(tmp_path / "fresh", "canary")
    fresh_dev.pin(w.root())
    assert fresh_dev.sync(stale, now=0) == (True, "edge-1.0.0-amd64.tar")  # no ratchet yet
    dev = StdlibDevice(tmp_path / "d", "canary")
    dev.pin(w.root())
    ringops.refresh(directory=w.repo, keys_dir=w.keydir.path, now=now)
    assert dev.sync(w.repo, now=now)[0]
    assert dev.trusted is not None and dev.trusted.ratchet == now
    replay = tmp_path / "replay"
    shutil.copytree(stale, replay)
    assert dev.sync(replay, now=0) == (False, None)  # rollback or expiry: refused either way
    future = now + 10 * 365 * DAY
    assert dev.sync(w.repo, now=future) == (False, None)
    assert isinstance(dev.error, SignatureError) and "expired at" in str(dev.error)
    assert time.strftime("%Y-%m-%dT", time.gmtime(future)) in str(dev.error)
    assert "check this host's clock" in str(dev.error)


def test_future_dated_metadata_does_not_move_the_ratchet(tmp_path: Path) -> None:
    """THREATS 33 for rings: metadata signed by a host whose clock is a year ahead is used,
    but does not drag the ratchet forward (it would lock the device out later)."""
    w = make_world(tmp_path)
    now = int(time.time())
    ringops.refresh(directory=w.repo, keys_dir=w.keydir.path, now=now + 200 * DAY,
                 lifetimes=ringops.Lifetimes(timestamp_days=400, snapshot_days=400))
    dev = StdlibDevice(tmp_path / "d", "canary")
    dev.pin(w.root())
    assert dev.sync(w.repo, now=now)[0]
    assert dev.trusted is not None and dev.trusted.ratchet < now + DAY


def test_hash_mismatch_is_a_digest_error(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.publish("1.0.0")
    blob = next((w.repo / "targets").glob("*.tar"))
    blob.write_bytes(blob.read_bytes() + b"x")
    dev = StdlibDevice(tmp_path / "d", "canary")
    dev.pin(w.root())
    assert dev.sync(w.repo) == (False, None)
    assert isinstance(dev.error, DigestMismatch)
    assert json.loads((w.repo / "metadata" / "timestamp.json").read_bytes())["signed"]
