"""THREATS 16: a snapshot from one publication mixed with targets or ring metadata from another.

A mirror or a stick copied half-way holds validly signed files of two publications: the
snapshot of the newer names version N of a role, and the file served for it is version N-1
(or N+1), each correctly signed. The device refuses the mix (``MixAndMatchError``, naming both
versions) and keeps what it had verified before."""

import pytest

from installer.trust.tufcore import MixAndMatchError
from tests.tufrepo import Device, Repo

RING = "canary"


def _two_publications(role: str) -> Repo:
    repo = Repo()
    if role == RING:
        repo.delegate("targets", RING, paths=["*"])
        repo.add_target(RING, "edge-1.0.0-amd64.tar", b"one")
        repo.publish([RING, "targets"])
    return repo


@pytest.mark.parametrize("role", ["targets", RING])
@pytest.mark.parametrize("other", ["older", "newer"])
def test_a_role_from_another_publication_is_refused(role: str, other: str) -> None:
    repo = _two_publications(role)
    dev = Device(repo)
    target = "edge-1.0.0-amd64.tar"   # a ring is loaded when a target is looked up in it
    assert (dev.find(target) == RING) if role == RING else dev.refresh(), dev.error
    before = dev.store.version(role)
    old = repo.targets(role).version
    old_bytes = repo.served[f"{old}.{role}.json"]
    if role == RING:
        repo.add_target(RING, "edge-2.0.0-amd64.tar", b"two")
    repo.publish([role])                       # publication B: role v(old+1)
    new = repo.targets(role).version
    assert new == old + 1
    if other == "older":                       # B's name, A's bytes
        repo.served[f"{new}.{role}.json"] = old_bytes
        said = f"{role} is version {old}, but the metadata above it names version {new}"
    else:                                      # a third publication's role, signed, unlisted
        repo.targets(role).version += 1
        repo.served[f"{new}.{role}.json"] = repo.sign(role)
        said = f"{role} is version {new + 1}, but the metadata above it names version {new}"
    assert (dev.find(target) is None) if role == RING else not dev.refresh()
    assert isinstance(dev.error, MixAndMatchError) and said in str(dev.error), dev.error
    assert dev.store.version(role) == before   # what verified before is kept
