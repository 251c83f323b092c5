"""The images archive by content, pure over bytes: kind choice, exact size known in advance,
valid and deterministic tar/zstd streams; and the format's rule for image archive names."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from bundler.assemble.bundlewrite import StreamMismatch, write_bundle_file
from bundler.assemble.imagearchive import (
    ArchiveImage,
    ArchivePlan,
    Blob,
    layer_is_compressed,
    plan_archives,
    wants_zstd,
)
from installer.errors import FormatError
from installer.format.bundlefmt import (
    Manifest,
    Member,
    check_member_path,
    iter_bundle,
    write_bundle,
)

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR = "application/vnd.oci.image.layer.v1.tar"


def _blob(folder: Path, data: bytes, media_type: str = "") -> Blob:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = folder / digest.split(":")[1]
    path.write_bytes(data)
    return Blob(digest, len(data), path, media_type)


def _image(folder: Path, name: str, layers: list[tuple[bytes, str]]) -> ArchiveImage:
    config = _blob(folder, json.dumps({"n": name}).encode(), "application/json")
    manifest = _blob(folder, json.dumps({"m": name}).encode())
    return ArchiveImage((name,), manifest, "application/vnd.oci.image.manifest.v1+json",
                        (config, *(_blob(folder, d, mt) for d, mt in layers)))


def test_layer_kinds_by_media_type() -> None:
    assert layer_is_compressed(GZ)
    assert layer_is_compressed("application/vnd.oci.image.layer.v1.tar+zstd")
    assert layer_is_compressed("application/vnd.docker.image.rootfs.diff.tar.gzip")
    assert layer_is_compressed("application/x-unknown")
    assert not layer_is_compressed(TAR)
    assert not layer_is_compressed("application/vnd.docker.image.rootfs.diff.tar")


def test_plan_splits_by_content_and_sizes_are_exact(tmp_path: Path) -> None:
    gz = _image(tmp_path, "docker.io/library/a:1", [(b"\x1f\x8b" + b"g" * 5000, GZ)])
    plain = _image(tmp_path, "docker.io/library/b:1", [(b"p" * 70000, TAR), (b"q" * 10, GZ)])
    assert not wants_zstd(gz) and wants_zstd(plain)
    plans = plan_archives([gz, plain], mtime=1_700_000_000)
    assert [(p.zstd, [i.names for i in p.images]) for p in plans] == [
        (False, [("docker.io/library/a:1",)]), (True, [("docker.io/library/b:1",)])]
    tar_plan, zst_plan = plans
    data = b"".join(tar_plan.chunks())
    assert len(data) == tar_plan.tar_size() == tar_plan.size_hint()
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        infos = tar.getmembers()
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    blobs = sorted(b.digest.split(":")[1] for b in (gz.manifest, *gz.blobs))
    assert names == ["blobs", "blobs/sha256", *[f"blobs/sha256/{h}" for h in blobs],
                     "index.json", "oci-layout"]
    assert {i.mtime for i in infos} == {1_700_000_000} and {i.uid for i in infos} == {0}
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == \
        "docker.io/library/a:1"
    packed = b"".join(zst_plan.chunks())
    assert zstandard.get_frame_parameters(packed).window_size <= 1 << 25
    inner = zstandard.ZstdDecompressor().decompressobj().decompress(packed)
    assert len(inner) == zst_plan.tar_size() and len(packed) <= zst_plan.size_hint()
    assert len(packed) < len(inner) // 4
    # deterministic, and the cache key follows everything the bytes depend on
    assert b"".join(zst_plan.chunks()) == packed
    assert ArchivePlan(zst_plan.images, True, 1).key() != zst_plan.key()
    assert ArchivePlan(zst_plan.images, False, zst_plan.mtime).key() != zst_plan.key()


def test_iter_bundle_is_write_bundle_and_refuses_wrong_sizes(tmp_path: Path) -> None:
    datas = {"k3s/k3s": b"k" * 70001, "k3s/install.sh": b"#!/bin/sh\n",
             "images/a.tar": bytes(range(256)) * 120, "manifests/x.yaml": b""}
    kinds = {"k3s/k3s": "k3s-binary", "k3s/install.sh": "install-script",
             "images/a.tar": "images", "manifests/x.yaml": "manifest"}
    members = tuple(Member(p, len(d), hashlib.sha256(d).hexdigest(),
                           0o755 if p.startswith("k3s/") else 0o644, kinds[p])
                    for p, d in sorted(datas.items()))
    m = Manifest(name="x", version="1.0.0", arch="arm64", k3s_version="v1.34.3+k3s1",
                 roles=("server",), lock_digest="sha256:" + "0" * 64, created=1_700_000_000,
                 members=members)
    out = io.BytesIO()
    write_bundle(out, manifest=m, signatures=b"{}", roots=[b"{}"],
                 open_member=lambda mem: io.BytesIO(datas[mem.path]))
    chunks = iter_bundle(manifest=m, signatures=b"{}", roots=[b"{}"],
                         member_chunks=lambda mem: [datas[mem.path][:7], datas[mem.path][7:]])
    assert b"".join(chunks) == out.getvalue()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getnames()[:3] == ["manifest.json", "signatures.json", "roots/1.root.json"]
    for wrong in (b"short", b"k" * 70002):
        def bad(mem: Member, wrong: bytes = wrong) -> list[bytes]:
            return [wrong if mem.path == "k3s/k3s" else datas[mem.path]]
        with pytest.raises(FormatError, match="k3s/k3s"):
            b"".join(iter_bundle(manifest=m, signatures=b"{}", roots=[], member_chunks=bad))
    # the builder's writer: a source that changed after planning never becomes the bundle
    dest = tmp_path / "x.tar"
    sources: dict[str, Callable[[], Iterator[bytes]]] = {
        p: (lambda d=d: iter([d])) for p, d in datas.items()}  # type: ignore[misc]
    write_bundle_file(dest, manifest=m, signatures=b"{}", roots=[b"{}"], sources=sources)
    assert dest.read_bytes() == out.getvalue()
    sources["images/a.tar"] = lambda: iter([b"X" * len(datas["images/a.tar"])])
    dest.unlink()
    with pytest.raises(StreamMismatch, match="images/a.tar changed"):
        write_bundle_file(dest, manifest=m, signatures=b"{}", roots=[], sources=sources)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["images/x-images-arm64.tar", "images/x-images-arm64.tar.zst",
                                  "images/k3s-airgap-images-arm64.tar.gz"])
def test_image_members_must_be_archives_k3s_imports(path: str) -> None:
    check_member_path(path, "images")
    with pytest.raises(FormatError, match="not an image archive"):
        check_member_path(path.split(".tar")[0] + ".txt", "images")
