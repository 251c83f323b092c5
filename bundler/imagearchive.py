"""The per-arch images archive: one OCI image layout, zstd-compressed, that K3s imports as is.

Shape (K3S-AIRGAP-FACTS.md): ``oci-layout``, ``index.json`` with one single-platform manifest
descriptor per image name, each annotated with the fully qualified name under both
``io.containerd.image.name`` and ``org.opencontainers.image.ref.name`` (K3s does not
normalise OCI ref names on import); ``blobs/sha256/<hex>`` holding every blob once even when
images share layers. No multi-platform index inside, so no entry can point at absent blobs
(k3s#10132). Compressed with zstd at a window K3s's decoder accepts (<= 2^25, k3s#2941).

Deterministic: sorted names, fixed mtime, uid/gid 0, fixed compression parameters.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from installer.fsio import atomic_output

from .oci import OCI_INDEX

ZSTD_LEVEL = 3
ZSTD_WINDOW_LOG = 23          # 8 MiB; K3s accepts at most 25 (32 MiB)
# Single-threaded: part of the reproducible output, and bounded memory. Two workers cost
# ~250 MB of buffers for no speed on gzip layers, which zstd cannot shrink anyway
# (benchmarks/README.md).
ZSTD_THREADS = 0
MAX_WINDOW_LOG = 25
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class ArchiveImage:
    names: tuple[str, ...]      # fully qualified names to register (tag and/or digest form)
    manifest: Blob              # the single-platform manifest
    media_type: str
    blobs: tuple[Blob, ...]     # config and layers


def image_names(ref: str) -> tuple[str, ...]:
    """Names under which an image is imported.

    ``repo:tag`` -> itself. ``repo@sha256:X`` and ``repo:tag@sha256:X`` -> ``repo@sha256:X``
    (what the CRI looks up for a digest reference), plus ``repo:tag`` when a tag was given.
    """
    if "@" not in ref:
        return (ref,)
    name_tag, digest = ref.split("@", 1)
    last = name_tag.rsplit("/", 1)[-1]
    name = name_tag.rsplit(":", 1)[0] if ":" in last else name_tag
    names = [f"{name}@{digest}"]
    if ":" in last:
        names.append(name_tag)
    return tuple(names)


def layout_key(images: Iterable[ArchiveImage]) -> str:
    """A digest of everything that determines the archive's bytes (cache key)."""
    desc = [{"names": list(i.names), "manifest": i.manifest.digest, "media_type": i.media_type,
             "blobs": [b.digest for b in i.blobs]} for i in images]
    params = {"level": ZSTD_LEVEL, "window_log": ZSTD_WINDOW_LOG, "threads": ZSTD_THREADS,
              "format": 1}
    data = json.dumps({"images": desc, "params": params}, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def index_json(images: Iterable[ArchiveImage]) -> bytes:
    manifests: list[dict[str, Any]] = []
    for img in images:
        for name in img.names:
            manifests.append({
                "mediaType": img.media_type, "digest": img.manifest.digest,
                "size": img.manifest.size,
                "annotations": {a: name for a in NAME_ANNOTATIONS},
            })
    manifests.sort(key=lambda d: d["annotations"][NAME_ANNOTATIONS[0]])
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class _HashingWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.h.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.f.flush()


def _info(name: str, size: int, mtime: int, *, directory: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = 0 if directory else size
    ti.mtime = mtime
    ti.mode = 0o755 if directory else 0o644
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def write_archive(dest: Path, images: list[ArchiveImage], *, mtime: int,
                  on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Write the compressed archive atomically to ``dest``; return ``(sha256 hex, size)``."""
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, window_log=ZSTD_WINDOW_LOG, threads=ZSTD_THREADS, write_checksum=True)
    blobs: dict[str, Blob] = {}
    for img in images:
        for b in (img.manifest, *img.blobs):
            blobs.setdefault(b.digest, b)
    # into the cache, which re-verifies on every use: no fsync needed (see cache.py)
    with atomic_output(dest, durable=False) as raw:
        out = _HashingWriter(raw)
        cctx = zstandard.ZstdCompressor(compression_params=params)
        zwriter = cctx.stream_writer(out, closefd=False)  # type: ignore[arg-type]
        with zwriter as zw, \
                tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            layout = b'{"imageLayoutVersion":"1.0.0"}'
            index = index_json(images)
            tar.addfile(_info("blobs", 0, mtime, directory=True))
            tar.addfile(_info("blobs/sha256", 0, mtime, directory=True))
            for digest in sorted(blobs):
                b = blobs[digest]
                with open(b.path, "rb") as f:
                    tar.addfile(_info(f"blobs/sha256/{digest.split(':', 1)[1]}", b.size, mtime),
                                _Counting(f, on_bytes))
            tar.addfile(_info("index.json", len(index), mtime), _bytes(index))
            tar.addfile(_info("oci-layout", len(layout), mtime), _bytes(layout))
    return out.h.hexdigest(), out.size


def _bytes(data: bytes) -> BinaryIO:
    import io
    return io.BytesIO(data)


class _Counting:
    def __init__(self, f: BinaryIO, on_bytes: Callable[[int], None] | None) -> None:
        self.f = f
        self.on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if self.on_bytes is not None and data:
            self.on_bytes(len(data))
        return data
