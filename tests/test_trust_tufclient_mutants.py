"""The ring layer (``installer.trust.tufclient``) against the holes a mutation run found
(issue #24): an expired timestamp beside valid snapshot, targets and ring metadata (THREATS
17); a snapshot, targets or ring file whose bytes differ from the hash its parent lists; a
ring trusted only for the paths its delegation names. In-process, real python-tuf
repositories (``tests.tufrepo``)."""

import dataclasses
import hashlib
import json
from typing import Any, Dict, List, Optional, Tuple

import pytest

from installer.errors import ConfigError, DigestMismatch, FormatError
from installer.format import canonjson
from installer.trust import rootmeta, tufclient, tufoverride
from tests.tufrepo import DAY, Repo

RING = "canary"
BUNDLE = "edge-1.0.0-amd64.tar"


def _repo(*, paths: Optional[List[str]] = None, meta_hashes: bool = False) -> Repo:
    repo = Repo(meta_hashes=meta_hashes)
    repo.delegate("targets", RING, paths=paths or ["*"])
    repo.add_target(RING, BUNDLE, b"bundle")
    repo.publish([RING, "targets"])
    return repo


class Disk:
    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}

    def persist(self, role: str, data: Optional[bytes]) -> None:
        if data is None:
            self.files.pop(role, None)
        else:
            self.files[role] = data


def _refresh(repo: Repo, now: int, disk: Optional[Disk] = None) -> tufclient.Refreshed:
    return tufclient.refresh(tufclient.Trusted(root=repo.root_bytes(1)), repo.fetch, ring=RING,
                             now=now, persist=None if disk is None else disk.persist)


# --- THREATS 17: an expired timestamp, everything else valid ---------------------------------

def test_an_expired_timestamp_beside_valid_snapshot_targets_and_ring_is_refused() -> None:
    repo = _repo()
    for role in ("root", "snapshot", "targets", RING):     # valid for 90 days
        repo.expire(role, repo.now + 90 * DAY)
    repo.publish_root()
    expires = repo.now + DAY
    repo.expire("timestamp", expires)
    repo.publish([RING, "targets"])
    disk = Disk()
    ok = _refresh(repo, expires - 1, disk)
    assert ok.versions["timestamp"]["expires"] == expires and set(disk.files) == {
        "timestamp", "snapshot", "targets", RING}
    for now in (expires, repo.now + 31 * DAY):   # at its expiry, and a month on
        disk = Disk()
        with pytest.raises(tufclient.ExpiredError, match=r"^timestamp v\d+ expired") as e:
            _refresh(repo, now, disk)
        assert "override" in (e.value.hint or "")
        assert disk.files == {}            # the expired timestamp is never kept


def test_an_expired_timestamp_after_a_good_refresh_is_refused_not_kept() -> None:
    repo = _repo()
    disk = Disk()
    _refresh(repo, repo.now, disk)
    kept = dict(disk.files)
    repo.expire("timestamp", repo.now + DAY)
    repo.publish([])
    with pytest.raises(tufclient.ExpiredError, match="timestamp"):
        tufclient.refresh(tufclient.Trusted(
            root=repo.root_bytes(1), timestamp=kept["timestamp"], snapshot=kept["snapshot"],
            targets=kept["targets"], ring=kept[RING]),
            repo.fetch, ring=RING, now=repo.now + 2 * DAY, persist=disk.persist)
    assert disk.files["timestamp"] == kept["timestamp"]


# --- bytes that differ from the hash the parent lists -----------------------------------------

def _same_length_other_bytes(data: bytes) -> bytes:
    """Validly signed (the signature covers the canonical form), same length, other bytes."""
    assert data.startswith(b'{\n "')
    return b'{\t "' + data[4:]


@pytest.mark.parametrize("role,parent", [("snapshot", "timestamp"), ("targets", "snapshot"),
                                         (RING, "snapshot")])
def test_a_file_whose_bytes_differ_from_the_hash_its_parent_lists_is_refused(
        role: str, parent: str) -> None:
    repo = _repo(meta_hashes=True)
    name = [n for n in repo.served if n.endswith(f".{role}.json")][-1]
    good = repo.served[name]
    repo.served[name] = _same_length_other_bytes(good)
    disk = Disk()
    with pytest.raises(DigestMismatch, match="does not match the sha256") as e:
        _refresh(repo, repo.now, disk)
    assert role in str(e.value)
    order = ["timestamp", "snapshot", "targets", RING]
    assert set(disk.files) == set(order[:order.index(role)])
    repo.served[name] = good               # the same repository with the right bytes is fine
    assert _refresh(repo, repo.now).entries[0].path == BUNDLE


# --- delegation path scoping -------------------------------------------------------------------

def _ring_listing(paths: List[str], listed: Tuple[str, ...]) -> Tuple[str, ...]:
    repo = _repo(paths=paths)
    for path in listed:
        repo.add_target(RING, path, path.encode())
    repo.publish([RING])
    return tuple(e.path for e in _refresh(repo, repo.now).entries)


def test_a_ring_delegated_some_paths_is_not_trusted_for_others() -> None:
    got = _ring_listing(["edge-*"], ("k3s-evil.tar", "sub/edge-2.tar", "edge-2.0.0-amd64.tar"))
    assert got == (BUNDLE, "edge-2.0.0-amd64.tar")
    assert _ring_listing(["*"], ("k3s-evil.tar",)) == (BUNDLE, "k3s-evil.tar")


# --- the ring layer's own checks -----------------------------------------------------------

def test_a_repository_delegating_to_no_ring_is_refused() -> None:
    repo = Repo()
    with pytest.raises(ConfigError, match="targets v1 delegates to no rings") as e:
        _refresh(repo, repo.now)
    assert "bundle repo init" in (e.value.hint or "")


@pytest.mark.parametrize("yanked,ok", [
    ([], True),
    ([{"name": "edge", "version": "1.0.0", "reason": "r"}], True),
    ({"name": "edge", "version": "1.0.0"}, False),
    (["edge"], False),
    ([{"name": "edge"}], False),
    ([{"version": "1.0.0"}], False),
    ([{"name": "edge", "version": 1}], False),
    ([{"name": 1, "version": "1.0.0"}], False),
    ([{"name": "edge", "version": "1.0.0"}, {"name": "edge"}], False),
], ids=lambda v: str(v)[:50])
def test_the_yanked_list_is_validated(yanked: Any, ok: bool) -> None:
    repo = _repo()
    repo.targets(RING).unrecognized_fields[tufclient.YANKED] = yanked
    repo.publish([RING])
    if ok:
        got = _refresh(repo, repo.now).yanked
        assert [dict(y) for y in got] == yanked
    else:
        with pytest.raises(FormatError, match=f"ring {RING} v2: x-airgap-yanked must list"):
            _refresh(repo, repo.now)


def test_results_are_immutable_and_start_without_a_ratchet() -> None:
    repo = _repo()
    trusted = tufclient.Trusted(root=repo.root_bytes(1))
    assert trusted.ratchet == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        trusted.ratchet = 5                         # type: ignore[misc]
    got = _refresh(repo, repo.now)
    assert got.trusted.ratchet == 0 and got.now == repo.now   # no x-airgap-issued anywhere
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.ring = "stable"                         # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.entries[0].path = "other.tar"           # type: ignore[misc]


def _issued_timestamp(repo: Repo, issued: int) -> None:
    ts = repo.md["timestamp"].signed
    ts.unrecognized_fields[tufclient.ISSUED] = issued
    repo.publish_timestamp()


def test_the_ratchet_moves_to_a_date_at_most_the_clock_plus_24_hours() -> None:
    repo = _repo()
    clock = repo.now
    _issued_timestamp(repo, clock + tufclient.FUTURE_SLACK)
    assert _refresh(repo, clock).trusted.ratchet == clock + DAY
    _issued_timestamp(repo, clock + DAY + 1)
    assert _refresh(repo, clock).trusted.ratchet == 0          # used, ignored for time
    _issued_timestamp(repo, clock - 5)
    got = tufclient.refresh(tufclient.Trusted(root=repo.root_bytes(1), ratchet=clock - 5),
                            repo.fetch, ring=RING, now=clock)
    assert got.trusted.ratchet == clock - 5 and got.now == clock


def test_an_override_is_read_once_per_refresh() -> None:
    """Two expired documents, one override naming both: ``override.json`` fetched once."""
    repo = _repo()
    for role in ("timestamp", RING):
        repo.expire(role, repo.now + DAY)
    repo.publish([RING, "targets"])
    names = {"timestamp": "timestamp.json", RING: f"2.{RING}.json"}
    extend = [{"role": role, "version": repo.md[role].signed.version,
               "sha256": hashlib.sha256(repo.served[name]).hexdigest()}
              for role, name in names.items()]
    later = repo.now + 2 * DAY
    signed = {"_type": tufoverride.TYPE, "spec_version": "1.0.31", "version": 1,
              "expires": rootmeta._iso(later + DAY), tufoverride.ISSUED: later,
              "reason": "cut off", "extend": extend}
    payload = canonjson.encode(signed)
    repo.served[tufoverride.FILE] = json.dumps({"signed": signed, "signatures": [
        {"keyid": s.public_key.keyid, "sig": s.sign(payload).signature}
        for s in repo.signers["root"]]}).encode()
    repo.requests.clear()
    got = _refresh(repo, later)
    assert got.override is not None and got.override["roles"] == ["timestamp", RING]
    assert repo.requests.count(tufoverride.FILE) == 1
