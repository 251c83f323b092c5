"""`bundle build`: turn one locked bundle + arch into a reproducible bundle file.

Order: check the lock against the spec -> fetch every locked digest into the cache (verified,
resumable, concurrent) -> assemble the images archive (cached by content) -> write the bundle
to a temp file beside the target -> rename. Tags are never resolved here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from installer.bundlefmt import (
    INSTALL_SCRIPT_PATH,
    K3S_BINARY_PATH,
    ChartEntry,
    ImageEntry,
    Manifest,
    Member,
    unsigned_signatures,
    write_bundle,
)
from installer.errors import DigestMismatch
from installer.fsio import atomic_output, hash_file, iter_file

from . import helmchart, sbom
from .errors import LocalError, SpecError, UpstreamError
from .gate import check_lock
from .imagearchive import ArchiveImage, Blob, image_names, layout_key, write_archive
from .lockfile import BundleLock, Lock
from .refs import parse_image_ref
from .sources import Sources
from .spec import Spec

FREE_SPACE_MARGIN = 4 * 1024 * 1024   # plus 1% of the bundle: filesystem overhead


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: Manifest
    downloads: int
    cache_hits: int


def bundle_filename(name: str, version: str, arch: str) -> str:
    return f"{name}-{version}-{arch}.tar"


def fetch_all(src: Sources, bl: BundleLock, arch: str, *, workers: int,
              on_bytes: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Fetch every artifact of one bundle+arch: K3s files and charts (paths), and the images
    archive (from the cache when an identical one was built before, else assembled from
    fetched blobs). Returns ``{"k3s": Path, "install": Path, "airgap"?: Path,
    "chart:<name>": Path, "archive"?: (Path, sha256, size)}``."""
    k3s = bl.k3s
    jobs: dict[str, Callable[..., Any]] = {
        "k3s": lambda: src.fetch_url(k3s.binaries[arch].url, k3s.binaries[arch].sha256,
                                     k3s.binaries[arch].size, what=f"K3s {k3s.version} binary "
                                     f"({arch})"),
        "install": lambda: src.fetch_url(k3s.install_script.url, k3s.install_script.sha256,
                                         k3s.install_script.size, what="K3s install.sh"),
    }
    if arch in k3s.airgap_images:
        f = k3s.airgap_images[arch]
        jobs["airgap"] = lambda: src.fetch_url(f.url, f.sha256, f.size,
                                               what=f"K3s {k3s.version} airgap images ({arch})")
    for c in bl.charts:
        jobs[f"chart:{c.name}"] = lambda c=c: src.fetch_chart(c)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {k: pool.submit(fn) for k, fn in jobs.items()}
        manifests = {img.ref: pool.submit(_image_manifest, src, img.ref, img.platforms[arch],
                                          arch) for img in bl.images}
        # Submitted from this thread once the manifests are known: a worker never waits for
        # another worker, so any pool size (even 1) makes progress.
        images = []
        for img in sorted(bl.images, key=lambda i: i.ref):
            manifest_blob, media_type, descs = manifests[img.ref].result()
            images.append((img, manifest_blob, media_type, descs))
        paths: dict[str, Any] = {}
        if images:
            archive = ArchiveImages(src, images)
            cached = archive.cached()
            if cached is None:
                blob_futures = [pool.submit(src.fetch_blob, *args, what=what)
                                for args, what in archive.blob_fetches(arch)]
                for fut in blob_futures:
                    fut.result()
            paths["archive"] = cached
            paths["archive_builder"] = archive
        paths.update({k: f.result() for k, f in futures.items()})
    return paths


class ArchiveImages:
    """The images of one bundle+arch as archive input, and the archive cache around it.

    Blob paths are the content store's (content-addressed), so the archive's cache key is
    known from the manifests alone: an unchanged image set skips fetching blobs entirely.
    """

    def __init__(self, src: Sources, images: list[tuple[Any, Blob, str, list[dict[str, Any]]]]
                 ) -> None:
        self.src = src
        self.refs = [(img.ref, parse_image_ref(img.ref)) for img, *_ in images]
        self.images = [ArchiveImage(
            names=image_names(img.ref), manifest=mb, media_type=mt,
            blobs=tuple(Blob(d["digest"], d["size"], src.store.path(d["digest"]))
                        for d in descs)) for img, mb, mt, descs in images]
        self.key = layout_key(self.images)
        self.ref_file = src.store.root / "archives" / self.key

    def blob_fetches(self, arch: str) -> list[tuple[tuple[str, str, str, int], str]]:
        """One fetch per distinct blob (shared layers once)."""
        seen: set[str] = set()
        out = []
        for (ref, r), img in zip(self.refs, self.images, strict=True):
            for b in img.blobs:
                if b.digest not in seen:
                    seen.add(b.digest)
                    out.append(((r.registry, r.repository, b.digest, b.size),
                                f"image {ref} ({arch}) blob {b.digest[:19]}"))
        return out

    def cached(self) -> tuple[Path, str, int] | None:
        if not self.ref_file.exists():
            return None
        sha, _, size = self.ref_file.read_text().partition(" ")
        if not size.isdigit():
            return None
        path = self.src.store.lookup(sha, int(size))  # re-hashed: never trusted by name
        return (path, sha, int(size)) if path is not None else None

    def write(self, mtime: int, on_bytes: Callable[[int], None] | None) -> tuple[Path, str, int]:
        self.ref_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.ref_file.parent / f"{self.key}.tar.zst"
        sha, size = write_archive(out, self.images, mtime=mtime, on_bytes=on_bytes)
        final = self.src.store.path(sha)
        out.replace(final)
        with atomic_output(self.ref_file, durable=False) as f:
            f.write(f"{sha} {size}".encode())
        return final, sha, size


def _image_manifest(src: Sources, ref: str, plat: Any,
                    arch: str) -> tuple[Blob, str, list[dict[str, Any]]]:
    """The locked platform manifest (verified by digest) and its blob descriptors."""
    r = parse_image_ref(ref)
    what = f"image {ref} ({arch})"
    m = src.manifest(r.registry, r.repository, plat.digest, what=what, size=plat.size)
    doc = m.json()
    config = doc.get("config") or {}
    if config.get("digest") != plat.config:
        raise UpstreamError(f"{what}: manifest {plat.digest} names config "
                            f"{config.get('digest')}, the lock says {plat.config}")
    descs = [config, *doc.get("layers", [])]
    for d in descs:
        if not isinstance(d.get("digest"), str) or not isinstance(d.get("size"), int):
            raise UpstreamError(f"{what}: manifest {plat.digest} has a malformed descriptor")
    return Blob(plat.digest, plat.size, src.store.path(plat.digest)), plat.media_type, descs


def build(spec: Spec, lock: Lock, *, bundle: str, arch: str, src: Sources, out_dir: Path,
          sign: Callable[[bytes], tuple[bytes, list[bytes]]] | None = None, workers: int = 8,
          on_bytes: Callable[[int], None] | None = None) -> BuildResult:
    """Build ``dist/<name>-<version>-<arch>.tar``. ``sign(manifest_bytes)`` returns the
    signatures document and the root chain; unsigned bundles carry an empty signature list."""
    bl = check_lock(spec, lock, bundle, arch)
    # Local manifests and values files: verified against the lock before any download, then
    # used only from those verified copies.
    local = {f.url: _pinned_local(src, spec.base_dir / f.url, f)
             for f in bl.manifests + tuple(v for c in bl.charts for v in c.values)}
    _check_writable(out_dir)
    paths = fetch_all(src, bl, arch, workers=workers)
    mtime = lock.source_date_epoch

    files: dict[str, tuple[Path, str, int, int, str]] = {}  # path -> (file, sha, size, mode, kind)

    def add(member_path: str, file: Path, kind: str, mode: int = 0o644,
            sha_size: tuple[str, int] | None = None) -> None:
        if member_path in files:
            raise SpecError(f"two artifacts of bundle {bundle} would both be {member_path}",
                            hint="rename one of the manifests")
        sha, size = sha_size or hash_file(file)
        files[member_path] = (file, sha, size, mode, kind)

    k3s = bl.k3s
    add(K3S_BINARY_PATH, paths["k3s"], "k3s-binary", 0o755,
        (k3s.binaries[arch].sha256, k3s.binaries[arch].size))
    add(INSTALL_SCRIPT_PATH, paths["install"], "install-script", 0o755,
        (k3s.install_script.sha256, k3s.install_script.size))
    if "airgap" in paths:
        f = k3s.airgap_images[arch]
        add(f"images/k3s-airgap-images-{arch}.tar.zst", paths["airgap"], "images", 0o644,
            (f.sha256, f.size))
    images: list[ImageEntry] = []
    if bl.images:
        archive_path = f"images/{bundle}-images-{arch}.tar.zst"
        ap, sha, size = paths["archive"] or paths["archive_builder"].write(mtime, on_bytes)
        add(archive_path, ap, "images", 0o644, (sha, size))
        images = [ImageEntry(ref=i.ref, digest=i.platforms[arch].digest,
                             index_digest=i.digest if i.digest != i.platforms[arch].digest
                             else "", archive=archive_path)
                  for i in sorted(bl.images, key=lambda i: i.ref)]
    charts: list[ChartEntry] = []
    generated: list[tuple[str, bytes]] = []
    for c in sorted(bl.charts, key=lambda c: c.name):
        member = f"charts/{c.name}-{c.version}.tgz"
        add(member, paths[f"chart:{c.name}"], "chart", 0o644, (c.sha256, c.size))
        charts.append(ChartEntry(name=c.name, version=c.version, path=member,
                                 namespace=c.namespace))
        values = [local[v.url] for v in c.values]
        generated.append((f"manifests/{helmchart.file_name(c.release)}",
                          helmchart.render(c, member.split("/", 1)[1], values)))
    for mf in bl.manifests:
        add(f"manifests/{Path(mf.url).name}", local[mf.url], "manifest", 0o644,
            (mf.sha256, mf.size))
    for member_path, data in generated:
        digest = hashlib.sha256(data).hexdigest()
        p = src.store.lookup(digest, len(data)) or src.store.put(digest, len(data), [data],
                                                                 what=member_path)
        add(member_path, p, "manifest", 0o644, (digest, len(data)))

    def listed() -> tuple[Member, ...]:
        return tuple(Member(path=p, size=v[2], sha256=v[1], mode=v[3], kind=v[4])
                     for p, v in sorted(files.items()))

    bom = sbom.bom_json(name=bundle, version=bl.version, arch=arch, k3s_version=k3s.version,
                        created=mtime, members=listed(), images=images, charts=charts)
    bom_sha = hashlib.sha256(bom).hexdigest()  # a signed member like any other (docs/sbom)
    add(sbom.SBOM_PATH, src.store.lookup(bom_sha, len(bom)) or src.store.put(
        bom_sha, len(bom), [bom], what=sbom.SBOM_PATH), sbom.SBOM_KIND, 0o644, (bom_sha, len(bom)))
    members = listed()
    manifest = Manifest(
        name=bundle, version=bl.version, arch=arch, k3s_version=k3s.version, roles=bl.roles,
        lock_digest=bl.digest(), created=mtime, members=members, images=tuple(images),
        charts=tuple(charts), allow_k3s_minor_skip=bl.allow_k3s_minor_skip,
        allow_k3s_downgrade=bl.allow_k3s_downgrade)
    manifest_bytes = manifest.to_bytes()
    signatures, roots = sign(manifest_bytes) if sign else (unsigned_signatures(), [])

    dest = out_dir / bundle_filename(bundle, bl.version, arch)
    size = manifest.payload_size + len(manifest_bytes)
    needed = size + size // 100 + FREE_SPACE_MARGIN
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise LocalError(f"not enough free space in {out_dir}: the bundle needs "
                         f"{_mib(needed)} (with margin), {_mib(free)} is free",
                         hint="free space or pass --out DIR on a larger filesystem")
    try:
        with atomic_output(dest) as out:
            write_bundle(out, manifest=manifest, signatures=signatures, roots=roots,
                         open_member=lambda m: open(files[m.path][0], "rb"))
    except OSError as e:
        if e.errno == 28:
            raise LocalError(f"no space left writing {dest}", hint="free space or pass --out "
                             "DIR on a larger filesystem") from None
        if e.errno in (13, 30):
            raise LocalError(f"cannot write {dest}: {e.strerror}",
                             hint="pass --out DIR with a writable folder") from None
        raise
    return BuildResult(dest, manifest, src.downloader.downloads, src.downloader.cache_hits)


def _pinned_local(src: Sources, path: Path, pin: Any) -> Path:
    """A local file, copied into the cache only if its bytes are the locked ones; the bundle
    reads that verified copy, so an edit during the build cannot slip in."""
    cached = src.store.lookup(pin.sha256, pin.size)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as f:
            return src.store.put(pin.sha256, pin.size, iter_file(f), what=str(path))
    except (DigestMismatch, FileNotFoundError):
        raise SpecError(f"{path} changed since the lock was written",
                        hint="run `bundle lock` to pin the new content") from None


def _check_writable(out_dir: Path) -> None:
    """Fail before any download when the output folder cannot take a file."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise LocalError(f"cannot write to output folder {out_dir}: {e.strerror}",
                         hint="pass --out DIR with a writable folder") from None


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"
