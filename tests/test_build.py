"""`bundle build` end to end on the loopback world: shape, reproducibility, import into a real
containerd, caching/resume, and every bad input of the build issue."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from installer.format.bundlefmt import BundleReader
from tests.cli_helpers import Result, bundle
from tests.containerd import Containerd
from tests.world import World
from tests.world.images import ARM64

IMAGES = ("docker.io/library/nginx:1.27", "quay.io/metallb/controller:v0.16.1",
          "docker.io/library/alpine:3.20", "docker.io/library/busybox:1.37")


def _project(tmp_path: Path, world: World, **spec: Any) -> Path:
    spec.setdefault("bundle_images", IMAGES)
    folder = tmp_path / "proj"
    world.write_spec(folder, **spec)
    return folder


def _run(capsys: pytest.CaptureFixture[str], folder: Path, *args: str,
         cache: Path | None = None) -> Result:
    cmd, *rest = args
    if cmd == "build" and "--keys" not in rest and "--unsigned" not in rest:
        rest.append("--unsigned")  # these tests are about building; signing has its own
    return bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", cmd,
                  "--cache", str(cache or folder / "cache"), *rest)


def _locked(capsys: pytest.CaptureFixture[str], tmp_path: Path, world: World,
            **spec: Any) -> Path:
    folder = _project(tmp_path, world, **spec)
    r = _run(capsys, folder, "lock")
    assert r.code == 0, r.err
    return folder


def _build(capsys: pytest.CaptureFixture[str], folder: Path, *extra: str,
           cache: Path | None = None, out: Path | None = None) -> Result:
    return _run(capsys, folder, "build", "--arch", "arm64", "--out",
                str(out or folder / "dist"), "--json", "--unsigned", *extra, cache=cache)


def test_bundle_shape(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _locked(capsys, tmp_path, world)
    r = _build(capsys, folder)
    assert r.code == 0, r.err
    path = folder / "dist" / "demo-1.0.0-arm64.tar"
    assert json.loads(r.out)["bundles"][0]["bundle"] == str(path)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        infos = tar.getmembers()
    assert names[:2] == ["manifest.json", "signatures.json"]
    assert names[2:] == sorted(names[2:])
    assert {i.uid for i in infos} == {0} and {i.uname for i in infos} == {""}
    with open(path, "rb") as f:
        reader = BundleReader(f)
        m = reader.header().manifest
        payload = {mem.path: data.read() for mem, data in reader.payload()}
    assert (m.name, m.version, m.arch, m.k3s_version) == ("demo", "1.0.0", "arm64",
                                                          "v1.34.3+k3s1")
    rel = world.k3s_release
    assert payload["k3s/k3s"] == rel.path("k3s-arm64").read_bytes()
    assert payload["images/k3s-airgap-images-arm64.tar.zst"] == \
        rel.path("k3s-airgap-images-arm64.tar.zst").read_bytes()
    assert payload["charts/demo-app-0.1.0.tgz"] == world.charts["demo-app:0.1.0"].data
    helm = payload["manifests/helmchart-demo-app.yaml"].decode()
    assert "https://%{KUBERNETES_API}%/static/charts/demo-app-0.1.0.tgz" in helm
    assert "targetNamespace: demo" in helm and "kind: HelmChart" in helm
    assert payload["manifests/world-sample.yaml"] == \
        (folder / "manifests" / "world-sample.yaml").read_bytes()
    assert {i.ref for i in m.images} == set(IMAGES)
    nginx = world.image("docker.io/library/nginx:1.27")
    assert {i.ref: i.digest for i in m.images}["docker.io/library/nginx:1.27"] == \
        nginx.manifests[ARM64]
    # gzip layers: a plain tar OCI layout (zstd would only cost CPU), no .tar.zst of ours
    assert "images/demo-images-arm64.tar.zst" not in payload
    archive = payload["images/demo-images-arm64.tar"]
    # OCI layout: single-platform manifests only, every blob once, full names annotated
    layout = tarfile.open(fileobj=io.BytesIO(archive))
    index = json.load(layout.extractfile("index.json"))  # type: ignore[arg-type]
    blob_names = [n for n in layout.getnames() if n.startswith("blobs/sha256/")]
    assert len(blob_names) == len(set(blob_names))
    names_in_index = {d["annotations"]["io.containerd.image.name"] for d in index["manifests"]}
    assert names_in_index == set(IMAGES)
    for d in index["manifests"]:
        assert d["annotations"]["org.opencontainers.image.ref.name"] == \
            d["annotations"]["io.containerd.image.name"]
        assert d["mediaType"].endswith("manifest.v1+json")
    # images sharing the base layer store it once
    base = world.factory.base_layer(ARM64).digest.split(":")[1]
    assert blob_names.count(f"blobs/sha256/{base}") == 1
    # the USB-stick extras
    assert (folder / "dist" / "airgap-install.pyz").is_file()
    assert "demo-1.0.0-arm64.tar" in (folder / "dist" / "INSTALL.txt").read_text()


def test_reproducible_across_cache_umask_jobs_and_time(world: World, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = _locked(capsys, tmp_path, world)
    r1 = _build(capsys, folder, "--jobs", "1", cache=tmp_path / "c1", out=tmp_path / "o1")
    old = os.umask(0o077)
    try:
        r2 = _build(capsys, folder, "--jobs", "16", cache=tmp_path / "c2", out=tmp_path / "o2")
    finally:
        os.umask(old)
    assert r1.code == 0 and r2.code == 0, r1.err + r2.err
    a = (tmp_path / "o1" / "demo-1.0.0-arm64.tar").read_bytes()
    b = (tmp_path / "o2" / "demo-1.0.0-arm64.tar").read_bytes()
    assert a == b
    assert (tmp_path / "o1" / "airgap-install.pyz").read_bytes() == \
        (tmp_path / "o2" / "airgap-install.pyz").read_bytes()


def test_images_import_into_real_containerd(world: World, tmp_path: Path, containerd: Containerd,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    nginx = world.image("docker.io/library/nginx:1.27")
    digest_ref = f"docker.io/library/busybox@{world.image('docker.io/library/busybox:1.37').digest}"
    folder = _locked(capsys, tmp_path, world, bundle_images=(*IMAGES, digest_ref))
    assert _build(capsys, folder).code == 0
    with open(folder / "dist" / "demo-1.0.0-arm64.tar", "rb") as f:
        reader = BundleReader(f)
        manifest = reader.header().manifest
        archive = tmp_path / "images.tar"
        for mem, data in reader.payload():
            if mem.path == "images/demo-images-arm64.tar":
                archive.write_bytes(data.read())
    containerd.remove_all()
    p = containerd.import_tar(archive)
    assert p.returncode == 0, p.stderr.decode()
    imported = containerd.images()
    for entry in manifest.images:
        want = entry.ref if "@" not in entry.ref else digest_ref
        assert imported.get(want) == entry.digest, (want, imported)
    assert imported["docker.io/library/nginx:1.27"] == nginx.manifests[ARM64]
    # arm64 content only: the platform reported for each image is linux/arm64
    listing = containerd.ctr("images", "ls").stdout.decode()
    for line in listing.splitlines()[1:]:
        assert "linux/arm64" in line and "linux/amd64" not in line, line
    # and the K3s airgap tarball from the release imports too
    with open(folder / "dist" / "demo-1.0.0-arm64.tar", "rb") as f:
        reader = BundleReader(f)
        reader.header()
        for mem, data in reader.payload():
            if mem.path == "images/k3s-airgap-images-arm64.tar.zst":
                archive.write_bytes(data.read())
    assert containerd.import_zst(archive).returncode == 0


def test_warm_rebuild_downloads_nothing(world: World, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world)
    cache = tmp_path / "cache"
    assert _run(capsys, folder, "lock", cache=tmp_path / "lockcache").code == 0
    cold = json.loads(_build(capsys, folder, cache=cache).out)["bundles"][0]
    warm = json.loads(_build(capsys, folder, cache=cache).out)["bundles"][0]
    assert cold["downloads"] > 0 and warm["downloads"] == 0


def test_damaged_cache_blob_is_fetched_again(world: World, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = _locked(capsys, tmp_path, world)
    cache = tmp_path / "cache"
    assert _build(capsys, folder, cache=cache).code == 0
    good = (folder / "dist" / "demo-1.0.0-arm64.tar").read_bytes()
    layer = world.image("docker.io/library/nginx:1.27").layers[ARM64][-1].split(":")[1]
    blob = cache / "blobs" / "sha256" / layer
    blob.write_bytes(b"X" + blob.read_bytes()[1:])
    shutil.rmtree(cache / "archives")
    r = _build(capsys, folder, cache=cache)
    assert r.code == 0 and json.loads(r.out)["bundles"][0]["downloads"] >= 1
    assert (folder / "dist" / "demo-1.0.0-arm64.tar").read_bytes() == good


def test_corrupt_blob_never_cached(world: World, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    proxy = world.fault_proxy
    folder = _locked(capsys, tmp_path, world, endpoint=proxy.url)
    layer = world.image("docker.io/library/nginx:1.27").layers[ARM64][-1]
    proxy.clear()
    proxy.add_rule(f"/blobs/{layer}", ("corrupt",), count=None)
    cache = tmp_path / "fresh-cache"
    r = _build(capsys, folder, cache=cache)
    proxy.clear()
    assert r.code == 3, r.err
    assert layer in r.err and "never matched its digest" in r.err
    assert not (cache / "blobs" / "sha256" / layer.split(":")[1]).exists()
    assert not (folder / "dist" / "demo-1.0.0-arm64.tar").exists()


def test_truncated_download_resumes_with_range(world: World, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    proxy = world.fault_proxy
    folder = _locked(capsys, tmp_path, world, endpoint=proxy.url)
    layer = world.image("docker.io/library/nginx:1.27").layers[ARM64][-1]
    proxy.clear()
    proxy.add_rule(f"/blobs/{layer}", ("truncate", 100), count=1)
    r = _build(capsys, folder, cache=tmp_path / "fresh")
    tries = proxy.requests(f"/blobs/{layer}", method="GET")
    proxy.clear()
    assert r.code == 0, r.err
    assert [t.range for t in tries] == [None, "bytes=100-"]


def test_tag_moved_after_lock_builds_locked_digest_and_frozen(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world.push(world.factory.image("library/drift", "1", app_size=10))
    folder = _locked(capsys, tmp_path, world, bundle_images=("docker.io/library/drift:1",),
                     manifests=(), charts=[])
    locked = json.loads((folder / "bundles.lock").read_text())["bundles"]["demo"]["images"][0]
    world.push(world.factory.image("library/drift", "1", app_size=20))
    cache = tmp_path / "cache"
    r = _build(capsys, folder, cache=cache)
    assert r.code == 0, r.err
    with open(folder / "dist" / "demo-1.0.0-arm64.tar", "rb") as f:
        m = BundleReader(f).header().manifest
    assert m.images[0].digest == locked["platforms"]["arm64"]["digest"]
    # --frozen from a warm cache needs no registry at all
    spec = folder / "bundles.toml"
    spec_text = spec.read_text()
    r = _build(capsys, folder, "--frozen", cache=cache, out=tmp_path / "frozen")
    assert r.code == 0, r.err
    # --frozen with an empty cache and the registry unreachable fails, naming the artifact
    dead = spec_text.replace(world.registry.url, "http://127.0.0.1:9")
    dead = dead.replace(world.release.url, "http://127.0.0.1:9")
    spec.write_text(dead)
    shutil.copy(folder / "bundles.lock", tmp_path / "lock.bak")
    r = _build(capsys, folder, "--frozen", cache=tmp_path / "empty", out=tmp_path / "f2")
    assert r.code in (2, 5), r.err
    assert "lock was made from another spec" in r.err or "failed after" in r.err


@pytest.mark.parametrize("case", ["missing-lock", "stale-lock", "arch-not-locked",
                                  "manifest-edited"])
def test_bad_lock_inputs(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         case: str) -> None:
    arch = ("amd64",) if case == "arch-not-locked" else ("amd64", "arm64")
    folder = _locked(capsys, tmp_path, world, arch=arch)
    if case == "missing-lock":
        (folder / "bundles.lock").unlink()
        needle = "run `bundle lock` first"
    elif case == "stale-lock":
        spec = folder / "bundles.toml"
        spec.write_text(spec.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
        needle = "lock was made from another spec"
    elif case == "arch-not-locked":
        needle = "locked for amd64, not arm64"
    else:
        (folder / "manifests" / "world-sample.yaml").write_text("changed: true\n")
        needle = "changed since the lock was written"
    r = _run(capsys, folder, "build", "--arch", "arm64", "--bundle", "demo",
             "--out", str(folder / "dist"), "--unsigned")
    assert r.code == 2 and needle in r.err
    assert not (folder / "dist" / "demo-1.0.0-arm64.tar").exists()


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True)
    return p.returncode == 0


@pytest.mark.parametrize("options,needle", [("size=48k", "free space"), ("ro,size=1m", "cannot")])
def test_output_full_or_not_writable(world: World, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str], options: str,
                                     needle: str) -> None:
    folder = _locked(capsys, tmp_path, world)
    out = tmp_path / "small"
    if not _mount_tmpfs(out, options):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        r = _build(capsys, folder, out=out / "dist" if "ro" not in options else out)
        assert r.code == 6, r.err
        assert needle in r.err
        assert not any(p.name.endswith(".tar") for p in out.rglob("*"))
        assert not any(p.name.startswith(".tmp-") for p in out.rglob("*"))
    finally:
        subprocess.run(["umount", str(out)], check=False)


def test_free_space_margin_refuses_before_writing(world: World, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The bundle itself would fit, the margin would not: refused up front, nothing written."""
    folder = _locked(capsys, tmp_path, world)
    out = tmp_path / "tight"
    if not _mount_tmpfs(out, "size=2m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        r = _build(capsys, folder, out=out)
        assert r.code == 6 and "not enough free space" in r.err and "MiB" in r.err
        assert [p.name for p in out.iterdir()] == []
    finally:
        subprocess.run(["umount", str(out)], check=False)


def test_inspect_json_and_text(world: World, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _locked(capsys, tmp_path, world)
    assert _build(capsys, folder).code == 0
    path = folder / "dist" / "demo-1.0.0-arm64.tar"
    os.chmod(path, 0o444)
    r = bundle(capsys, "inspect", str(path), "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["arch"] == "arm64" and doc["k3s"]["version"] == "v1.34.3+k3s1"
    assert doc["signatures"] == 0
    assert {m["path"] for m in doc["members"]} >= {"k3s/k3s", "k3s/install.sh"}
    r = bundle(capsys, "inspect", str(path))
    assert "UNSIGNED" in r.out and "docker.io/library/nginx:1.27" in r.out
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar at all" * 100)
    r = bundle(capsys, "inspect", str(broken))
    assert r.code == 3 and "broken.tar" in r.err


# ------------------------------------------------------------- archive format by content

PLAIN_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _push_uncompressed_image(world: World, repository: str, tag: str) -> tuple[str, str]:
    """An arm64 image whose layers are plain tar (as a Docker engine exports them); returns
    (reference, platform manifest digest)."""
    import requests

    from tests.world.oci import (
        OCI_CONFIG,
        OCI_INDEX,
        OCI_MANIFEST,
        LayerFile,
        bytes_blob,
        json_blob,
        tar_bytes,
    )
    from tests.world.push import push_content
    layers = [bytes_blob(tar_bytes([LayerFile(f"opt/plain/{n}.txt",
                                              data=(f"line {n}\n" * 20000).encode())]),
                         PLAIN_LAYER) for n in range(2)]
    config = json_blob({"architecture": "arm64", "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]}},
                       OCI_CONFIG)
    manifest = json_blob({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": config.descriptor(),
                          "layers": [b.descriptor() for b in layers]}, OCI_MANIFEST)
    index = json_blob({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        manifest.descriptor(platform={"architecture": "arm64", "os": "linux"})]}, OCI_INDEX)
    with requests.Session() as s:
        s.trust_env = False
        push_content(s, world.registry.url, repository, blobs=[*layers, config],
                     children=[manifest], top=index, tags=[tag])
    return f"docker.io/{repository}:{tag}", manifest.digest


def _members(bundle_file: Path) -> tuple[Any, dict[str, bytes]]:
    with open(bundle_file, "rb") as f:
        reader = BundleReader(f)
        m = reader.header().manifest
        return m, {mem.path: data.read() for mem, data in reader.payload()}


def test_uncompressed_layers_go_to_a_zstd_archive_and_both_import(
        world: World, tmp_path: Path, containerd: Containerd,
        capsys: pytest.CaptureFixture[str]) -> None:
    import zstandard
    ref, digest = _push_uncompressed_image(world, "library/plainlayers", "1")
    folder = _locked(capsys, tmp_path, world, bundle_images=(*IMAGES, ref), arch=("arm64",))
    r = _build(capsys, folder)
    assert r.code == 0, r.err
    m, payload = _members(folder / "dist" / "demo-1.0.0-arm64.tar")
    where = {i.ref: i.archive for i in m.images}
    assert where[ref] == "images/demo-images-arm64.tar.zst"
    assert {where[i] for i in IMAGES} == {"images/demo-images-arm64.tar"}
    packed = payload["images/demo-images-arm64.tar.zst"]
    assert zstandard.get_frame_parameters(packed).window_size <= 1 << 25  # k3s#2941
    inner = zstandard.ZstdDecompressor().decompressobj().decompress(packed)
    assert len(packed) < len(inner) / 4   # it paid: plain tar layers compress
    layout = tarfile.open(fileobj=io.BytesIO(inner))
    index = json.load(layout.extractfile("index.json"))  # type: ignore[arg-type]
    assert [d["annotations"]["io.containerd.image.name"] for d in index["manifests"]] == [ref]
    zst, tar = tmp_path / "packed.tar.zst", tmp_path / "plain.tar"
    zst.write_bytes(packed)
    tar.write_bytes(payload["images/demo-images-arm64.tar"])
    containerd.remove_all()
    p = containerd.import_zst(zst)
    assert p.returncode == 0, p.stderr.decode()
    p = containerd.import_tar(tar)
    assert p.returncode == 0, p.stderr.decode()
    imported = containerd.images()
    assert imported[ref] == digest
    assert imported["docker.io/library/nginx:1.27"] == \
        world.image("docker.io/library/nginx:1.27").manifests[ARM64]


# ------------------------------------------------------------- nothing changed, nothing written

def test_unchanged_rebuild_is_up_to_date_and_force_rewrites(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _locked(capsys, tmp_path, world)
    cache = tmp_path / "cache"
    assert _build(capsys, folder, cache=cache).code == 0
    path = folder / "dist" / "demo-1.0.0-arm64.tar"
    good = path.read_bytes()
    before = os.stat(path)
    extras = {p: os.stat(folder / "dist" / p).st_ino for p in ("airgap-install.pyz",
                                                                "INSTALL.txt")}
    r = _build(capsys, folder, cache=cache)
    assert r.code == 0, r.err
    res = json.loads(r.out)["bundles"][0]
    assert res["up_to_date"] is True and res["downloads"] == 0
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert {p: os.stat(folder / "dist" / p).st_ino for p in extras} == extras
    text = _run(capsys, folder, "build", "--arch", "arm64", "--out", str(folder / "dist"),
                cache=cache)
    assert text.code == 0 and f"up to date {path}" in text.out
    # --force writes it again (a new file), with the same bytes
    r = _build(capsys, folder, "--force", cache=cache)
    assert r.code == 0 and json.loads(r.out)["bundles"][0]["up_to_date"] is False
    assert os.stat(path).st_ino != before.st_ino and path.read_bytes() == good
    # a damaged bundle with the right envelope is not "up to date": rebuilt
    data = bytearray(good)
    data[-20000] ^= 0xFF
    path.write_bytes(bytes(data))
    r = _build(capsys, folder, cache=cache)
    assert r.code == 0 and json.loads(r.out)["bundles"][0]["up_to_date"] is False
    assert path.read_bytes() == good


def test_up_to_date_even_with_a_fresh_cache(world: World, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Without the cached archive digest the blobs are fetched and hashed, but an identical
    bundle is still left in place."""
    folder = _locked(capsys, tmp_path, world)
    assert _build(capsys, folder, cache=tmp_path / "c1").code == 0
    ino = os.stat(folder / "dist" / "demo-1.0.0-arm64.tar").st_ino
    r = _build(capsys, folder, cache=tmp_path / "c2")
    assert r.code == 0 and json.loads(r.out)["bundles"][0]["up_to_date"] is True
    assert os.stat(folder / "dist" / "demo-1.0.0-arm64.tar").st_ino == ino


# ------------------------------------------------------------- nothing half-written

def test_sigstore_without_credential_writes_nothing(world: World, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "SIGSTORE_ID_TOKEN",
                "GITLAB_CI", "BUILDKITE", "CIRCLECI", "GOOGLE_SERVICE_ACCOUNT_NAME"):
        monkeypatch.delenv(var, raising=False)
    folder = _locked(capsys, tmp_path, world)
    cache = tmp_path / "fresh"
    r = _build(capsys, folder, "--sigstore", cache=cache)
    assert r.code == 2 and "no ambient OIDC credential" in r.err, r.err
    dist = folder / "dist"
    assert not dist.exists() or list(dist.iterdir()) == []
    assert not (cache / "blobs").exists() or not any((cache / "blobs").rglob("*"))


def test_second_arch_failing_keeps_the_first_with_installer(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """amd64 is built, then an arm64 blob never verifies: the amd64 bundle is complete and
    the installer and INSTALL.txt are beside it; nothing of arm64 is left."""
    proxy = world.fault_proxy
    folder = _locked(capsys, tmp_path, world, endpoint=proxy.url)
    layer = world.image("docker.io/library/nginx:1.27").layers[ARM64][-1]
    proxy.clear()
    proxy.add_rule(f"/blobs/{layer}", ("corrupt",), count=None)
    try:
        r = _run(capsys, folder, "build", "--arch", "amd64", "--arch", "arm64", "--out",
                 str(folder / "dist"), cache=tmp_path / "fresh")
    finally:
        proxy.clear()
    assert r.code == 3, r.err
    dist = folder / "dist"
    assert sorted(p.name for p in dist.iterdir()) == [
        "INSTALL.txt", "SHA256SUMS", "airgap-install.pyz", "demo-1.0.0-amd64.tar"]
    assert "demo-1.0.0-amd64.tar" in (dist / "INSTALL.txt").read_text()


def test_disk_full_for_second_arch_refused_before_writing(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.world.images import AMD64
    bulk = world.push(world.factory.image("library/bulk", "1", platforms=[AMD64, ARM64],
                                          app_size=3_000_000))
    folder = _locked(capsys, tmp_path, world,
                     bundle_images=(*IMAGES, f"docker.io/{bulk.ref}"))
    probe = tmp_path / "probe"
    assert _run(capsys, folder, "build", "--arch", "amd64", "--out", str(probe)).code == 0
    one = sum(p.stat().st_size for p in probe.iterdir())
    out = tmp_path / "one-arch-only"
    # room for one arch (~3.5 MB) and the 4 MiB margin, not for two
    if not _mount_tmpfs(out, f"size={4 * 1024 * 1024 + one * 3 // 2}"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        r = _run(capsys, folder, "build", "--arch", "amd64", "--arch", "arm64", "--out",
                 str(out))
        assert r.code == 6 and "not enough free space" in r.err, r.err
        assert [p.name for p in out.iterdir()] == []
    finally:
        subprocess.run(["umount", str(out)], check=False)
