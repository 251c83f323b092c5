"""Images from a local Docker engine (`docker-daemon:NAME:TAG`, issue 13), with a real dockerd
started here: pull from the loopback registry into it, tag locally, lock, build, import into a
real containerd with the locked digests; reproducible bytes; and every bad input."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.cli_helpers import Result, bundle, bundle_proc_rss
from tests.containerd import Containerd
from tests.world import ARM64, World
from tests.world.dockerd import Dockerd
from tests.world.oci import OCI_CONFIG, LayerFile, build_layer, json_blob
from tests.world.push import push_content

LOCAL = "local/app:1"
REF = "docker-daemon:docker.io/local/app:1"
REGISTRY_IMAGES = ("docker.io/library/nginx:1.27", "quay.io/metallb/controller:v0.16.1",
                   "docker.io/library/alpine:3.20", "docker.io/library/busybox:1.37")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SOURCE = "docker.io/library/nginx:1.28"    # what local/app:1 is, pulled for linux/arm64


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed: apt-get install docker.io (.ci/setup does)")
    with Dockerd() as d:
        yield d


@pytest.fixture(scope="module")
def engine(dockerd: Dockerd, world: World) -> Iterator[docker.DockerClient]:
    """The engine with local/app:1 = nginx:1.28 for linux/arm64, from the loopback registry."""
    client = docker.DockerClient(base_url=dockerd.host)
    _pull_as(client, world, SOURCE, LOCAL)
    yield client
    client.close()


def _pull_as(client: docker.DockerClient, world: World, public: str, local: str,
             platform: str = "linux/arm64") -> Any:
    path = public.split("/", 1)[1]
    repo, tag = path.rsplit(":", 1)
    image = client.images.pull(f"{world.registry.host}/{repo}", tag=tag, platform=platform)
    name, _, local_tag = local.rpartition(":")
    assert image.tag(name, local_tag)
    return image


@pytest.fixture
def on_engine(dockerd: Dockerd, monkeypatch: pytest.MonkeyPatch) -> Dockerd:
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    return dockerd


def _project(tmp_path: Path, world: World, *, images: tuple[str, ...] = (REF,),
             arch: tuple[str, ...] = ("arm64",)) -> Path:
    folder = tmp_path / "proj"
    world.write_spec(folder, bundle_images=(*REGISTRY_IMAGES, *images), arch=arch)
    return folder


def _run(capsys: pytest.CaptureFixture[str], folder: Path, *args: str,
         cache: Path | None = None) -> Result:
    cmd, *rest = args
    return bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", cmd,
                  "--cache", str(cache or folder / "cache"), *rest)


def _build(capsys: pytest.CaptureFixture[str], folder: Path, out: Path, *,
           cache: Path | None = None) -> Result:
    return _run(capsys, folder, "build", "--arch", "arm64", "--out", str(out), "--unsigned",
                cache=cache)


def _locked_image(folder: Path) -> dict[str, Any]:
    lock = json.loads((folder / "bundles.lock").read_text())
    found = [i for i in lock["bundles"]["demo"]["images"] if i["ref"] == REF]
    assert len(found) == 1, lock["bundles"]["demo"]["images"]
    return dict(found[0])


def test_lock_build_import(world: World, engine: docker.DockerClient, on_engine: Dockerd,
                           containerd: Containerd, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world)
    r = _run(capsys, folder, "lock")
    assert r.code == 0, r.err
    locked = _locked_image(folder)
    plat = locked["platforms"]["arm64"]
    assert locked["digest"] == plat["digest"]
    assert locked["media_type"] == plat["media_type"] == OCI_MANIFEST
    # the engine's image ID is the registry's arm64 config: same bytes, same digest
    source = world.image(SOURCE)
    assert plat["config"] == source.configs["linux/arm64"] == engine.images.get(LOCAL).id

    r = _build(capsys, folder, folder / "dist")
    assert r.code == 0, r.err
    path = folder / "dist" / "demo-1.0.0-arm64.tar"
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        entry = next(i for i in manifest["images"] if i["ref"] == REF)
        archive = folder / "engine-images.tar.zst"
        archive.write_bytes(tar.extractfile(entry["archive"]).read())  # type: ignore[union-attr]
    assert entry["digest"] == plat["digest"] and entry["archive"].endswith(".tar.zst")
    containerd.remove_all()
    p = containerd.import_zst(archive)
    assert p.returncode == 0, p.stderr.decode()
    assert containerd.images()["docker.io/local/app:1"] == plat["digest"]
    # the layers containerd holds are the engine's uncompressed layer tars: the diff_ids
    content = containerd.ctr("content", "ls").stdout.decode()
    manifest_doc = json.loads(containerd.ctr("content", "get", plat["digest"]).stdout)
    layers = [ly["digest"] for ly in manifest_doc["layers"]]
    assert layers and all(d in content for d in layers)
    config = json.loads(containerd.ctr("content", "get", plat["config"]).stdout)
    assert layers == config["rootfs"]["diff_ids"]
    assert manifest_doc["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"


def test_same_engine_content_same_bytes(world: World, engine: docker.DockerClient,
                                        on_engine: Dockerd, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world)
    assert _run(capsys, folder, "lock").code == 0
    first = _build(capsys, folder, tmp_path / "a")
    assert first.code == 0, first.err
    # a cold cache: every engine blob is exported again and must give the same bytes
    second = _build(capsys, folder, tmp_path / "b", cache=tmp_path / "cold-cache")
    assert second.code == 0, second.err
    a = (tmp_path / "a" / "demo-1.0.0-arm64.tar").read_bytes()
    assert a == (tmp_path / "b" / "demo-1.0.0-arm64.tar").read_bytes()
    # with every blob cached, the build needs no engine at all
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    third = _build(capsys, folder, tmp_path / "c")
    assert third.code == 0, third.err
    assert a == (tmp_path / "c" / "demo-1.0.0-arm64.tar").read_bytes()


def test_wrong_arch_refused(world: World, engine: docker.DockerClient, on_engine: Dockerd,
                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, arch=("amd64", "arm64"))
    r = _run(capsys, folder, "lock")
    assert r.code == 3, r.err
    assert REF in r.err and "linux/arm64 only" in r.err and "linux/amd64" in r.err
    assert "docker pull --platform linux/amd64" in r.err and "Traceback" not in r.err
    assert not (folder / "bundles.lock").exists()


def test_missing_image_refused(world: World, engine: docker.DockerClient, on_engine: Dockerd,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, images=("docker-daemon:local/absent:2",))
    r = _run(capsys, folder, "lock")
    assert r.code == 3, r.err
    assert "no image docker.io/local/absent:2 in the Docker engine" in r.err
    assert "docker build -t docker.io/local/absent:2" in r.err and "Traceback" not in r.err
    assert not (folder / "bundles.lock").exists()


def test_engine_unreachable(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    folder = _project(tmp_path, world)
    r = _run(capsys, folder, "lock")
    assert r.code == 6, r.err
    assert f"cannot reach the Docker engine at unix://{tmp_path}/no-engine.sock" in r.err
    assert "DOCKER_HOST" in r.err and "Traceback" not in r.err


def test_engine_image_changed_after_lock(world: World, engine: docker.DockerClient,
                                         on_engine: Dockerd, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _pull_as(engine, world, SOURCE, "local/moving:1")
    folder = _project(tmp_path, world, images=("docker-daemon:local/moving:1",))
    assert _run(capsys, folder, "lock").code == 0
    _pull_as(engine, world, "docker.io/library/nginx:1.27", "local/moving:1")  # tag moved
    r = _build(capsys, folder, tmp_path / "dist", cache=tmp_path / "cold-cache")
    assert r.code == 8, r.err
    assert "local/moving:1 changed since bundles.lock was written" in r.err
    assert "bundle lock --update docker-daemon:docker.io/local/moving:1" in r.err
    assert not list((tmp_path / "dist").glob("*.tar"))
    r = _run(capsys, folder, "lock", "--check")
    assert r.code == 8 and "docker-daemon:docker.io/local/moving:1" in r.err, r.err
    # the hint's fix works: the new content is pinned and builds
    r = _run(capsys, folder, "lock", "--update", "docker-daemon:local/moving:1")
    assert r.code == 0, r.err
    r = _build(capsys, folder, tmp_path / "dist", cache=tmp_path / "cold-cache")
    assert r.code == 0, r.err


def test_spec_refuses_digest_and_double_listing(world: World, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, images=("docker-daemon:local/app@sha256:" + "0" * 64,))
    r = _run(capsys, folder, "lock")
    assert r.code == 2 and "pinned by bundles.lock, not by a digest" in r.err, r.err
    folder = _project(tmp_path / "twice", world, images=("docker-daemon:alpine:3.20",))
    r = _run(capsys, folder, "lock")
    assert r.code == 2, r.err
    assert "docker.io/library/alpine:3.20 twice: from a registry and from the Docker engine" \
        in r.err


BIG = 256 * 1024 * 1024
# wait4's ru_maxrss is the largest of the process and its waited-for children, and discovery
# renders charts in a child running Helm's Go engine (about 210 MB here): measured, the child
# sets the figure (212 MB for lock and build alike; the builder alone: lock 95 MB, build 67 MB);
# buffering the 256 MiB layer puts the builder itself at 554 / 561 MB, far above the limit.
RSS_LIMIT_MB = 320


def test_large_image_streams_with_flat_memory(world: World, engine: docker.DockerClient,
                                              dockerd: Dockerd, tmp_path: Path) -> None:
    image = world.factory.image("big/app", "1", platforms=[ARM64], single=True, app_size=BIG)
    world.push(image)
    _pull_as(engine, world, "docker.io/big/app:1", "local/big:1")
    folder = _project(tmp_path, world, images=("docker-daemon:local/big:1",))
    env = {"DOCKER_HOST": dockerd.host}
    spec = ("--spec", str(folder / "bundles.toml"), "-q")
    lock, lock_rss = bundle_proc_rss(*spec, "lock", "--cache", str(tmp_path / "c1"),
                                     cwd=folder, env=env)
    assert lock.code == 0, lock.err
    # a cold cache: the build exports the image again, and writes it into the bundle
    built, build_rss = bundle_proc_rss(*spec, "build", "--arch", "arm64", "--unsigned",
                                       "--out", str(tmp_path / "dist"), "--cache",
                                       str(tmp_path / "c2"), cwd=folder, env=env)
    assert built.code == 0, built.err
    assert (tmp_path / "dist" / "demo-1.0.0-arm64.tar").stat().st_size > BIG
    assert lock_rss < RSS_LIMIT_MB and build_rss < RSS_LIMIT_MB, (lock_rss, build_rss)


def test_repeated_layer(world: World, engine: docker.DockerClient, on_engine: Dockerd,
                        containerd: Containerd, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    """An image whose layers are [A, B, A]: the engine's export writes the second A as a
    symlink to the first, and before it in the stream."""
    a, b = (build_layer([LayerFile(n, data=f"{n}\n".encode())]) for n in ("a", "b"))
    layers = [a, b, a]
    config = json_blob({"architecture": "arm64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [ly.diff_id for ly in layers]}}, OCI_CONFIG)
    top = json_blob({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                     "config": config.descriptor(),
                     "layers": [ly.descriptor() for ly in layers]}, OCI_MANIFEST)
    push_content(world.registry.session(), world.registry.url, "dup/app",
                 blobs=[*layers, config], children=[], top=top, tags=["1"])
    _pull_as(engine, world, "docker.io/dup/app:1", "local/app:1")
    try:
        folder = _project(tmp_path, world)
        r = _run(capsys, folder, "lock")
        assert r.code == 0, r.err
        plat = _locked_image(folder)["platforms"]["arm64"]
        assert plat["config"] == config.digest
        r = _build(capsys, folder, folder / "dist")
        assert r.code == 0, r.err
        with tarfile.open(folder / "dist" / "demo-1.0.0-arm64.tar") as tar:
            name = next(n for n in tar.getnames() if n.endswith(".tar.zst"))
            archive = tmp_path / "engine.tar.zst"
            archive.write_bytes(tar.extractfile(name).read())  # type: ignore[union-attr]
        containerd.remove_all()
        p = containerd.import_zst(archive)
        assert p.returncode == 0, p.stderr.decode()
        assert containerd.images()["docker.io/local/app:1"] == plat["digest"]
        doc = json.loads(containerd.ctr("content", "get", plat["digest"]).stdout)
        assert [ly["digest"] for ly in doc["layers"]] == [ly.diff_id for ly in layers]
    finally:
        _pull_as(engine, world, SOURCE, LOCAL)   # the module's local/app:1 again
