"""Each repository command follows a key rotation by itself (issue 23 item 5), checked with
the device's client in process (`tests/ringrepo.py`'s StdlibDevice and python-tuf's Updater,
which must agree): `publish` straight after `keys rotate --role targets` re-signs targets,
`repo extend` copies no rotated root in (it used to, and froze every device), and a ring
rotation without the targets key is refused with the repository unchanged."""

import shutil
from pathlib import Path

import pytest

from bundler import keys
from bundler.errors import SpecError
from bundler.repo import repoextend, ringops

from .ringrepo import PyTufDevice, StdlibDevice, make_world
from .test_repo_atomic import tree


def _devices(w, base: Path):  # type: ignore[no-untyped-def]
    a, b = PyTufDevice(base / "pytuf", "canary"), StdlibDevice(base / "ours", "canary")
    a.pin(w.root())
    b.pin(w.root())
    return a, b


def test_publish_right_after_a_targets_rotation(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.publish("1.0.0")
    a, b = _devices(w, tmp_path)
    assert a.sync(w.repo) == b.sync(w.repo) == (True, "edge-1.0.0-amd64.tar")
    keys.rotate(w.keydir.path, role="targets")
    w.publish("2.0.0")  # no refresh in between
    assert (w.repo / "metadata" / "2.root.json").is_file()
    assert (w.repo / "metadata" / "2.targets.json").is_file()
    assert a.sync(w.repo) == b.sync(w.repo) == (True, "edge-2.0.0-amd64.tar")


def test_extend_copies_no_rotated_root(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.publish("1.0.0")
    a, b = _devices(w, tmp_path)
    keys.rotate(w.keydir.path, role="targets")
    repoextend.extend(directory=w.repo, keys_dir=w.keydir.path, days=10, reason="cut off",
                      roles=["canary"])
    assert not (w.repo / "metadata" / "2.root.json").exists()
    assert a.sync(w.repo) == b.sync(w.repo) == (True, "edge-1.0.0-amd64.tar")


def test_ring_rotation_needs_the_targets_key(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.publish("1.0.0")
    keys.rotate(w.keydir.path, role="canary")
    no_targets = tmp_path / "no-targets"
    shutil.copytree(w.keydir.path, no_targets)
    (no_targets / "keys" / "targets-1.pem").unlink()
    before = tree(w.repo)
    with pytest.raises(SpecError, match="targets needs 1 signing key"):
        ringops.refresh(directory=w.repo, keys_dir=no_targets)
    assert tree(w.repo) == before
    ringops.refresh(directory=w.repo, keys_dir=w.keydir.path)
    a, b = _devices(w, tmp_path)
    assert a.sync(w.repo) == b.sync(w.repo) == (True, "edge-1.0.0-amd64.tar")
    # the old canary key no longer counts: a ring signed with it is refused
    md = ringops.Repo(w.repo, w.keydir.path).targets().signed
    assert md.delegations is not None and md.delegations.roles is not None
    new_ids = set(md.delegations.roles["canary"].keyids)
    assert new_ids == {k.keyid for k in keys.ring_records(w.keydir.path)["canary"].keys}
