"""`bundle images` on a spec with no bundles.lock yet: charts fetched from the test world's
chart repository as `bundle lock` would, nothing written beside the spec, every image listed
with where it was found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import bundle
from tests.world import World


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_images_without_a_lock_lists_each_image_and_where(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "proj"
    world.write_spec(folder)  # demo-app 0.1.0 from the world's chart repo, one manifest
    before = _tree(folder)
    cache = tmp_path / "cache"
    args = ["--spec", str(folder / "bundles.toml"), "-q", "images", "--cache", str(cache)]
    r = bundle(capsys, *args)
    assert r.code == 0, r.err
    assert not (folder / "bundles.lock").exists()
    assert _tree(folder) == before  # the spec folder is unchanged
    assert any(p.is_file() for p in cache.rglob("*"))  # the chart went to the cache only
    lines = r.out.splitlines()
    assert "bundle demo (no lock: as" in lines[0]
    chart = "demo-app@0.1.0:demo-app/templates/deployment.yaml"
    for image, origin in (
            ("docker.io/library/alpine:3.20", "proj/manifests/world-sample.yaml: Deployment/"
                                              "default/world-sample: spec.template.spec."
                                              "containers[0].image"),
            ("docker.io/library/nginx:1.27", f"{chart}: Deployment/demo-app-demo-app: "
                                             "spec.template.spec.containers[0].image"),
            ("docker.io/library/busybox:1.37", f"{chart}: Deployment/demo-app-demo-app: "
                                               "spec.template.spec.initContainers[0].image")):
        at = lines.index(f"  {image}")
        assert origin in lines[at + 1] and lines[at + 1].startswith("    <- "), lines
    r = bundle(capsys, *args, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)["demo"]
    where = {g["image"]: [(ref["source"], ref["location"]) for ref in g["references"]]
             for g in report["images"]}
    assert set(where) == {"docker.io/library/alpine:3.20", "docker.io/library/nginx:1.27",
                          "docker.io/library/busybox:1.37"}
    assert [s for s, _ in where["docker.io/library/nginx:1.27"]] == [chart]
    assert where["docker.io/library/busybox:1.37"] == [
        (chart, "Deployment/demo-app-demo-app: spec.template.spec.initContainers[0].image")]
    assert any(s.endswith("manifests/world-sample.yaml")
               for s, _ in where["docker.io/library/alpine:3.20"])
    assert report["ok"] is True
    assert _tree(folder) == before and not (folder / "bundles.lock").exists()


def test_images_without_a_lock_reports_images_the_spec_lacks(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "proj"
    world.write_spec(folder, bundle_images=("docker.io/library/nginx:1.27",))
    before = _tree(folder)
    r = bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", "images",
               "--cache", str(tmp_path / "cache"), "--json")
    assert r.code == 9
    details = json.loads(r.out)["error"]["details"]["demo"]
    assert {g["image"] for g in details["missing"]} == {"docker.io/library/alpine:3.20",
                                                        "docker.io/library/busybox:1.37"}
    assert _tree(folder) == before
