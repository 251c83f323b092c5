"""The device's TUF client (``installer.trust.tufupdater`` over ``tufcore``), top-level roles:
each rule of the TUF client workflow (spec 5.3-5.7) that the public conformance suite checks,
on in-memory repositories written with python-tuf (``tests/tufrepo.py``)."""

import json
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import pytest

from installer.errors import DigestMismatch, SignatureError, TransferError
from installer.trust import tufupdater
from installer.trust.tufcore import ExpiredError, MixAndMatchError, RollbackError
from tests.tufrepo import DAY, NOW, Device, Repo, new_signer


def test_fresh_refresh_makes_exactly_the_four_requests() -> None:
    repo = Repo()
    dev = Device(repo)
    assert dev.refresh(), dev.error
    assert repo.requests == ["2.root.json", "timestamp.json", "1.snapshot.json",
                             "1.targets.json"]
    assert dev.versions() == {"root": None, "timestamp": 1, "snapshot": 1, "targets": 1}
    assert dev.store.docs["timestamp"] == repo.served["timestamp.json"]   # exact bytes
    assert dev.refresh() and repo.requests == ["2.root.json", "timestamp.json"]


def test_consistent_snapshot_off_uses_plain_names() -> None:
    repo = Repo(consistent=False)
    repo.add_target("targets", "dir/file.txt", b"data")
    repo.publish()
    dev = Device(repo)
    assert dev.refresh(), dev.error
    assert repo.requests == ["2.root.json", "timestamp.json", "snapshot.json", "targets.json"]
    assert dev.updater is not None
    found = dev.updater.find_target("dir/file.txt")
    assert found is not None and dev.updater.target_file(found[0]) == "dir/file.txt"


def test_consistent_target_name_is_hash_prefixed_and_quoted() -> None:
    repo = Repo()
    target = repo.add_target("targets", "a dir/f?.txt", b"x", ("sha512",))
    repo.publish()
    dev = Device(repo)
    assert dev.refresh() and dev.updater is not None
    found = dev.updater.find_target("a dir/f?.txt")
    assert found is not None
    assert dev.updater.target_file(found[0]) == f"a%20dir/{target.hashes['sha512']}.f%3F.txt"


# --- root rotation ------------------------------------------------------------------------------

def _rotate_root(repo: Repo, *, old: bool = True, new: bool = True) -> None:
    previous = list(repo.signers["root"])
    repo.rotate("root")
    repo.publish_root(bump=True, old=previous if old else (),
                      signers=None if new else [])


@pytest.mark.parametrize("old,new,ok", [(True, True, True), (False, True, False),
                                        (True, False, False)],
                         ids=["signed-by-both", "not-by-old-key", "not-by-new-key"])
def test_root_rotation_needs_old_and_new_threshold(old: bool, new: bool, ok: bool) -> None:
    repo = Repo()
    dev = Device(repo)
    _rotate_root(repo, old=old, new=new)
    assert dev.refresh() is ok
    assert dev.store.version("root") == (2 if ok else None)
    if not ok:
        assert isinstance(dev.error, SignatureError)


def test_root_chain_with_expired_intermediate_and_threshold_change() -> None:
    repo = Repo()
    dev = Device(repo)
    repo.root.expires = repo.md["timestamp"].signed.expires.replace(year=2000)
    _rotate_root(repo)                                  # v2 expired: fine as intermediate
    repo.expire("root", NOW + 30 * DAY)
    previous = list(repo.signers["root"])
    repo.add_key("root")
    repo.root.roles["root"].threshold = 2
    repo.publish_root(bump=True, old=previous)          # v3: 2-of-2, signed by both
    assert dev.refresh(), dev.error
    assert dev.store.version("root") == 3


def test_final_root_expired_is_persisted_then_refused() -> None:
    repo = Repo()
    dev = Device(repo)
    assert dev.refresh()
    repo.expire("root", NOW - 1)
    _rotate_root(repo)
    assert not dev.refresh()
    assert isinstance(dev.error, ExpiredError)
    assert dev.store.version("root") == 2                  # 5.3.8 before 5.3.10
    assert repo.requests == ["2.root.json", "3.root.json"]


def test_root_rotations_per_refresh_are_capped() -> None:
    repo = Repo()
    dev = Device(repo)
    for _ in range(tufupdater.MAX_ROOT_ROTATIONS + 3):
        _rotate_root(repo)
    dev.refresh()
    assert dev.store.version("root") == 1 + tufupdater.MAX_ROOT_ROTATIONS
    assert dev.refresh(), dev.error
    assert dev.store.version("root") == 4 + tufupdater.MAX_ROOT_ROTATIONS


# --- expiry, rollback, mix-and-match, persistence ------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    change: Callable[[Repo], None]
    error: type
    versions: Dict[str, Optional[int]]          # what the device trusts afterwards


def _expire(role: str) -> Callable[[Repo], None]:
    def change(repo: Repo) -> None:
        repo.expire(role, NOW - 1)
        repo.publish()
    return change


def _drop(name: str) -> Callable[[Repo], None]:
    def change(repo: Repo) -> None:
        repo.publish()
        del repo.served[name]
    return change


def _url_version_mismatch(role: str) -> Callable[[Repo], None]:
    def change(repo: Repo) -> None:
        repo.publish()
        name = f"2.{role}.json"
        repo.served[name] = repo.served[name].replace(b'"version": 2', b'"version": 3')
    return change


CASES = [
    Case("timestamp expired", _expire("timestamp"), ExpiredError,
         {"root": None, "timestamp": 1, "snapshot": 1, "targets": 1}),
    Case("snapshot expired", _expire("snapshot"), ExpiredError,
         {"root": None, "timestamp": 2, "snapshot": 1, "targets": 1}),
    Case("targets expired", _expire("targets"), ExpiredError,
         {"root": None, "timestamp": 2, "snapshot": 2, "targets": 1}),
    Case("timestamp missing", _drop("timestamp.json"), TransferError,
         {"root": None, "timestamp": 1, "snapshot": 1, "targets": 1}),
    Case("snapshot missing", _drop("2.snapshot.json"), TransferError,
         {"root": None, "timestamp": 2, "snapshot": 1, "targets": 1}),
    Case("targets missing", _drop("2.targets.json"), TransferError,
         {"root": None, "timestamp": 2, "snapshot": 2, "targets": 1}),
    Case("snapshot content says another version", _url_version_mismatch("snapshot"),
         SignatureError, {"root": None, "timestamp": 2, "snapshot": 1, "targets": 1}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_step_keeps_what_verified_before_it(case: Case) -> None:
    repo = Repo()
    dev = Device(repo)
    assert dev.refresh()
    case.change(repo)
    assert not dev.refresh()
    assert isinstance(dev.error, case.error), dev.error
    assert dev.versions() == case.versions


def test_timestamp_rollback_is_refused() -> None:
    repo = Repo()
    dev = Device(repo)
    old = repo.served["timestamp.json"]
    repo.publish()
    assert dev.refresh() and dev.store.version("timestamp") == 2
    repo.served["timestamp.json"] = old
    assert not dev.refresh() and isinstance(dev.error, RollbackError)
    assert dev.store.version("timestamp") == 2


def test_snapshot_and_targets_rollback_are_refused() -> None:
    repo = Repo()
    dev = Device(repo)
    repo.publish()
    old_snapshot = repo.served["2.snapshot.json"]
    repo.publish()
    assert dev.refresh() and dev.store.version("snapshot") == 3
    # timestamp v4 names snapshot v2 (an older snapshot, re-served)
    repo.md["snapshot"].signed.version = 1
    repo.publish_snapshot()
    repo.served["2.snapshot.json"] = old_snapshot
    repo.publish_timestamp()
    assert not dev.refresh() and isinstance(dev.error, RollbackError)
    # a new snapshot that lists targets older than the trusted one
    repo = Repo()
    dev = Device(repo)
    repo.publish()
    assert dev.refresh() and dev.store.version("targets") == 2
    repo.targets().version = 0
    repo.publish()
    assert not dev.refresh() and isinstance(dev.error, RollbackError)
    assert "older than" in str(dev.error)


def test_a_role_dropped_from_snapshot_is_refused() -> None:
    repo = Repo()
    repo.delegate("targets", "a", paths=["*"])
    repo.publish(["a", "targets"])
    dev = Device(repo)
    assert dev.refresh()
    del repo.md["snapshot"].signed.meta["a.json"]
    repo.publish()
    assert not dev.refresh() and isinstance(dev.error, RollbackError)


def test_equal_timestamp_version_keeps_the_trusted_one() -> None:
    repo = Repo()
    dev = Device(repo)
    assert dev.refresh()
    trusted = dev.store.docs["timestamp"]
    repo.md["timestamp"].signed.snapshot_meta.version = 100   # same version, new content
    repo.publish_timestamp(bump=False)
    assert dev.refresh(), dev.error
    assert dev.store.docs["timestamp"] == trusted
    assert "100.snapshot.json" not in repo.requests


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets"])
def test_fast_forward_recovery_after_key_rotation(role: str) -> None:
    repo = Repo()
    dev = Device(repo)
    meta = repo.md[role].signed
    meta.version = 99
    repo.publish([] if role != "targets" else ["targets"])
    assert dev.refresh(), dev.error
    assert dev.store.version(role) == 100
    # the repository rotates the abused key and restarts the role at version 1
    rotate = {"timestamp": ["timestamp"], "snapshot": ["snapshot", "timestamp"],
              "targets": ["snapshot"]}[role]
    for r in rotate:
        repo.rotate(r)
    repo.publish_root(bump=True)
    meta.version = 0
    if role == "targets":
        meta.version = 1                              # new to the snapshot: not bumped
        repo.md["snapshot"].signed.meta.clear()
    repo.publish(["targets"] if role == "targets" else [])
    assert dev.refresh(), dev.error
    assert (dev.store.version(role) or 100) < 100
    assert ("remove", "timestamp") in dev.store.log and ("remove", "snapshot") in dev.store.log


def test_stored_timestamp_not_verifying_under_new_root_is_not_trusted() -> None:
    repo = Repo()
    dev = Device(repo)
    repo.md["timestamp"].signed.version = 50
    repo.publish()
    assert dev.refresh()
    repo.rotate("timestamp")
    repo.publish_root(bump=True)
    repo.md["timestamp"].signed.version = 1
    repo.publish(bump=False)
    assert dev.refresh(), dev.error
    assert dev.store.version("timestamp") == 1


# --- signatures and thresholds ----------------------------------------------------------------

def test_thresholds_count_distinct_keys() -> None:
    repo = Repo()
    dev = Device(repo)
    repo.add_key("snapshot")
    repo.add_key("snapshot")
    repo.root.roles["snapshot"].threshold = 3
    repo.publish_root(bump=True)
    signers = repo.signers["snapshot"]
    repo.publish()
    repo.served["2.snapshot.json"] = repo.sign("snapshot", signers[:2])
    repo.publish_timestamp(bump=False)
    assert not dev.refresh() and isinstance(dev.error, SignatureError)
    assert dev.store.version("root") == 2 and dev.store.version("snapshot") is None
    doc = json.loads(repo.sign("snapshot", signers[:2]))
    doc["signatures"].append(doc["signatures"][0])               # same keyid twice
    repo.served["2.snapshot.json"] = json.dumps(doc).encode()
    assert not dev.refresh()


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_each_key_type_counts_and_a_bad_signature_does_not(kind: str) -> None:
    repo = Repo()
    dev = Device(repo)
    previous = list(repo.signers["root"])
    extra = repo.add_key("root", new_signer(kind))
    repo.root.roles["root"].threshold = 2
    repo.publish_root(bump=True, old=previous)
    assert dev.refresh(), dev.error
    assert dev.store.version("root") == 2
    repo.root.version += 1
    doc = json.loads(repo.sign("root"))
    for sig in doc["signatures"]:
        if sig["keyid"] == extra.public_key.keyid:
            sig["sig"] = sig["sig"][:-2] + ("00" if sig["sig"][-2:] != "00" else "01")
    repo.served["3.root.json"] = json.dumps(doc).encode()
    assert not dev.refresh() and dev.store.version("root") == 2


# --- hashes and lengths -----------------------------------------------------------------------

def test_metadata_hashes_and_lengths_are_checked() -> None:
    repo = Repo(meta_hashes=True)
    dev = Device(repo)
    assert dev.refresh(), dev.error
    repo.publish()
    repo.served["2.targets.json"] += b" "
    assert not dev.refresh() and isinstance(dev.error, DigestMismatch)
    assert dev.versions()["snapshot"] == 2 and dev.versions()["targets"] == 1


@pytest.mark.parametrize("hashes,ok", [
    ({"sha256": True}, True), ({"sha512": True}, True),
    ({"sha256": True, "sha512": True}, True),
    ({"sha256": True, "sha512": False}, False),
    ({"sha256": False, "sha512": True}, False),
    ({"unknown-hash": True}, False),
    ({"sha256": True, "unknown-hash": True}, True),
], ids=lambda v: str(v))
def test_every_listed_supported_target_hash_must_match(hashes: Dict[str, bool],
                                                       ok: bool) -> None:
    repo = Repo()
    data = b"artifact"
    target = repo.add_target("targets", "f.txt", data, ("sha256", "sha512"))
    listed = {}
    for algo, right in hashes.items():
        value = target.hashes.get(algo, "00" * 32)
        listed[algo] = value if right else "ab" * (len(value) // 2)
    target.hashes = listed
    repo.publish()
    dev = Device(repo)
    assert dev.refresh() and dev.updater is not None
    found = dev.updater.find_target("f.txt")
    assert found is not None
    if ok:
        tufupdater.verify_target(found[0], data)
    else:
        with pytest.raises(DigestMismatch):
            tufupdater.verify_target(found[0], data)
    with pytest.raises(DigestMismatch):
        tufupdater.verify_target(found[0], data + b"x")


def test_wrong_type_is_refused_and_nothing_after_it_is_trusted() -> None:
    repo = Repo()
    dev = Device(repo)
    repo.publish()
    repo.served["timestamp.json"] = repo.served["2.snapshot.json"]
    assert not dev.refresh()
    assert dev.versions() == {"root": None, "timestamp": None, "snapshot": None,
                              "targets": None}


def test_delegated_role_missing_from_snapshot_is_never_fetched() -> None:
    repo = Repo()
    repo.delegate("targets", "a", paths=["*"])
    repo.publish(["targets"])
    dev = Device(repo)
    assert dev.find("x") is None and isinstance(dev.error, MixAndMatchError)
    assert not any(".a.json" in r or r == "a.json" for r in repo.requests)
