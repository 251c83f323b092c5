"""Pure helpers: map our arch names to OCI platforms, pick a platform from an index, and
check that an image config really is for the architecture its index entry claims (the trap
behind k3s#1285: an "arm64" entry whose config says amd64)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bundler.errors import UpstreamError


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# `arm` means linux/arm/v7 (K3s's armhf binary); arm64 accepts an empty or v8 variant.
ARCH_PLATFORMS = {
    "amd64": Platform("linux", "amd64"),
    "arm64": Platform("linux", "arm64"),
    "arm": Platform("linux", "arm", "v7"),
}
_EQUIVALENT_VARIANTS = {"arm64": {"", "v8"}, "amd64": {"", "v1"}}


def _platform_of(obj: dict[str, Any]) -> Platform:
    return Platform(str(obj.get("os", "")), str(obj.get("architecture", "")),
                    str(obj.get("variant", "") or ""))


def matches(found: Platform, arch: str) -> bool:
    want = ARCH_PLATFORMS[arch]
    if (found.os, found.architecture) != (want.os, want.architecture):
        return False
    allowed = _EQUIVALENT_VARIANTS.get(want.architecture, {want.variant})
    return found.variant in allowed


def index_platforms(index: dict[str, Any]) -> list[Platform]:
    """Real platforms of an index (attestation entries such as unknown/unknown excluded)."""
    out = []
    for desc in index.get("manifests", []):
        if isinstance(desc, dict) and isinstance(desc.get("platform"), dict):
            p = _platform_of(desc["platform"])
            if p.os != "unknown":
                out.append(p)
    return out


def select(index: dict[str, Any], arch: str, *, what: str) -> dict[str, Any]:
    """The one manifest descriptor of ``index`` for ``arch``, or a clear error."""
    hits = [d for d in index.get("manifests", [])
            if isinstance(d, dict) and isinstance(d.get("platform"), dict)
            and matches(_platform_of(d["platform"]), arch)]
    if not hits:
        have = ", ".join(sorted({str(p) for p in index_platforms(index)})) or "none"
        raise UpstreamError(
            f"{what}: no {ARCH_PLATFORMS[arch]} image (architecture {arch}); it has: {have}",
            hint=f"remove {arch} from the bundle's arch list, or use an image built for it")
    # Several entries for one platform (rare): take the first, as container runtimes do.
    desc = hits[0]
    if not isinstance(desc.get("digest"), str) or not isinstance(desc.get("size"), int):
        raise UpstreamError(f"{what}: index entry for {arch} lacks digest or size")
    return desc


def check_config(config: dict[str, Any], arch: str, *, what: str) -> None:
    """Reject a config whose os/architecture/variant disagree with ``arch``."""
    found = _platform_of(config)
    if not matches(found, arch):
        raise UpstreamError(
            f"{what}: the image config says {found}, but it was selected for "
            f"{ARCH_PLATFORMS[arch]}",
            hint="the image is mislabelled upstream (see k3s#1285); do not ship it for this arch")
