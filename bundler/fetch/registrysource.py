"""OCI registries as an image source (``ImageSource``): lock a reference by walking its
index to each arch's manifest (every manifest, config and layer descriptor checked), and fetch
locked manifests and blobs by digest through ``Sources`` (one client per host, one cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.errors import UpstreamError
from bundler.fetch.cache import hex_of
from bundler.fetch.imagesource import ImageSource
from bundler.fetch.oci import INDEX_TYPES, MANIFEST_TYPES, Fetched
from bundler.spec import platforms
from bundler.spec.lockfile import ImageLock, PlatformLock
from bundler.spec.refs import ImageRef

if TYPE_CHECKING:  # Sources holds its image sources: only its type is needed here
    from bundler.fetch.sources import Sources


class RegistrySource(ImageSource):
    def __init__(self, src: Sources) -> None:
        self.src = src

    def lock(self, ref: ImageRef, arches: tuple[str, ...], *, what: str) -> ImageLock:
        src = self.src
        top = src.manifest(ref.registry, ref.repository, ref.reference, what=what)
        doc = top.json()
        media_type = top.media_type   # from the verified bytes, never from a header
        result: dict[str, PlatformLock] = {}
        if media_type in INDEX_TYPES:
            if not isinstance(doc.get("manifests"), list):
                raise UpstreamError(f"{what}: index {top.digest} has no manifests list")
            for arch in arches:
                desc = platforms.select(doc, arch, what=what)
                result[arch] = _platform_lock(src, ref, digest=desc["digest"],
                                              size=desc["size"], arch=arch, what=what)
        else:
            for arch in arches:
                result[arch] = _platform_lock(src, ref, digest=top.digest, size=len(top.data),
                                              arch=arch, what=what, single=True)
        return ImageLock(ref=str(ref), digest=top.digest, media_type=media_type,
                         platforms=result)

    def manifest(self, ref: ImageRef, digest: str, *, size: int, what: str) -> Fetched:
        return self.src.manifest(ref.registry, ref.repository, digest, what=what, size=size)

    def blob(self, ref: ImageRef, *, manifest: str, digest: str, declared: object,
             what: str, kind: str) -> Path:
        return self.src.fetch_blob(ref.registry, ref.repository, digest, declared=declared,
                                   what=what, kind=kind)


def _platform_lock(src: Sources, ref: ImageRef, *, digest: str, size: int, arch: str,
                   what: str, single: bool = False) -> PlatformLock:
    m = src.manifest(ref.registry, ref.repository, digest, what=f"{what} ({arch})", size=size)
    if len(m.data) != size:
        raise UpstreamError(f"{what}: {arch} manifest is {len(m.data)} bytes, index says {size}")
    doc = m.json()
    media_type = m.media_type
    if media_type not in MANIFEST_TYPES:
        raise UpstreamError(f"{what}: the {arch} entry {digest} is a {media_type}, not an "
                            "image manifest")
    config = doc.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
        raise UpstreamError(f"{what}: {arch} manifest {digest} has no config descriptor")
    _check_layers(src, doc.get("layers"), what=f"{what} ({arch})", source=f"manifest {digest}")
    path = src.fetch_blob(ref.registry, ref.repository, config["digest"],
                          declared=config.get("size"), what=f"{what} config ({arch})",
                          kind="config", source=f"manifest {digest}")
    cfg = _json(path.read_bytes(), what=f"{what} config")
    try:
        platforms.check_config(cfg, arch, what=what)
    except UpstreamError as e:
        if single:
            found = platforms.Platform(str(cfg.get("os", "")), str(cfg.get("architecture", "")),
                                       str(cfg.get("variant", "") or ""))
            raise UpstreamError(
                f"{what}: no {platforms.ARCH_PLATFORMS[arch]} image (architecture {arch}); "
                f"it is a single-platform image for {found}",
                hint=f"remove {arch} from the bundle's arch list, or use a multi-arch image"
            ) from None
        raise e
    return PlatformLock(digest=digest, size=size, media_type=media_type,
                        config=config["digest"])


def _check_layers(src: Sources, layers: object, *, what: str, source: str) -> None:
    """Layer descriptors are checked when locking, so the build meets no surprise in the
    same (digest-pinned) bytes: a list of objects, each a sha256 digest and a size within
    the layer cap."""
    if not isinstance(layers, list) or not all(
            isinstance(ly, dict) and isinstance(ly.get("digest"), str) for ly in layers):
        raise UpstreamError(f"{what}: {source} has malformed layer descriptors",
                            hint="the registry serves a broken manifest; nothing was locked")
    for ly in layers:
        hex_of(ly["digest"])
        src.limits.check_size("layer", ly.get("size"), what=what, source=source)


def _json(data: bytes, *, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise UpstreamError(f"{what} is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise UpstreamError(f"{what} is not a JSON object")
    return doc
