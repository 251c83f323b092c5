"""The ring layer (``installer.trust.tufclient``) against the holes a mutation run found
(issue #24): an expired timestamp beside valid snapshot, targets and ring metadata (THREATS
17); a snapshot, targets or ring file whose bytes differ from the hash its parent lists; a
ring trusted only for the paths its delegation names. In-process, real python-tuf
repositories (``tests.tufrepo``)."""

from typing import Dict, List, Optional, Tuple

import pytest

from installer.errors import DigestMismatch
from installer.trust import tufclient
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
        tufclient.refresh(tufclient.Trusted(root=repo.root_bytes(1), **{
            r: kept[r] for r in ("timestamp", "snapshot", "targets")}, ring=kept[RING]),
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
