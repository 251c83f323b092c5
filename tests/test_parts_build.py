"""`bundle build --max-part-size SIZE [--parity 0|1]` on the loopback world: the parts are
written by the one splitter (bundler/assemble/parts.py), reassemble to the very bundle a one-file
build
writes, and SHA256SUMS covers every part, the parity part and the index."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from installer.sources import parts
from tests.bundles import KeyDir
from tests.cli_helpers import bundle
from tests.world import World

IMAGES = ("docker.io/library/nginx:1.27", "quay.io/metallb/controller:v0.16.1",
          "docker.io/library/alpine:3.20", "docker.io/library/busybox:1.37")


def _build(capsys: pytest.CaptureFixture[str], folder: Path, out: Path, keys: KeyDir,
           *extra: str) -> dict[str, object]:
    r = bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", "build", "--cache",
               str(folder / "cache"), "--arch", "arm64", "--out", str(out), "--keys",
               str(keys.path), "--json", *extra)
    assert r.code == 0, r.err
    doc: dict[str, object] = json.loads(r.out)
    return doc


def _big_manifest(folder: Path) -> None:
    """A ConfigMap of about 3.4 MiB, so the bundle spans several 1 MiB parts."""
    data = base64.b64encode(os.urandom(2_600_000)).decode()
    (folder / "manifests" / "big.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n  namespace: demo\n"
        f"data:\n  blob: {data}\n")


def test_build_writes_signed_parts_covered_by_sums(world: World, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "proj"
    world.write_spec(folder, bundle_images=IMAGES)
    _big_manifest(folder)
    assert bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", "lock", "--cache",
                  str(folder / "cache")).code == 0
    keys = KeyDir(tmp_path / "keys")
    whole = _build(capsys, folder, tmp_path / "one", keys)["bundles"]
    assert isinstance(whole, list)
    one = Path(whole[0]["bundle"])
    size = one.stat().st_size
    assert size > 3 << 20, "the world bundle must span several 1 MiB parts"
    out = tmp_path / "split"
    doc = _build(capsys, folder, out, keys, "--max-part-size", "2M")
    entry = doc["bundles"][0]  # type: ignore[index]
    assert entry["size"] == size and entry["parts"]["parity"] is not None
    assert not (out / one.name).exists()
    index = parts.read_index(str(out / f"{one.name}.parts.json"),
                             anchor=keys.root_json.read_bytes(), now=int(time.time()))
    assert len(index.parts) == -(-size // (1 << 20)) == len(entry["parts"]["parts"])
    dest = tmp_path / "dest"
    dest.mkdir()
    back = parts.reassemble(str(out), index, str(dest))
    assert hashlib.sha256(Path(back.path).read_bytes()).digest() == \
        hashlib.sha256(one.read_bytes()).digest()
    sums = (out / "SHA256SUMS").read_text()
    listed = {line.split("  ", 1)[1] for line in sums.splitlines()}
    assert {p.name for p in index.parts} | {f"{one.name}.part-parity",
                                            f"{one.name}.parts.json"} <= listed
    assert one.name not in listed
    check = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # without parity, and a re-split leaves no stale parity part behind
    doc = _build(capsys, folder, out, keys, "--max-part-size", "2M", "--parity", "0")
    assert doc["bundles"][0]["parts"]["parity"] is None  # type: ignore[index]
    assert not (out / f"{one.name}.part-parity").exists()
    assert f"{one.name}.part-parity" not in (out / "SHA256SUMS").read_text()


def test_build_refuses_a_part_size_too_small_before_fetching(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "proj"
    world.write_spec(folder, bundle_images=IMAGES)
    r = bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", "build", "--cache",
               str(folder / "cache"), "--arch", "arm64", "--unsigned", "--out",
               str(tmp_path / "out"), "--max-part-size", "1M")
    assert r.code == 2 and "--max-part-size" in r.err
    assert not (tmp_path / "out").exists() and not (folder / "cache").exists()
