"""The inputs of a build that need no image blob: local files verified against their pins,
and the locked platform manifests of the images (small, cached like blobs)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bundler.assemble.imagearchive import Blob
from bundler.errors import SpecError, UpstreamError
from bundler.fetch.sources import Sources
from bundler.spec.lockfile import BundleLock, ImageLock
from bundler.spec.refs import parse_image_ref
from bundler.spec.spec import Spec
from installer.errors import DigestMismatch
from installer.fsio import iter_file

Found = tuple[Blob, str, tuple[Blob, ...]]   # manifest, its media type, config + layers


def pin_local_files(src: Sources, spec: Spec, bl: BundleLock) -> dict[str, Path]:
    """Local manifests and values files (lock url -> verified cached copy): checked against
    the lock before any download, then used only from those copies, so an edit during the
    build cannot slip in."""
    pins = bl.manifests + tuple(v for c in bl.charts for v in c.values)
    return {f.url: _pinned_local(src, spec.base_dir / f.url, f) for f in pins}


def _pinned_local(src: Sources, path: Path, pin: Any) -> Path:
    cached = src.store.lookup(pin.sha256, pin.size)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as f:
            return src.store.put(pin.sha256, pin.size, iter_file(f), what=str(path))
    except (DigestMismatch, FileNotFoundError):
        raise SpecError(f"{path} changed since the lock was written",
                        hint="run `bundle lock` to pin the new content") from None


def image_manifests(src: Sources, images: list[ImageLock], arch: str, *,
                    workers: int) -> list[Found]:
    """The locked platform manifest of each image (verified by digest, concurrently) and
    its blob descriptors, in the order given."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_image_manifest, src, img.ref, img.platforms[arch], arch=arch)
                   for img in images]
        return [f.result() for f in futures]


def _image_manifest(src: Sources, ref: str, plat: Any, *, arch: str) -> Found:
    r = parse_image_ref(ref)
    what = f"image {ref} ({arch})"
    m = src.image_manifest(r, plat.digest, what=what, size=plat.size)
    doc = m.json()
    config = doc.get("config") or {}
    if not isinstance(config, dict) or config.get("digest") != plat.config:
        raise UpstreamError(f"{what}: manifest {plat.digest} names config "
                            f"{config.get('digest') if isinstance(config, dict) else None}, "
                            f"the lock says {plat.config}")
    layers = doc.get("layers", [])
    descs = [config, *(layers if isinstance(layers, list) else [None])]
    blobs = []
    for d in descs:
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str) \
                or not isinstance(d.get("size"), int) or isinstance(d.get("size"), bool):
            raise UpstreamError(f"{what}: manifest {plat.digest} has a malformed descriptor")
        mt = d.get("mediaType")
        blobs.append(Blob(d["digest"], d["size"], src.store.path(d["digest"]),
                          mt if isinstance(mt, str) else ""))
    manifest = Blob(plat.digest, plat.size, src.store.path(plat.digest), plat.media_type)
    return manifest, plat.media_type, tuple(blobs)
