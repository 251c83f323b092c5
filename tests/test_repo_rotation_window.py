"""A device reading the repository while a key rotation goes live never refuses it.

A repository command switches its files in one rename at a time (``bundler.repo.repotxn``).
After `bundle keys rotate --role R` and the `bundle repo refresh` that publishes it, the
change holds the new root and a timestamp (and snapshot, and targets) signed by R's new
keys. A device that reads between two of those renames must see either the old publication
or the new one, each of which it accepts: never a new root beside a timestamp it no longer
accepts (what docs/trust.md used to call the one remaining window).

A ring's keys live in the top-level targets (no new root), so its rotation is one publication
like any other. For each rotated role, every prefix of the switch, in the order ``repotxn``
renames, is served to two devices (one that synced the publication before, one that trusts
only root v1), with the device's own client (``installer.trust.tufclient``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundler import keys
from bundler.repo import repotxn, ringops
from installer.trust import tufclient

from .bundles import KeyDir, default_spec, write_spec

RING = "canary"


def _files(folder: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = Path(dirpath) / n
            out[p.relative_to(folder).as_posix()] = p.read_bytes()
    return out


def _device(files: dict[str, bytes], trusted: tufclient.Trusted,
            now: int) -> tufclient.Refreshed:
    def fetch(name: str) -> bytes | None:
        return files.get(f"metadata/{name}")
    return tufclient.refresh(trusted, fetch, ring=RING, now=now)


def _switch_order(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    changed = [rel for rel, data in after.items() if before.get(rel) != data]
    return sorted(changed, key=repotxn._rank)


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "root", RING])
def test_every_moment_of_a_rotation_switch_is_accepted(tmp_path: Path, role: str) -> None:
    kd = KeyDir(tmp_path / "keys")
    repo = tmp_path / "repo"
    ringops.init_repo(repo, kd.path)
    (tmp_path / "b").mkdir()
    ringops.publish([write_spec(default_spec("1.0.0"), kd, tmp_path / "b")],
                    directory=repo, keys_dir=kd.path, ring=RING)
    before = _files(repo)
    first_root = before["metadata/1.root.json"]
    now = int(Path(repo / "metadata" / "timestamp.json").stat().st_mtime)
    start = _device(before, tufclient.Trusted(root=first_root), now)
    synced, listed = start.trusted, [e.path for e in start.entries]
    assert len(listed) == 1 and "edge-1.0.0" in listed[0]

    keys.rotate(kd.path, role=role)
    ringops.refresh(directory=repo, keys_dir=kd.path)
    after = _files(repo)
    order = _switch_order(before, after)
    assert order[-1] == ("metadata/timestamp.json" if role == RING else "metadata/2.root.json")

    refused = []
    for n in range(len(order) + 1):
        moment = dict(before, **{rel: after[rel] for rel in order[:n]})
        for who, trusted in (("synced", synced), ("new", tufclient.Trusted(root=first_root))):
            try:
                got = _device(moment, trusted, now)
            except Exception as e:  # noqa: BLE001 - any refusal is the failure reported
                refused.append(f"after {order[:n][-1:]} ({who} device): {e}")
                continue
            assert [e.path for e in got.entries] == listed   # the same bundle, either way
    assert not refused, "\n".join(refused)
