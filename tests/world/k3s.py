"""A stand-in K3s GitHub release folder and a stand-in ``install.sh`` (get.k3s.io).

What it does: writes, for a version such as ``v1.34.3+k3s1``, the assets the real release has
(see ``fixtures/real/k3s/v1.34.3+k3s1/release-assets.txt``): stand-in binaries ``k3s``,
``k3s-arm64``, ``k3s-armhf`` (shell scripts, distinct per arch and version, printing
``k3s version <v>``), ``k3s-airgap-images-{amd64,arm64,arm}.tar[.gz|.zst]`` (small but real
OCI-layout archives of single-platform images named as in ``k3s-images.txt``, importable by
containerd; zstd window far below K3s's 2^25 cap), ``k3s-images.txt`` and
``sha256sum-{arch}.txt`` (sha256sum format, binary + image tarballs + image list, like
``scripts/checksum`` output). Knobs make broken releases (missing or wrong checksum lines,
missing assets). Also the stand-in ``install.sh``: it records its arguments and
``INSTALL_K3S_*``/``K3S_*`` environment and fails unless ``INSTALL_K3S_SKIP_DOWNLOAD=true``.

What it does not do: contain K3s (no binary is obtainable offline, and it could not run here).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import zstandard

from .images import K3S_ARCH_TO_PLATFORM, ImageFactory
from .oci import oci_archive_bytes

K3S_VERSION = "v1.34.3+k3s1"
K3S_ARCHES: tuple[str, ...] = ("amd64", "arm64", "arm")
BINARY_NAMES = {"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}
# scripts/airgap/image-list.txt at v1.34.3+k3s1 (fixtures/real/k3s/...)
K3S_IMAGES: tuple[str, ...] = (
    "docker.io/rancher/klipper-helm:v0.9.12-build20251215",
    "docker.io/rancher/klipper-lb:v0.4.13",
    "docker.io/rancher/local-path-provisioner:v0.0.32",
    "docker.io/rancher/mirrored-coredns-coredns:1.13.1",
    "docker.io/rancher/mirrored-library-busybox:1.37.0",
    "docker.io/rancher/mirrored-library-traefik:3.5.1",
    "docker.io/rancher/mirrored-metrics-server:v0.8.0",
    "docker.io/rancher/mirrored-pause:3.6",
)
ZSTD_LEVEL = 3  # window 2^21 or less at this level and size: K3s caps at 2^25 (k3s#2941)

K3S_STANDIN = """\
#!/bin/sh
# Stand-in for the K3s {version} binary for linux/{arch} (k3s-airgap test world).
# It is not K3s: it prints the version and, if K3S_STANDIN_RECORD names a file, appends
# its arguments there.
if [ -n "${{K3S_STANDIN_RECORD:-}}" ]; then
  printf '%s\\n' "{binary} $*" >> "$K3S_STANDIN_RECORD"
fi
echo "k3s version {version} (standin-{arch})"
echo "go version go1.24.11"
exit 0
"""

INSTALL_SH = """\
#!/bin/sh
# Stand-in for https://get.k3s.io (k3s-airgap test world). It installs nothing: it checks the
# offline contract and records how it was called, one block per run:
#   --- k3s-install-record / argc=N / argI=... / k3s_version=... / INSTALL_K3S_*=... / K3S_*=...
# into $AIRGAP_INSTALL_RECORD (default: $INSTALL_K3S_BIN_DIR/../k3s-install-record.txt).
set -e
fatal() { echo "[ERROR]  $*" >&2; exit 1; }
BIN_DIR="${INSTALL_K3S_BIN_DIR:-/usr/local/bin}"
RECORD="${AIRGAP_INSTALL_RECORD:-$BIN_DIR/../k3s-install-record.txt}"
[ "${INSTALL_K3S_SKIP_DOWNLOAD:-}" = "true" ] || \\
  fatal "INSTALL_K3S_SKIP_DOWNLOAD is not 'true': this host is offline"
[ -x "$BIN_DIR/k3s" ] || fatal "Executable k3s binary not found at $BIN_DIR/k3s"
version=$("$BIN_DIR/k3s" --version 2>/dev/null | head -n 1) || version=""
{
  echo "--- k3s-install-record"
  echo "argc=$#"
  i=0
  for a in "$@"; do i=$((i + 1)); printf 'arg%d=%s\\n' "$i" "$a"; done
  echo "k3s_version=$version"
  env | grep -E '^(INSTALL_K3S_|K3S_)[A-Za-z0-9_]*=' | LC_ALL=C sort || true
} >> "$RECORD"
echo "[INFO]  stand-in install.sh: recorded to $RECORD"
exit 0
"""


def read_install_records(path: Path) -> list[dict[str, str]]:
    """Parse the blocks the stand-in ``install.sh`` appended to ``path`` (oldest first)."""
    records: list[dict[str, str]] = []
    for line in Path(path).read_text().splitlines():
        if line == "--- k3s-install-record":
            records.append({})
        elif records and "=" in line:
            key, _, value = line.partition("=")
            records[-1][key] = value
    return records


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


@dataclass(frozen=True)
class K3sRelease:
    """One release folder, ``<releases_dir>/<version>`` (``+`` kept on disk)."""

    version: str
    folder: Path
    arches: tuple[str, ...]

    @staticmethod
    def binary_name(arch: str) -> str:
        return BINARY_NAMES[arch]

    @staticmethod
    def images_name(arch: str, ext: str = ".tar.zst") -> str:
        return f"k3s-airgap-images-{arch}{ext}"

    @staticmethod
    def checksums_name(arch: str) -> str:
        return f"sha256sum-{arch}.txt"

    @property
    def assets(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.is_file())

    def path(self, asset: str) -> Path:
        return self.folder / asset

    def sha256(self, asset: str) -> str:
        """The actual sha256 hex of an asset on disk (not what the sums file claims)."""
        return sha256_file(self.folder / asset)

    def checksums(self, arch: str) -> dict[str, str]:
        """What ``sha256sum-<arch>.txt`` claims: asset -> hex."""
        out: dict[str, str] = {}
        for line in (self.folder / self.checksums_name(arch)).read_text().splitlines():
            hexdigest, _, name = line.partition("  ")
            out[name] = hexdigest
        return out

    def url_path(self, asset: str) -> str:
        """URL path below the releases base, GitHub style (``+`` as ``%2B``)."""
        return f"/{self.version.replace('+', '%2B')}/{asset}"


def _airgap_archives(version: str, arch: str, images: Iterable[str]) -> dict[str, bytes]:
    factory = ImageFactory(base_size=256, common_size=64)
    platform = K3S_ARCH_TO_PLATFORM[arch]
    entries = []
    for name in images:
        repo, _, tag = name.rpartition(":")
        image = factory.image(repo, tag, platforms=[platform], single=True, app_size=128,
                              labels={"world.k3s.release": version})
        entries.append(image.layout_entry(name, platform))
    tar = oci_archive_bytes(entries)
    zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(tar)
    return {".tar": tar, ".tar.gz": gzip.compress(tar, mtime=0), ".tar.zst": zstd}


def make_k3s_release(releases_dir: Path, version: str = K3S_VERSION, *,
                     arches: Iterable[str] = K3S_ARCHES, images: Iterable[str] = K3S_IMAGES,
                     omit_checksum: Iterable[str] = (), wrong_checksum: Iterable[str] = (),
                     omit_assets: Iterable[str] = ()) -> K3sRelease:
    """Write a release folder. Broken-release knobs take asset names:

    ``omit_checksum``: leave their lines out of the sums file; ``wrong_checksum``: write a
    wrong hash for them; ``omit_assets``: list them in the sums file but do not write them
    (a 404 on download).
    """
    arches = tuple(arches)
    images = tuple(images)
    omit_checksum, wrong_checksum = set(omit_checksum), set(wrong_checksum)
    omit_assets = set(omit_assets)
    folder = Path(releases_dir) / version
    folder.mkdir(parents=True, exist_ok=True)
    image_list = ("\n".join(images) + "\n").encode()
    for arch in arches:
        binary = BINARY_NAMES[arch]
        files = {binary: K3S_STANDIN.format(version=version, arch=arch, binary=binary).encode(),
                 "k3s-images.txt": image_list}
        for ext, data in _airgap_archives(version, arch, images).items():
            files[K3sRelease.images_name(arch, ext)] = data
        lines = []
        for name in sorted(files):
            digest = hashlib.sha256(files[name]).hexdigest()
            if name in wrong_checksum:
                digest = hashlib.sha256(b"wrong:" + files[name]).hexdigest()
            if name not in omit_checksum:
                lines.append(f"{digest}  {name}\n")
            if name not in omit_assets:
                (folder / name).write_bytes(files[name])
                if name == binary:
                    (folder / name).chmod(0o755)
        (folder / K3sRelease.checksums_name(arch)).write_text("".join(lines))
    return K3sRelease(version, folder, arches)


def write_install_script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(INSTALL_SH)
    path.chmod(0o755)
    return path
