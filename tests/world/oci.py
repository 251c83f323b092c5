"""OCI building blocks for the test world: blobs, deterministic gzip tar layers, OCI layouts.

What it does: builds content-addressed :class:`Blob` objects (JSON documents, real
``tar+gzip`` layers with fixed mtimes and gzip mtime 0, so the same inputs give the same digest
on any machine), streams big layers (seeded-PRNG data) straight to disk, and writes OCI image
layouts / OCI-layout tar archives with containerd-compatible names.

What it does not do: talk to registries (``push.py``) or decide what images exist
(``images.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import secrets
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Iterable, Sequence

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
MANIFEST_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST})

FIXED_MTIME = 1_700_000_000  # 2023-11-14: any constant works; reproducibility is the point
BIG_LAYER = 1 << 20  # layers larger than this go to disk when a folder is available


@dataclass(frozen=True)
class Blob:
    """One content-addressed object, held in memory (``data``) or on disk (``path``)."""

    media_type: str
    digest: str
    size: int
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None
    diff_id: str | None = None  # sha256 of the uncompressed tar, for layers

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def json(self) -> Any:
        return json.loads(self.read())

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def bytes_blob(data: bytes, media_type: str) -> Blob:
    return Blob(media_type, sha256_digest(data), len(data), data=data)


def json_blob(document: Any, media_type: str) -> Blob:
    """Serialise ``document`` compactly (stable key order as given) into a blob."""
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return bytes_blob(data, media_type)


@dataclass(frozen=True)
class LayerFile:
    """A regular file inside a layer: literal ``data``, or ``size`` bytes from PRNG ``seed``."""

    path: str
    data: bytes | None = None
    size: int = 0
    seed: str = ""
    mode: int = 0o644

    @property
    def length(self) -> int:
        return len(self.data) if self.data is not None else self.size

    def reader(self) -> io.RawIOBase | io.BytesIO:
        return io.BytesIO(self.data) if self.data is not None else PrngReader(self.seed, self.size)


class PrngReader(io.RawIOBase):
    """``size`` incompressible-ish bytes from ``random.Random(seed)``, produced on demand."""

    def __init__(self, seed: str, size: int) -> None:
        self._rng = random.Random(seed)
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        self._left -= n
        return self._rng.randbytes(n) if n else b""


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through on its way to ``target``."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.count += len(view)
        self.target.write(view)
        return len(view)


def _tarinfo(name: str, *, size: int = 0, mode: int = 0o644, directory: bool = False
             ) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name + ("/" if directory else ""))
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mode = 0o755 if directory else mode
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_tar(out: Any, files: Sequence[LayerFile], *, with_dirs: bool = True) -> None:
    """Write a deterministic tar stream of ``files`` (parent folders first) into ``out``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      copybufsize=1 << 20) as tar:
        seen: set[str] = set()
        for item in files:
            parts = item.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if with_dirs and folder not in seen:
                    seen.add(folder)
                    tar.addfile(_tarinfo(folder, directory=True))
            tar.addfile(_tarinfo("/".join(parts), size=item.length, mode=item.mode),
                        item.reader())


def build_layer(files: Sequence[LayerFile], *, media_type: str = OCI_LAYER_GZIP,
                folder: Path | None = None, compresslevel: int | None = None) -> Blob:
    """A real ``tar+gzip`` layer. Big layers (> 1 MiB) are streamed to ``folder`` if given and
    stored uncompressed-deflate (level 0: random data does not compress; this keeps a 300 MB
    layer cheap to make); small ones stay in memory at level 6."""
    total = sum(f.length for f in files)
    big = folder is not None and total > BIG_LAYER
    level = compresslevel if compresslevel is not None else (0 if big else 6)
    if big:
        assert folder is not None
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".layer-{os.getpid()}-{secrets.token_hex(6)}.tmp"
        sink: IO[bytes] = open(tmp, "wb")
    else:
        sink = io.BytesIO()
    try:
        compressed = _HashingWriter(sink)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0,
                           compresslevel=level) as gz:
            plain = _HashingWriter(gz)
            write_tar(plain, files)
        digest = "sha256:" + compressed.sha.hexdigest()
        diff_id = "sha256:" + plain.sha.hexdigest()
        if not big:
            assert isinstance(sink, io.BytesIO)
            return Blob(media_type, digest, compressed.count, data=sink.getvalue(),
                        diff_id=diff_id)
    finally:
        sink.close()
    final = folder / digest.split(":", 1)[1]  # type: ignore[operator]
    os.replace(tmp, final)
    return Blob(media_type, digest, compressed.count, path=final, diff_id=diff_id)


def tar_bytes(files: Sequence[LayerFile]) -> bytes:
    buf = io.BytesIO()
    write_tar(buf, files)
    return buf.getvalue()


def targz_bytes(files: Sequence[LayerFile], *, with_dirs: bool = True) -> bytes:
    """A deterministic ``.tar.gz`` (gzip mtime 0) of in-memory files, e.g. a Helm chart."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        write_tar(gz, files, with_dirs=with_dirs)
    return buf.getvalue()


@dataclass(frozen=True)
class LayoutEntry:
    """One image of an OCI layout: its top-level manifest/index, every blob, and its name."""

    top: Blob
    blobs: Iterable[Blob]
    name: str  # fully qualified, e.g. docker.io/rancher/mirrored-pause:3.6


def layout_index(entries: Sequence[LayoutEntry]) -> bytes:
    """``index.json`` naming each image the way containerd's importer expects."""
    manifests = [e.top.descriptor(annotations={
        "io.containerd.image.name": e.name,
        "org.opencontainers.image.ref.name": e.name}) for e in entries]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                      indent=2).encode()


def write_oci_layout(folder: Path, entries: Sequence[LayoutEntry]) -> Path:
    """Write an OCI image layout folder (``oci-layout``, ``index.json``, ``blobs/sha256``)."""
    blobs_dir = folder / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (folder / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for entry in entries:
        for blob in [entry.top, *entry.blobs]:
            with blob.open() as src, open(blobs_dir / blob.hex, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    (folder / "index.json").write_bytes(layout_index(entries))
    return folder


def oci_archive_bytes(entries: Sequence[LayoutEntry]) -> bytes:
    """A deterministic OCI-layout tar (in memory: meant for small images only)."""
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                               "index.json": layout_index(entries)}
    for entry in entries:
        for blob in [entry.top, *entry.blobs]:
            files[f"blobs/sha256/{blob.hex}"] = blob.read()
    ordered = [LayerFile(name, data=files[name]) for name in
               ["oci-layout", "index.json", *sorted(n for n in files if n.startswith("blobs/"))]]
    return tar_bytes(ordered)
