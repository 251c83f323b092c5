"""The TUF client workflow (``installer.trust.tufupdater``) against the survivors of a
mutation run (issue #24): its documented caps, a target with no supported hash, the
device's stored snapshot used without a request, and a delegation trusted only for its
paths. In-process, python-tuf repositories (``tests.tufrepo``)."""

import pytest
from tuf.api.metadata import MetaFile

from installer.errors import DigestMismatch
from installer.trust import tufupdater
from tests.tufrepo import Device, Repo


def test_the_caps_are_the_documented_ones() -> None:
    """The behaviour at each cap is tested in test_trust_tuf_workflow.py
    (test_root_rotations_per_refresh_are_capped) and test_trust_tuf_delegations.py
    (test_visits_are_capped); these are the numbers docs and python-tuf give."""
    assert (tufupdater.MAX_ROOT_ROTATIONS, tufupdater.MAX_DELEGATIONS) == (32, 32)


def test_a_target_with_no_supported_hash_has_no_file_name() -> None:
    repo = Repo()
    target = repo.add_target("targets", "f.txt", b"data")
    target.hashes = {"md5": "00" * 16}
    repo.publish()
    dev = Device(repo)
    assert dev.refresh() and dev.updater is not None
    found = dev.updater.find_target("f.txt")
    assert found is not None
    with pytest.raises(DigestMismatch, match="no supported hash algorithm among md5"):
        dev.updater.target_file(found[0])


def test_the_stored_snapshot_is_not_checked_against_the_timestamp_hash() -> None:
    """5.5.2 applies to a downloaded snapshot; the device's own copy, still the version the
    new timestamp names, is used as it is (no request), as python-tuf does."""
    repo = Repo(meta_hashes=True)
    dev = Device(repo)
    assert dev.refresh(), dev.error
    stored = dev.store.docs["snapshot"]
    other = b'{\t "' + stored[4:]                       # same document, other bytes
    repo.served["1.snapshot.json"] = other
    ts = repo.md["timestamp"].signed
    ts.snapshot_meta = MetaFile.from_data(1, other, ["sha256"])   # type: ignore[attr-defined]
    repo.publish_timestamp()
    assert dev.refresh(), dev.error
    assert repo.requests == ["2.root.json", "timestamp.json"]
    assert dev.store.docs["snapshot"] == stored


def test_a_role_delegated_other_paths_is_not_searched_for_a_path_it_lists() -> None:
    repo = Repo()
    repo.delegate("targets", "docs", paths=["*.doc"])
    repo.add_target("docs", "k3s.tar", b"evil")
    repo.add_target("docs", "a.doc", b"doc")
    repo.publish(["docs", "targets"])
    dev = Device(repo)
    assert dev.find("k3s.tar") is None and dev.error is None
    assert not any(r.endswith("docs.json") for r in repo.requests)   # never fetched
    assert dev.find("a.doc") == "docs"
