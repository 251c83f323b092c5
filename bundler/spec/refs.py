"""Image references: parsing and Docker-style normalisation (pure).

``nginx`` -> ``docker.io/library/nginx:latest``; ``ghcr.io/a/b@sha256:..`` keeps its digest;
``repo:tag@sha256:..`` keeps both (the digest wins when pulling). Mirrors the rules of
distribution/reference (``ParseNormalizedNamed``): the first path component is a registry host
only if it contains ``.`` or ``:`` or is ``localhost``.
See https://github.com/distribution/reference/blob/main/normalize.go

``docker-daemon:NAME:TAG`` (skopeo's transport name) is an image taken from the local Docker
engine instead of a registry (``bundler.fetch.daemon``): ``daemon`` is set, the rest normalises as
above (``docker-daemon:app:1`` -> ``docker-daemon:docker.io/library/app:1``). It is pinned by
the lock, never by a digest in the spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bundler.errors import SpecError

# Image manifest media types (OCI and Docker). A manifest's type is taken from its verified
# bytes, never a header, and must be one of MEDIA_TYPES.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MEDIA_TYPES = frozenset((*INDEX_TYPES, *MANIFEST_TYPES))

DEFAULT_REGISTRY = "docker.io"
_LEGACY_REGISTRIES = {"index.docker.io", "registry-1.docker.io"}
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
DAEMON_TRANSPORT = "docker-daemon:"
_HOST_RE = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


@dataclass(frozen=True, order=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    daemon: bool = False    # from the local Docker engine (``docker-daemon:``)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def runtime_name(self) -> str:
        """The name a container runtime knows the image by (no transport prefix)."""
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def transport(self) -> str:
        """The transport prefix naming the image's source: ``docker-daemon:`` or none (a
        registry); the key of ``Sources.image_sources``."""
        return DAEMON_TRANSPORT if self.daemon else ""

    def __str__(self) -> str:
        return self.transport + self.runtime_name

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, self.tag, digest, self.daemon)


def parse_image_ref(text: str) -> ImageRef:
    """Parse and normalise an image reference, or raise ``SpecError`` naming it."""
    original = text
    text = text.strip()
    daemon = text.startswith(DAEMON_TRANSPORT)
    if daemon:
        text = text[len(DAEMON_TRANSPORT):]
        if "@" in text:
            raise SpecError(f"invalid image reference {original!r}: an image from the Docker "
                            "engine is pinned by bundles.lock, not by a digest",
                            hint="write docker-daemon:NAME:TAG")
    if not text or any(c.isspace() for c in text):
        raise SpecError(f"invalid image reference {original!r}: empty or contains whitespace")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise SpecError(f"invalid image reference {original!r}: digest must be "
                            "sha256:<64 lowercase hex>")
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise SpecError(f"invalid image reference {original!r}: bad tag {tag!r}")
    registry, path = _registry_and_path(text, original)
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, path, tag, digest, daemon)


def _registry_and_path(text: str, original: str) -> tuple[str, str]:
    """``docker.io``, ``library/alpine`` for ``alpine``: the registry (Docker Hub unless the
    first component looks like a host) and the checked repository path."""
    parts = text.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, parts[1:]
        if not _HOST_RE.match(registry):
            raise SpecError(f"invalid image reference {original!r}: bad registry {registry!r}")
    else:
        registry, path = DEFAULT_REGISTRY, parts
    if registry in _LEGACY_REGISTRIES:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library", *path]
    for comp in path:
        if not _PATH_COMPONENT_RE.match(comp):
            raise SpecError(f"invalid image reference {original!r}: bad path component "
                            f"{comp!r} (lowercase letters, digits and . _ - only)")
    return registry, "/".join(path)


def normalize(text: str) -> str:
    """The fully qualified string form of an image reference."""
    return str(parse_image_ref(text))
