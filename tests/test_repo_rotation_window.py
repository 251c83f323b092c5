"""A device reading the repository while a key rotation goes live never refuses it.

A repository command switches its files in one rename at a time (``bundler.repo.repotxn``).
After `bundle keys rotate --role R` and the `bundle repo refresh` that publishes it, the
change holds the new root and a timestamp (and snapshot, and targets) signed by R's new
keys. A device that reads between two of those renames must see either the old publication
or the new one, each of which it accepts: never a new root beside a timestamp it no longer
accepts (what docs/trust.md used to call the one remaining window).

A ring's keys live in the top-level targets (no new root), so its rotation is one publication
like any other. For each rotated role, the repository after every rename of the switch
(recorded as ``repotxn`` makes it) is served to two devices (one that synced the publication
before, one that trusts only root v1), with the device's own client
(``installer.trust.tufclient``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundler import keys
from bundler.repo import ringops
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


def _moments(repo: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, bytes]]]:
    """Record the repository after every rename into it (``repotxn`` switches with
    ``os.replace``): what a device reading at that moment would find."""
    seen: list[tuple[str, dict[str, bytes]]] = []
    real = os.replace

    def replace(src: object, dst: object) -> None:
        real(src, dst)  # type: ignore[arg-type]
        path = Path(str(dst))
        if repo in path.parents:
            seen.append((path.relative_to(repo).as_posix(), _files(repo)))
    monkeypatch.setattr(os, "replace", replace)
    return seen


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "root", RING])
def test_every_moment_of_a_rotation_switch_is_accepted(tmp_path: Path, role: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
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
    moments = _moments(repo, monkeypatch)
    ringops.refresh(directory=repo, keys_dir=kd.path)
    monkeypatch.undo()
    order = [rel for rel, _ in moments]
    assert order[-1] == ("metadata/timestamp.json" if role == RING else "metadata/2.root.json")
    assert "metadata/timestamp.json" in order and moments[-1][1] == _files(repo)

    refused = []
    for rel, moment in [("nothing yet", before), *moments]:
        for who, trusted in (("synced", synced), ("new", tufclient.Trusted(root=first_root))):
            try:
                got = _device(moment, trusted, now)
            except Exception as e:  # noqa: BLE001 - any refusal is the failure reported
                refused.append(f"after {rel} ({who} device): {e}")
                continue
            assert [e.path for e in got.entries] == listed   # the same bundle, either way
    assert not refused, "\n".join(refused)
