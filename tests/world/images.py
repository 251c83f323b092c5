"""Image factory: multi-arch OCI images (and Helm chart artifacts) with real layers.

What it does: builds images whose platforms (``linux/amd64``, ``linux/arm64``,
``linux/arm/v7``) each get a config with architecture/os/variant and a manifest of real
``tar+gzip`` layers: a layer common to all platforms, a per-platform base layer shared by every
image of the factory (same bytes -> same digest, so deduplication is observable), and a small
per-image application layer; then an OCI index (or a Docker manifest list, or a lone manifest).
Everything is deterministic. Also the traps the builder must catch: an image lacking arm64,
and one whose arm64 entry points at a manifest whose config says amd64 (k3s#1285). Pushing is
:func:`push_image` (``requests``; see ``push.py``).

What it does not do: run containers; layer contents are files, not working programs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import requests

from .oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    HELM_CHART,
    HELM_CONFIG,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    LayerFile,
    LayoutEntry,
    build_layer,
    bytes_blob,
    json_blob,
)
from .push import push_content

CREATED = "2023-11-14T22:13:20Z"  # the instant FIXED_MTIME names


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def as_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def parse(cls, key: str) -> Platform:
        parts = key.split("/")
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else None)


AMD64, ARM64, ARM_V7 = "linux/amd64", "linux/arm64", "linux/arm/v7"
ALL_PLATFORMS: tuple[str, ...] = (AMD64, ARM64, ARM_V7)
K3S_ARCH_TO_PLATFORM = {"amd64": AMD64, "arm64": ARM64, "arm": ARM_V7}


@dataclass(frozen=True)
class Image:
    """A built image. Digests are content-defined, so they are the same once pushed.

    ``digest``/``media_type``: what the tag points at (index, list or manifest);
    ``index_digest``: the index/list digest or None for a lone manifest; ``manifests``,
    ``configs``, ``layers``: per platform key (``"linux/arm/v7"``); ``sizes``: digest -> size
    for every blob, manifest and index; ``blobs``: digest -> :class:`Blob` of the same.
    """

    repository: str
    tag: str
    digest: str
    media_type: str
    index_digest: str | None
    manifests: Mapping[str, str]
    configs: Mapping[str, str]
    layers: Mapping[str, tuple[str, ...]]
    sizes: Mapping[str, int]
    blobs: Mapping[str, Blob] = field(repr=False, compare=False)
    children: tuple[Blob, ...] = field(default=(), repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(self.manifests)

    @property
    def top(self) -> Blob:
        return self.blobs[self.digest]

    def content_blobs(self) -> list[Blob]:
        """Layers and configs (not manifests), each once, in push order."""
        wanted = [d for p in self.manifests for d in (*self.layers[p], self.configs[p])]
        return [self.blobs[d] for d in dict.fromkeys(wanted)]

    def platform_size(self, platform: str) -> int:
        """Bytes a single-platform copy needs: manifest + config + layers."""
        digests = {self.manifests[platform], self.configs[platform], *self.layers[platform]}
        return sum(self.sizes[d] for d in digests)

    def layout_entry(self, name: str, platform: str | None = None) -> LayoutEntry:
        """This image (or one platform of it) as an OCI-layout entry named ``name``."""
        if platform is None:
            return LayoutEntry(self.top, [*self.children, *self.content_blobs()], name)
        digests = [self.configs[platform], *self.layers[platform]]
        return LayoutEntry(self.blobs[self.manifests[platform]],
                           [self.blobs[d] for d in digests], name)


@dataclass(frozen=True)
class ChartArtifact:
    """A Helm chart stored as an OCI artifact (what ``helm push`` writes)."""

    repository: str
    tag: str
    digest: str
    media_type: str
    config_digest: str
    chart_digest: str
    sizes: Mapping[str, int]
    blobs: Mapping[str, Blob] = field(repr=False, compare=False)
    children: tuple[Blob, ...] = field(default=(), repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def top(self) -> Blob:
        return self.blobs[self.digest]

    def content_blobs(self) -> list[Blob]:
        return [self.blobs[self.config_digest], self.blobs[self.chart_digest]]


class ChartLike(Protocol):
    """What :meth:`ImageFactory.chart` needs (``charts.ChartArchive`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...


class ImageFactory:
    """Builds images; layers are cached by content key, big ones written under ``work_dir``."""

    def __init__(self, work_dir: Path | None = None, *, base_size: int = 4096,
                 common_size: int = 1024) -> None:
        self.work_dir = Path(work_dir) if work_dir else None
        self.base_size = base_size
        self.common_size = common_size
        self._layers: dict[tuple[Any, ...], Blob] = {}

    def _layer(self, key: tuple[Any, ...], files: Sequence[LayerFile], media_type: str) -> Blob:
        cache_key = (*key, media_type)
        if cache_key not in self._layers:
            folder = self.work_dir / "layers" if self.work_dir else None
            self._layers[cache_key] = build_layer(files, media_type=media_type, folder=folder)
        return self._layers[cache_key]

    def common_layer(self, *, size: int | None = None, media_type: str = OCI_LAYER_GZIP) -> Blob:
        """Identical for every platform (think CA certificates)."""
        size = self.common_size if size is None else size
        return self._layer(("common", size), [
            LayerFile("etc/ssl/certs/world-ca-bundle.crt", size=size, seed=f"common:{size}")],
            media_type)

    def base_layer(self, platform: str, *, size: int | None = None,
                   media_type: str = OCI_LAYER_GZIP) -> Blob:
        """The per-platform base every image of this factory shares."""
        size = self.base_size if size is None else size
        return self._layer(("base", platform, size), [
            LayerFile("etc/os-release", data=f"ID=world\nPLATFORM={platform}\n".encode()),
            LayerFile("lib/world/base.bin", size=size, seed=f"base:{platform}:{size}")],
            media_type)

    def app_layer(self, repository: str, tag: str, platform: str, *, size: int = 512,
                  media_type: str = OCI_LAYER_GZIP) -> Blob:
        safe = repository.replace("/", "_")
        return self._layer(("app", repository, tag, platform, size), [
            LayerFile(f"opt/{safe}/VERSION", data=f"{repository}:{tag} {platform}\n".encode()),
            LayerFile(f"opt/{safe}/app.bin", size=size, seed=f"app:{repository}:{tag}:{platform}")],
            media_type)

    def image(self, repository: str, tag: str, *, platforms: Iterable[str] = ALL_PLATFORMS,
              base_size: int | None = None, app_size: int = 512, style: str = "oci",
              single: bool = False, config_platform: Mapping[str, str] | None = None,
              labels: Mapping[str, str] | None = None) -> Image:
        """Build one image.

        ``style``: ``"oci"`` (OCI index/manifests) or ``"docker"`` (manifest list v2 schema 2).
        ``single``: push a lone manifest (exactly one platform), no index.
        ``config_platform``: ``{"linux/arm64": "linux/amd64"}`` lists the arm64 entry in the
        index but writes amd64 in its config (the k3s#1285 trap).
        """
        platforms = list(platforms)
        if single and len(platforms) != 1:
            raise ValueError("single=True needs exactly one platform")
        docker = style == "docker"
        layer_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
        blobs: dict[str, Blob] = {}
        manifests: dict[str, str] = {}
        configs: dict[str, str] = {}
        layers: dict[str, tuple[str, ...]] = {}
        children: list[Blob] = []
        for key in platforms:
            claimed = Platform.parse((config_platform or {}).get(key, key))
            layer_blobs = [self.common_layer(media_type=layer_type),
                           self.base_layer(claimed.key, size=base_size, media_type=layer_type),
                           self.app_layer(repository, tag, key, size=app_size,
                                          media_type=layer_type)]
            config = json_blob({
                **claimed.as_dict(), "created": CREATED,
                "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"],
                           "Cmd": ["/bin/sh"], "Labels": {"world.image": f"{repository}:{tag}",
                                                          **(labels or {})}},
                "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in layer_blobs]},
                "history": [{"created": CREATED, "created_by": f"world layer {i}"}
                            for i in range(len(layer_blobs))],
            }, DOCKER_CONFIG if docker else OCI_CONFIG)
            manifest = json_blob({
                "schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [b.descriptor() for b in layer_blobs]},
                DOCKER_MANIFEST if docker else OCI_MANIFEST)
            for blob in (*layer_blobs, config, manifest):
                blobs[blob.digest] = blob
            manifests[key], configs[key] = manifest.digest, config.digest
            layers[key] = tuple(b.digest for b in layer_blobs)
            children.append(manifest)
        if single:
            top, index_digest, children = children[0], None, []
        else:
            top = json_blob({
                "schemaVersion": 2, "mediaType": DOCKER_LIST if docker else OCI_INDEX,
                "manifests": [m.descriptor(platform=Platform.parse(k).as_dict())
                              for k, m in zip(platforms, children, strict=True)]},
                DOCKER_LIST if docker else OCI_INDEX)
            blobs[top.digest] = top
            index_digest = top.digest
        return Image(repository, tag, top.digest, top.media_type, index_digest, manifests,
                     configs, layers, {d: b.size for d, b in blobs.items()}, blobs,
                     tuple(children))

    def chart(self, chart: ChartLike, repository: str | None = None) -> ChartArtifact:
        """A Helm chart as an OCI artifact, tag = chart version (like ``helm push``)."""
        meta = {k: v for k, v in chart.metadata.items() if v not in (None, "", [], {})}
        config = json_blob(meta, HELM_CONFIG)
        layer = bytes_blob(chart.data, HELM_CHART)
        manifest = json_blob({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "annotations": {"org.opencontainers.image.title": chart.name,
                            "org.opencontainers.image.version": chart.version,
                            "org.opencontainers.image.created": CREATED}}, OCI_MANIFEST)
        blobs = {b.digest: b for b in (config, layer, manifest)}
        return ChartArtifact(repository or f"charts/{chart.name}", chart.version, manifest.digest,
                             OCI_MANIFEST, config.digest, layer.digest,
                             {d: b.size for d, b in blobs.items()}, blobs)


def push_image(image: Image | ChartArtifact, registry_url: str, *,
               repository: str | None = None, tag: str | None = None,
               extra_tags: Iterable[str] = (), session: requests.Session | None = None,
               auth: tuple[str, str] | None = None, verify: bool | str = True
               ) -> Image | ChartArtifact:
    """Push ``image`` (blobs, platform manifests by digest, then the tag); return it with the
    repository/tag it was pushed under."""
    sess = session or requests.Session()
    if session is None:
        sess.trust_env = False  # REQUESTS_CA_BUNDLE would override verify (see registry.py)
        sess.verify = verify
        if auth:
            sess.auth = auth
    repo = repository or image.repository
    tag = tag or image.tag
    try:
        push_content(sess, registry_url, repo, blobs=image.content_blobs(),
                     children=image.children, top=image.top, tags=[tag, *extra_tags])
    finally:
        if session is None:
            sess.close()
    return dataclasses.replace(image, repository=repo, tag=tag)

