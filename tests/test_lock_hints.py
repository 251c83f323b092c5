"""Issue 10 defects 2 and 7 against the loopback world: a warm cache never hides an edited
manifest or values file, and every hint names the real cause."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import Result, bundle
from tests.world import World

IMAGES = ("docker.io/library/nginx:1.27", "docker.io/library/alpine:3.20",
          "docker.io/library/busybox:1.37")


def _project(tmp_path: Path, world: World, **spec: Any) -> Path:
    spec.setdefault("bundle_images", IMAGES)
    folder = tmp_path / "proj"
    world.write_spec(folder, **spec)
    return folder


def _run(capsys: pytest.CaptureFixture[str], folder: Path, *args: str) -> Result:
    cmd, *rest = args
    r = bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", cmd,
               "--cache", str(folder / "cache"), *rest)
    assert "Traceback" not in r.err
    return r


def _chart(world: World, **kw: Any) -> dict[str, Any]:
    return {"name": "demo-app", "repo": world.release.charts_url, "version": "0.1.0",
            "namespace": "demo", **kw}


@pytest.mark.parametrize("edited", ["manifests/world-sample.yaml", "values/demo.yaml"])
def test_warm_cache_build_refuses_an_edited_local_file(
        edited: str, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "proj"
    (folder / "values").mkdir(parents=True)
    (folder / "values" / "demo.yaml").write_text("replicaCount: 1\n")
    folder = _project(tmp_path, world, arch=("amd64",),
                      charts=[_chart(world, values=["values/demo.yaml"])])
    assert _run(capsys, folder, "lock").code == 0
    dist = folder / "dist"
    r = _run(capsys, folder, "build", "--arch", "amd64", "--out", str(dist), "--unsigned")
    assert r.code == 0, r.err
    built = (dist / "demo-1.0.0-amd64.tar").read_bytes()
    path = folder / edited
    path.write_text(path.read_text() + "# edited behind the lock\n")
    r = _run(capsys, folder, "build", "--arch", "amd64", "--out", str(dist), "--unsigned")
    assert r.code == 2, r.out
    assert str(path) in r.err and "changed since the lock" in r.err
    assert (dist / "demo-1.0.0-amd64.tar").read_bytes() == built  # nothing replaced


def test_chart_name_typo_says_name_not_version(world: World, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, charts=[_chart(world, name="demo-ap")])
    r = _run(capsys, folder, "lock")
    assert r.code == 3, r.err
    assert "fix the chart name" in r.err and "demo-app" in r.err
    assert "fix the version" not in r.err


def test_broken_yaml_says_fix_the_yaml(world: World, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world)
    (folder / "manifests" / "broken.yaml").write_text("kind: ConfigMap\nmetadata: {name: [\n")
    r = _run(capsys, folder, "lock")
    assert r.code == 9, r.err
    hint = r.err.split("hint:", 1)[1]
    assert "fix the YAML of" in hint and "broken.yaml" in hint
    assert "add the missing images" not in hint and "add them to" not in hint


def test_lock_check_hint_names_the_cause(world: World, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    world.push(world.factory.image("library/hintmove", "1.0", app_size=101))
    folder = _project(tmp_path, world,
                      bundle_images=(*IMAGES, "docker.io/library/hintmove:1.0"))
    assert _run(capsys, folder, "lock").code == 0
    spec = folder / "bundles.toml"
    original = spec.read_text()
    spec.write_text(original.replace('version = "1.0.0"', 'version = "1.0.1"'))
    r = _run(capsys, folder, "lock", "--check")
    assert r.code == 8
    hint = r.err.split("hint:", 1)[1]
    assert "run `bundle lock`" in hint and "--update" not in hint
    spec.write_text(original)
    world.push(world.factory.image("library/hintmove", "1.0", app_size=202))
    r = _run(capsys, folder, "lock", "--check")
    assert r.code == 8
    assert "--update docker.io/library/hintmove:1.0" in r.err.split("hint:", 1)[1]
    assert "REF" not in r.err


def test_lock_update_unknown_ref_is_an_error(world: World, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world)
    assert _run(capsys, folder, "lock").code == 0
    before = (folder / "bundles.lock").read_bytes()
    r = _run(capsys, folder, "lock", "--update", "nosuch")
    assert r.code == 2
    assert "'nosuch'" in r.err and "demo-app" in r.err and "docker.io/library/nginx:1.27" in r.err
    assert (folder / "bundles.lock").read_bytes() == before
    # the short form of a spec image is accepted
    assert _run(capsys, folder, "lock", "--update", "nginx:1.27").code == 0
