"""The ring layer (``installer.trust.tufclient``) on the general client: every document is
handed to ``persist`` as soon as it verified, so a sync refused part-way keeps what it
verified (spec 5.3.8, 5.4.5, 5.5.7) and never what it refused; a timestamp key rotation
deletes the stored timestamp and snapshot (5.3.11); the ring is chosen by name and
checked against its own keys."""

import hashlib
import json
from typing import Dict, List, Optional, Tuple

import pytest
from tuf.api.metadata import Metadata

from installer.errors import ConfigError, SignatureError
from installer.format import canonjson
from installer.trust import rootmeta, tufclient, tufoverride
from tests.tufrepo import DAY, Repo, new_signer

RING = "canary"


def _repo() -> Repo:
    repo = Repo()
    repo.delegate("targets", RING, paths=["*"])
    repo.add_target(RING, "edge-1.0.0-amd64.tar", b"bundle")
    repo.publish([RING, "targets"])
    return repo


class Disk:
    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.log: List[Tuple[str, bool]] = []

    def persist(self, role: str, data: Optional[bytes]) -> None:
        self.log.append((role, data is not None))
        if data is None:
            self.files.pop(role, None)
        else:
            self.files[role] = data

    def version(self, role: str) -> Optional[int]:
        data = self.files.get(role)
        return None if data is None else int(Metadata.from_bytes(data).signed.version)

    def trusted(self, root: bytes) -> tufclient.Trusted:
        return tufclient.Trusted(root=self.files.get("root", root),
                                 timestamp=self.files.get("timestamp"),
                                 snapshot=self.files.get("snapshot"),
                                 targets=self.files.get("targets"), ring=self.files.get(RING))


def _sync(disk: Disk, repo: Repo, ring: str = RING) -> tufclient.Refreshed:
    return tufclient.refresh(disk.trusted(repo.root_bytes(1)), repo.fetch, ring=ring,
                             now=repo.now, persist=disk.persist)


def test_happy_sync_persists_every_document_and_lists_the_entries() -> None:
    repo = _repo()
    disk = Disk()
    r = _sync(disk, repo)
    assert [e.path for e in r.entries] == ["edge-1.0.0-amd64.tar"]
    assert sorted(disk.files) == sorted(["timestamp", "snapshot", "targets", RING])
    assert disk.files[RING] == r.trusted.ring


def test_ring_below_its_threshold_keeps_the_documents_verified_before_it() -> None:
    repo = _repo()
    disk = Disk()
    _sync(disk, repo)
    repo.signers[RING] = [new_signer()]          # signed by a key the delegation does not name
    repo.publish([RING])
    with pytest.raises(SignatureError, match="ring canary"):
        _sync(disk, repo)
    assert disk.version("timestamp") == 3 and disk.version("snapshot") == 3
    assert disk.version(RING) == 1                   # the refused ring never written


def test_new_root_is_persisted_even_when_a_later_step_fails() -> None:
    repo = _repo()
    disk = Disk()
    _sync(disk, repo)
    repo.rotate("timestamp")
    repo.publish_root(bump=True)
    repo.publish()
    repo.served["timestamp.json"] = repo.sign("timestamp", [new_signer()])
    with pytest.raises(SignatureError):
        _sync(disk, repo)
    assert disk.version("root") == 2
    assert ("timestamp", False) in disk.log and ("snapshot", False) in disk.log
    assert "timestamp" not in disk.files


def test_unknown_ring_names_the_rings() -> None:
    repo = _repo()
    with pytest.raises(ConfigError, match="its rings: canary"):
        _sync(Disk(), repo, ring="stable")


def _override(repo: Repo, issued: int, ring_bytes: bytes, version: int) -> bytes:
    signed = {"_type": tufoverride.TYPE, "spec_version": "1.0.31", "version": 1,
              "expires": rootmeta._iso(issued + 30 * DAY), tufoverride.ISSUED: issued,
              "reason": "site cut off",
              "extend": [{"role": RING, "version": version,
                          "sha256": hashlib.sha256(ring_bytes).hexdigest()}]}
    payload = canonjson.encode(signed)
    sigs = [{"keyid": s.public_key.keyid, "sig": s.sign(payload).signature}
            for s in repo.signers["root"]]
    return json.dumps({"signed": signed, "signatures": sigs}).encode()


@pytest.mark.parametrize("ahead,ok", [(0, True), (DAY, True), (DAY + 1, False),
                                      (365 * DAY, False)])
def test_override_dated_past_the_clock_plus_a_day_is_refused(ahead: int, ok: bool) -> None:
    """THREATS 48: a root-signed override dated more than 24 h after the device clock is
    refused (its reprieve would run from a time the device has not reached)."""
    repo = _repo()
    repo.expire(RING, repo.now + DAY)
    repo.publish([RING])
    later = repo.now + 2 * DAY                       # the ring has expired by then
    version = repo.targets(RING).version
    ring_bytes = repo.served[f"{version}.{RING}.json"]
    repo.served["override.json"] = _override(repo, later + ahead, ring_bytes, version)
    try:
        r = tufclient.refresh(tufclient.Trusted(root=repo.root_bytes(1)), repo.fetch,
                              ring=RING, now=later)
    except tufclient.ExpiredError as e:
        assert not ok
        assert "more than 24 h after this device's clock" in str(e)
        return
    assert ok and r.override is not None and r.override["roles"] == [RING]
