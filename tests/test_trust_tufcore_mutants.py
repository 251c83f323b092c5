"""The trusted metadata set (``installer.trust.tufcore``) called directly, against the
survivors of a mutation run (issue #24): expiry at exactly ``expires``, the workflow order
guards, and the snapshot's hashes checked unless it is the device's own stored copy."""

import pytest
from securesystemslib.signer import SSlibKey
from tuf.api.metadata import MetaFile

from installer.errors import DigestMismatch, FormatError
from installer.trust import tufcore
from installer.trust.tufcore import ExpiredError, TrustedSet
from tests.tufrepo import DAY, NOW, Repo, new_signer

SNAP, TARGETS = "1.snapshot.json", "1.targets.json"


def _set(repo: Repo, now: int = NOW) -> TrustedSet:
    return TrustedSet(repo.root_bytes(1), now=now)


def _loaded(repo: Repo, now: int = NOW) -> TrustedSet:
    t = _set(repo, now)
    t.update_timestamp(repo.served["timestamp.json"])
    t.update_snapshot(repo.served[SNAP])
    t.update_targets(repo.served[TARGETS])
    return t


def test_a_document_is_valid_strictly_before_its_expiry() -> None:
    repo = Repo()
    repo.expire("timestamp", NOW + DAY)
    repo.publish_timestamp(bump=False)
    assert _set(repo, NOW + DAY - 1).update_timestamp(repo.served["timestamp.json"])
    t = _set(repo, NOW + DAY)
    with pytest.raises(ExpiredError, match="timestamp v1 expired"):
        t.update_timestamp(repo.served["timestamp.json"])
    assert t.timestamp is not None     # trusted (it still guards rollback), but refused
    check = tufcore.refuse_expired(NOW + DAY)
    with pytest.raises(ExpiredError):
        check(t.timestamp, "timestamp", t.root)
    tufcore.refuse_expired(NOW + DAY - 1)(t.timestamp, "timestamp", t.root)


def test_the_root_is_valid_strictly_before_its_expiry() -> None:
    repo = Repo()
    expires = NOW + 30 * DAY                 # tufrepo's default lifetime
    _set(repo, expires - 1).check_root()
    with pytest.raises(ExpiredError, match="root v1 expired"):
        _set(repo, expires).check_root()
    with pytest.raises(ExpiredError, match="root v1 expired"):
        _set(repo, expires).update_timestamp(repo.served["timestamp.json"])


def test_roles_are_updated_in_workflow_order_only() -> None:
    repo = Repo()
    t = _set(repo)
    with pytest.raises(RuntimeError, match="no timestamp"):
        t.check_timestamp()
    with pytest.raises(RuntimeError, match="after timestamp"):
        t.update_snapshot(repo.served[SNAP])
    with pytest.raises(RuntimeError, match="no snapshot"):
        t.check_snapshot()
    with pytest.raises(RuntimeError, match="after snapshot"):
        t.update_targets(repo.served[TARGETS])
    t.update_timestamp(repo.served["timestamp.json"])
    with pytest.raises(RuntimeError, match="no snapshot"):
        t.check_snapshot()
    with pytest.raises(RuntimeError, match="root cannot be updated after timestamp"):
        t.update_root(repo.served["1.root.json"])
    t.update_snapshot(repo.served[SNAP])
    with pytest.raises(RuntimeError, match="timestamp cannot be updated after snapshot"):
        t.update_timestamp(repo.served["timestamp.json"])
    t.update_targets(repo.served[TARGETS])
    with pytest.raises(RuntimeError, match="before targets"):
        t.update_snapshot(repo.served[SNAP])
    assert _loaded(repo).targets["targets"].version == 1


def test_the_snapshot_hash_is_checked_unless_it_is_the_stored_copy() -> None:
    repo = Repo(meta_hashes=True)
    other = b'{\t "' + repo.served[SNAP][4:]       # same length, validly signed, other bytes
    t = _set(repo)
    t.update_timestamp(repo.served["timestamp.json"])
    with pytest.raises(DigestMismatch, match="snapshot v1 does not match the sha256"):
        t.update_snapshot(other)
    assert t.snapshot is None
    assert t.update_snapshot(other, stored=True).version == 1


def test_a_role_the_snapshot_does_not_list_is_mix_and_match() -> None:
    repo = Repo()
    t = _loaded(repo)
    with pytest.raises(tufcore.MixAndMatchError, match="snapshot v1 lists no a.json"):
        t.update_delegated_targets(repo.served[TARGETS], "a", "targets")
    with pytest.raises(FormatError, match="targets does not delegate to a"):
        t.verify_delegate(t.targets["targets"], "a", "targets")
    with pytest.raises(FormatError, match="b does not delegate to a"):
        t.verify_delegate(t.targets["targets"], "a", "b")


def test_a_lower_timestamp_version_is_a_rollback_even_naming_the_same_snapshot() -> None:
    repo = Repo()
    v1 = repo.served["timestamp.json"]
    v2 = repo.publish_timestamp()                     # same snapshot v1, timestamp v2
    t = _set(repo)
    t.update_timestamp(v2)
    with pytest.raises(tufcore.RollbackError, match="timestamp v1 is older than v2"):
        t.update_timestamp(v1)
    assert t.timestamp is not None and t.timestamp.version == 2


def test_a_newer_timestamp_naming_an_older_snapshot_is_a_rollback() -> None:
    repo = Repo()
    repo.publish()                                     # timestamp v2 names snapshot v2
    v2 = repo.served["timestamp.json"]
    ts = repo.md["timestamp"].signed
    ts.snapshot_meta = MetaFile(1)                     # type: ignore[attr-defined]
    v3 = repo.publish_timestamp()
    t = _set(repo)
    t.update_timestamp(v2)
    with pytest.raises(tufcore.RollbackError, match="names snapshot v1, older than v2"):
        t.update_timestamp(v3)
    assert t.timestamp is not None and t.timestamp.version == 2


def test_new_key_material_under_the_same_keyid_is_a_rotation() -> None:
    """Keyids are labels (rootmeta): 5.3.11 compares the keys themselves."""
    repo = Repo()
    old = repo.signers["timestamp"][0].public_key
    other = new_signer().public_key
    relabelled = SSlibKey(old.keyid, other.keytype, other.scheme, other.keyval)
    repo.root.keys[old.keyid] = relabelled
    repo.publish_root(bump=True)
    t = _set(repo)
    assert not t.rotated()
    t.update_root(repo.served["2.root.json"])
    assert t.root.roles["timestamp"].keyids == (old.keyid,) and t.rotated()
