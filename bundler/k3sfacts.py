"""K3s release facts as pure functions: asset names per arch, release URLs, checksum files.

Asset naming from K3s's release scripts (scripts/package-cli, scripts/package-airgap):
amd64 -> ``k3s``, arm64 -> ``k3s-arm64``, arm -> ``k3s-armhf``; images and checksums use
``amd64``/``arm64``/``arm``. The ``+`` in a version is ``%2B`` in release URLs.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from .errors import UpstreamError

BINARY_NAMES = {"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def binary_name(arch: str) -> str:
    return BINARY_NAMES[arch]


def airgap_images_name(arch: str) -> str:
    return f"k3s-airgap-images-{arch}.tar.zst"


def checksums_name(arch: str) -> str:
    return f"sha256sum-{arch}.txt"


def release_url(releases: str, version: str, asset: str) -> str:
    return f"{releases.rstrip('/')}/{quote(version, safe='')}/{asset}"


def parse_checksums(text: str, *, source: str) -> dict[str, str]:
    """Parse sha256sum output (``<hex>  <name>`` or ``<hex> *<name>``) into name -> hex."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not _HEX64.match(parts[0].lower()):
            raise UpstreamError(f"{source}: line {n} is not in sha256sum format: {line[:80]!r}")
        name = parts[1].strip().lstrip("*")
        out[name.rsplit("/", 1)[-1]] = parts[0].lower()
    return out


def checksum_for(checksums: dict[str, str], asset: str, *, source: str) -> str:
    try:
        return checksums[asset]
    except KeyError:
        raise UpstreamError(f"{source} has no checksum line for {asset}",
                            hint="the release is incomplete or the asset name is wrong; "
                                 "nothing unverified is locked") from None


def minor_of(version: str) -> tuple[int, int]:
    """``v1.34.3+k3s1`` -> (1, 34)."""
    m = re.match(r"^v?(\d+)\.(\d+)\.", version)
    if not m:
        raise ValueError(f"not a K3s version: {version!r}")
    return int(m.group(1)), int(m.group(2))
