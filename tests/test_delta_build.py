"""`bundle build --delta-from OLD_BUNDLE|RECEIPT` on the loopback world, through the CLI: the
delta is written beside the full bundle, is far smaller, and a device holding the old release
installs it to the very tree the full bundle gives (tests/test_delta.py covers the format)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.bundles import KeyDir, cli
from tests.cli_helpers import bundle
from tests.test_delta import _comparable
from tests.world import World

IMAGES = ("docker.io/library/nginx:1.27", "quay.io/metallb/controller:v0.16.1",
          "docker.io/library/alpine:3.20", "docker.io/library/busybox:1.37")


def _lock_and_build(capsys: pytest.CaptureFixture[str], folder: Path, out: Path,
                    keys: KeyDir, *extra: str) -> dict[str, object]:
    spec = str(folder / "bundles.toml")
    assert bundle(capsys, "--spec", spec, "-q", "lock", "--cache",
                  str(folder / "cache")).code == 0
    r = bundle(capsys, "--spec", spec, "-q", "build", "--cache", str(folder / "cache"),
               "--arch", "arm64", "--out", str(out), "--keys", str(keys.path), "--json",
               *extra)
    assert r.code == 0, r.err
    doc: dict[str, object] = json.loads(r.out)
    return doc


def test_build_delta_from_old_bundle_and_from_receipt_installs_the_full_tree(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "proj"
    keys = KeyDir(tmp_path / "keys")
    world.write_spec(folder, bundle_images=IMAGES, version="1.0.0")
    old = Path(_lock_and_build(capsys, folder, tmp_path / "v1", keys)
               ["bundles"][0]["bundle"])  # type: ignore[index]
    world.write_spec(folder, bundle_images=IMAGES, version="1.1.0")
    (folder / "manifests" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: demo\n"
        "data:\n  k: v\n")
    doc = _lock_and_build(capsys, folder, tmp_path / "v2", keys, "--delta-from", str(old))
    entry = doc["bundles"][0]  # type: ignore[index]
    full, delta = Path(entry["bundle"]), Path(entry["delta"])
    assert delta.is_file() and delta.name.endswith(".delta.tar")
    assert entry["delta_size"] == delta.stat().st_size
    assert delta.stat().st_size * 2 < full.stat().st_size, "the images travel in the base"

    base = tmp_path / "v1root"
    assert cli("trust", keys.root_json, "--root", base).returncode == 0
    r = cli("install", old, "--root", base, "--arch", "arm64", "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    ref, dev = tmp_path / "ref", tmp_path / "dev"
    shutil.copytree(str(base), str(ref), symlinks=True)
    shutil.copytree(str(base), str(dev), symlinks=True)
    assert cli("install", full, "--root", ref, "--arch", "arm64",
               "--skip-start").returncode == 0
    r = cli("install", delta, "--root", dev, "--arch", "arm64", "--skip-start", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["delta"]["carried"] >= 1
    # the world's install.sh records its own root path and clock: not placed by us
    record = "usr/local/k3s-install-record.txt"
    got, want = _comparable(dev), _comparable(ref)
    assert record in got and record in want
    got.pop(record)
    want.pop(record)
    assert got == want

    # the same delta from the device's receipt, through the CLI again
    receipt = tmp_path / "receipt.json"
    assert cli("receipt", "--root", base, "--out", receipt).returncode == 0
    again = _lock_and_build(capsys, folder, tmp_path / "v2r", keys, "--delta-from",
                            str(receipt))["bundles"][0]  # type: ignore[index]
    assert Path(again["delta"]).read_bytes() == delta.read_bytes()
