"""`bundle diff OLD NEW`: two real bundles (written by the real writer), two real locks (from
`bundle lock` against the loopback world), and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.bundles import KeyDir, default_spec, write_spec
from tests.cli_helpers import bundle, bundle_proc
from tests.world import World


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("diff")
    keys = KeyDir(base / "keys")
    old = default_spec("1.0.0")
    new = default_spec("1.1.0", k3s_version="v1.33.6+k3s1")
    new.images[f"k3s-airgap-images-{new.arch}.tar.zst"] = old.images[
        f"k3s-airgap-images-{old.arch}.tar.zst"]
    new.manifests["extra.yaml"] = b"kind: ConfigMap\n"
    return write_spec(old, keys, base), write_spec(new, keys, base)


def test_two_bundles_every_change_named(two_bundles: tuple[Path, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    old, new = two_bundles
    r = bundle(capsys, "diff", str(old), str(new))
    assert r.code == 1, r.err   # changes, like diff(1)
    assert "bundle edge: 1.0.0 -> 1.1.0 (amd64)" in r.out
    assert "~ version  v1.33.5+k3s1 -> v1.33.6+k3s1" in r.out
    assert "+ manifests/extra.yaml" in r.out
    assert "- charts/demo-1.0.0.tgz" in r.out and "+ charts/demo-1.1.0.tgz" in r.out
    # the shared archive is the same bytes: not reported
    assert "k3s-airgap-images-amd64.tar.zst" not in r.out
    # a unified diff of the manifest text, read from the bundle and checked by sha256
    assert "-kind: HelmChart # 1.0.0" in r.out and "+kind: HelmChart # 1.1.0" in r.out
    assert "size:" in r.out

    j = bundle(capsys, "diff", str(old), str(new), "--json")
    assert j.code == 1
    doc = json.loads(j.out)
    assert doc["changed"] is True
    changes = {(c["section"], c["key"]): c for c in doc["bundles"]["edge"]["changes"]}
    assert changes[("k3s", "version")]["old"] == "v1.33.5+k3s1"
    assert changes[("files", "manifests/demo.yaml")]["change"] == "changed"
    assert "+kind: HelmChart # 1.1.0" in changes[("files", "manifests/demo.yaml")]["diff"]
    assert changes[("files", "manifests/extra.yaml")]["change"] == "added"


def test_same_bundle_is_no_change(two_bundles: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    old, _ = two_bundles
    copy = tmp_path / "copy.tar"
    shutil.copy(old, copy)
    r = bundle(capsys, "diff", str(old), str(copy))
    assert (r.code, r.out.strip()) == (0, "no changes")


def test_locks_image_moved_added_and_version(world: World, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    moving = world.push(world.factory.image("library/difftest", "1.0", app_size=123))
    folder = tmp_path / "proj"
    world.write_spec(folder, bundle_images=("docker.io/library/difftest:1.0",),
                     charts=[], manifests=())
    lock = ["--spec", str(folder / "bundles.toml"), "-q", "lock", "--cache",
            str(tmp_path / "cache")]
    assert bundle(capsys, *lock).code == 0
    shutil.copy(folder / "bundles.lock", tmp_path / "old.lock")
    moved = world.push(world.factory.image("library/difftest", "1.0", app_size=456))
    spec = folder / "bundles.toml"
    spec.write_text(spec.read_text().replace('version = "1.0.0"', 'version = "1.0.1"')
                    .replace('"docker.io/library/difftest:1.0"',
                             '"docker.io/library/difftest:1.0", "docker.io/library/nginx:1.27"'))
    assert bundle(capsys, *lock, "--update", "docker.io/library/difftest:1.0").code == 0
    r = bundle(capsys, "diff", str(tmp_path / "old.lock"), str(folder / "bundles.lock"),
               "--json")
    assert r.code == 1, r.err
    changes = {(c["section"], c["key"]): c
               for c in json.loads(r.out)["bundles"]["demo"]["changes"]}
    assert changes[("bundle", "version")]["new"] == "1.0.1"
    img = changes[("images", "docker.io/library/difftest:1.0")]
    assert (img["change"], img["old"], img["new"]) == ("changed", moving.digest, moved.digest)
    assert changes[("images", "docker.io/library/nginx:1.27")]["change"] == "added"
    assert ("k3s", "version") not in changes


def test_bad_input_is_a_clear_error(two_bundles: tuple[Path, Path], tmp_path: Path) -> None:
    old, _ = two_bundles
    lock = tmp_path / "bundles.lock"
    lock.write_text("{not json")
    r = bundle_proc("diff", str(old), str(lock), cwd=tmp_path)
    assert r.code == 2 and "not a valid bundles.lock" in r.err and "Traceback" not in r.err
    good_lock = tmp_path / "good.lock"
    good_lock.write_text(json.dumps({"lock_version": 1, "spec_digest": "sha256:" + "0" * 64,
                                     "source_date_epoch": 0, "bundles": {}}))
    r = bundle_proc("diff", str(old), str(good_lock), cwd=tmp_path)
    assert r.code == 2 and "cannot compare a bundle" in r.err
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(old.read_bytes()[:700])
    r = bundle_proc("diff", str(old), str(damaged), cwd=tmp_path)
    assert r.code == 2 and "not a readable bundle" in r.err and "Traceback" not in r.err
