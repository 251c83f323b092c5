"""`bundle build`: turn locked bundles + arches into reproducible bundle files.

Named steps, for the whole run before any output byte is written:

1. ``plan_bundle``: check the lock against the spec, verify local files against their pins,
   fetch the (small) platform manifests; every member's path, size and mode is now known,
   and its sha256 too except for an images archive not seen before (its digest is cached by
   content key, never its bytes).
2. ``sign_plan`` + ``bundlewrite.is_current``: a plan whose manifest is known and whose output
   file already holds exactly that envelope is verified once and left in place ("up to
   date"), unless ``force``.
3. ``space_needs`` + ``bundlewrite.check_space``: free space for every bundle still to write
   (all arches) and for every download, checked at once.

Then per bundle: ``fetch_plan`` (downloads on a bounded pool; hashing of the images archive
overlaps them, blob by blob in archive order) -> ``sign_plan`` -> ``write_bundle_file`` (each
image byte written once, straight into the bundle, hashed on the way). Tags are never
resolved here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from bundler.assemble import bundlewrite, helmchart, sbom
from bundler.assemble.buildinputs import image_manifests, pin_local_files
from bundler.assemble.bundlewrite import Chunks, SpaceNeed, bytes_chunks, file_chunks
from bundler.assemble.imagearchive import ArchiveImage, ArchivePlan, image_names, plan_archives
from bundler.errors import LocalError, SpecError
from bundler.fetch.sources import Sources
from bundler.lock.gate import check_lock
from bundler.spec import k3sconfig
from bundler.spec.lockfile import BundleLock, Lock
from bundler.spec.refs import ImageRef, parse_image_ref
from bundler.spec.spec import BundleSpec, Spec
from installer.format.bundlefmt import (
    INSTALL_SCRIPT_PATH,
    K3S_BINARY_PATH,
    K3S_CONFIG_PATH,
    REGISTRIES_PATH,
    ChartEntry,
    ImageEntry,
    Manifest,
    Member,
    unsigned_signatures,
)
from installer.fsio import atomic_output, hash_chunks

Signer = Callable[[bytes], "tuple[bytes, list[bytes]]"]
BlobJob = tuple[tuple[ImageRef, str, str, int], str, str]  # (image, its platform manifest,
#   digest, size), what, cap kind


@dataclass
class Entry:
    """One payload member: ``sha256``/``size`` are None only for an images archive whose
    digest is not known yet."""

    sha256: str | None
    size: int | None
    mode: int
    kind: str
    chunks: Chunks
    archive: ArchivePlan | None = None


@dataclass
class Plan:
    bundle: str
    arch: str
    bl: BundleLock
    mtime: int
    dest: Path
    entries: dict[str, Entry]
    images: tuple[ImageEntry, ...]
    charts: tuple[ChartEntry, ...]
    jobs: dict[str, Callable[[], Path]]                    # K3s files and charts
    blobs: dict[str, BlobJob]                              # digest -> its fetch
    manifest: Manifest | None = None
    signed: tuple[bytes, bytes, list[bytes]] | None = None   # manifest bytes, sigs, roots
    up_to_date: bool = False
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: Manifest
    downloads: int
    cache_hits: int
    up_to_date: bool = False
    phases: dict[str, float] = field(default_factory=dict)


def bundle_filename(name: str, version: str, arch: str) -> str:
    return f"{name}-{version}-{arch}.tar"


# ---------------------------------------------------------------- step 1: plan


class _Members:
    """The members planned so far (no two artifacts on one path) and the fetch job of each
    file or chart downloaded whole."""

    def __init__(self, bundle: str) -> None:
        self.bundle = bundle
        self.entries: dict[str, Entry] = {}
        self.jobs: dict[str, Callable[[], Path]] = {}

    def add(self, path: str, entry: Entry, job: Callable[[], Path] | None = None) -> None:
        if path in self.entries:
            raise SpecError(f"two artifacts of bundle {self.bundle} would both be {path}",
                            hint="rename one of the manifests")
        self.entries[path] = entry
        if job is not None:
            self.jobs[path] = job


def plan_bundle(spec: Spec, lock: Lock, *, bundle: str, arch: str, src: Sources,
                out_dir: Path, workers: int = 8) -> Plan:
    """Everything about one bundle+arch that needs no image blob (see the module doc)."""
    start = time.perf_counter()
    bl = check_lock(spec, lock, bundle, arch=arch)
    local = pin_local_files(src, spec, bl)
    members = _Members(bundle)
    _plan_k3s(members, src, bl, arch=arch)
    charts = _plan_charts(members, src, bl, local=local)
    _plan_manifests(members, bl, local)
    _plan_k3s_config(members, spec.bundle(bundle))
    images, blob_jobs = _plan_images(members, src, lock, bl=bl, arch=arch, workers=workers)
    plan = Plan(bundle, arch, bl, lock.source_date_epoch,
                out_dir / bundle_filename(bundle, bl.version, arch), members.entries, images,
                charts, members.jobs, blob_jobs)
    plan.phases["plan"] = time.perf_counter() - start
    return plan


def _plan_k3s(members: _Members, src: Sources, bl: BundleLock, *, arch: str) -> None:
    """The K3s binary, install.sh and (when locked for ``arch``) K3s's own airgap images
    tarball, as shipped (zstd)."""
    k3s = bl.k3s
    # (member, entry kind, mode, pin, what, fetch cap kind in bundler.limits)
    pinned = [(K3S_BINARY_PATH, "k3s-binary", 0o755, k3s.binaries[arch],
               f"K3s {k3s.version} binary ({arch})", "k3s_binary"),
              (INSTALL_SCRIPT_PATH, "install-script", 0o755, k3s.install_script,
               "K3s install.sh", "install_script")]
    if arch in k3s.airgap_images:
        pinned.append((f"images/k3s-airgap-images-{arch}.tar.zst", "images", 0o644,
                       k3s.airgap_images[arch], f"K3s {k3s.version} airgap images ({arch})",
                       "airgap_images"))
    for path, kind, mode, f, what, cap in pinned:
        chunks = file_chunks(src.store.path(f.sha256))
        members.add(path, Entry(f.sha256, f.size, mode, kind, chunks),
                    partial(src.fetch_url, f.url, f.sha256, f.size, what=what, kind=cap))


def _plan_charts(members: _Members, src: Sources, bl: BundleLock, *,
                 local: dict[str, Path]) -> tuple[ChartEntry, ...]:
    """Each chart archive and the generated HelmChart manifest that installs it."""
    charts: list[ChartEntry] = []
    for c in sorted(bl.charts, key=lambda c: c.name):
        member = f"charts/{c.name}-{c.version}.tgz"
        members.add(member, Entry(c.sha256, c.size, 0o644, "chart",
                                  file_chunks(src.store.path(c.sha256))),
                    partial(src.fetch_chart, c))
        charts.append(ChartEntry(name=c.name, version=c.version, path=member,
                                 namespace=c.namespace))
        data = helmchart.render(c, member.split("/", 1)[1], [local[v.url] for v in c.values])
        sha, size = hash_chunks([data])
        members.add(f"manifests/{helmchart.file_name(c.release)}",
                    Entry(sha, size, 0o644, "manifest", bytes_chunks(data)))
    return tuple(charts)


def _plan_k3s_config(members: _Members, b: BundleSpec) -> None:
    """The K3s configuration drop-in and registries.yaml the spec asks for, if any."""
    for path, kind, data in k3s_config_members(b):
        sha, size = hash_chunks([data])
        members.add(path, Entry(sha, size, 0o644, kind, bytes_chunks(data)))


def _plan_manifests(members: _Members, bl: BundleLock, local: dict[str, Path]) -> None:
    """The spec's own manifests, from their verified local copies."""
    for mf in bl.manifests:
        members.add(f"manifests/{Path(mf.url).name}",
                    Entry(mf.sha256, mf.size, 0o644, "manifest", file_chunks(local[mf.url])))


def _plan_images(members: _Members, src: Sources, lock: Lock, *, bl: BundleLock, arch: str,
                 workers: int) -> tuple[tuple[ImageEntry, ...], dict[str, BlobJob]]:
    """The images archives (platform manifests fetched, blobs not), the manifest's image
    entries and one fetch per distinct blob (shared layers once)."""
    locked = sorted(bl.images, key=lambda i: i.ref)
    found = image_manifests(src, locked, arch, workers=workers)
    archived = [ArchiveImage(names=image_names(parse_image_ref(img.ref).runtime_name),
                             manifest=mb, media_type=mt,
                             blobs=blobs) for img, (mb, mt, blobs) in zip(locked, found,
                                                                           strict=True)]
    where: dict[ArchiveImage, str] = {}
    for ap in plan_archives(archived, mtime=lock.source_date_epoch):
        path = f"images/{members.bundle}-images-{arch}{ap.suffix}"
        sha_size = _cached_archive_digest(src, ap)
        members.add(path, Entry(sha_size[0] if sha_size else None,
                                sha_size[1] if sha_size else (None if ap.zstd else ap.tar_size()),
                                0o644, "images", ap.chunks, archive=ap))
        where.update((a, path) for a in ap.images)
    blob_jobs: dict[str, BlobJob] = {}
    for lk, a in zip(locked, archived, strict=True):
        r = parse_image_ref(lk.ref)
        for b in a.blobs:
            blob_jobs.setdefault(b.digest, ((r, lk.platforms[arch].digest, b.digest, b.size),
                                            f"image {lk.ref} ({arch}) blob {b.digest[:19]}",
                                            "config" if b.digest == lk.platforms[arch].config
                                            else "layer"))
    images = tuple(ImageEntry(ref=i.ref, digest=i.platforms[arch].digest,
                              index_digest=i.digest if i.digest != i.platforms[arch].digest
                              else "", archive=where[a])
                   for i, a in zip(locked, archived, strict=True))
    return images, blob_jobs


def k3s_config_members(b: BundleSpec) -> list[tuple[str, str, bytes]]:
    """(member path, kind, bytes) of the K3s configuration the bundle carries: the names and
    kinds are the format's own (installer.format.bundlefmt.FIXED_PATHS), the bytes k3sconfig's."""
    out = []
    if b.k3s_config:
        out.append((K3S_CONFIG_PATH, "k3s-config", k3sconfig.config_yaml(b.name, b.k3s_config)))
    if b.mirrors:
        out.append((REGISTRIES_PATH, "registries", k3sconfig.registries_yaml(b.name, b.mirrors)))
    return out


def _ref_file(src: Sources, ap: ArchivePlan) -> Path:
    return src.store.root / "archives" / ap.key()


def _cached_archive_digest(src: Sources, ap: ArchivePlan) -> tuple[str, int] | None:
    """The archive's ``(sha256, size)`` from an earlier build: only an expectation, every
    byte is hashed again on its way into the bundle."""
    try:
        sha, _, size = _ref_file(src, ap).read_text().partition(" ")
    except OSError:
        return None
    if len(sha) != 64 or not size.isdigit():
        return None
    return sha, int(size)


# ---------------------------------------------------------------- step 2: manifest, signature


def sign_plan(plan: Plan, sign: Signer | None) -> None:
    """Complete the manifest (every digest known), add the SBOM over it, and sign it."""
    plan.entries.pop(sbom.SBOM_PATH, None)  # signing again (e.g. after the blob pass)
    content = tuple(Member(path=p, size=e.size, sha256=e.sha256, mode=e.mode, kind=e.kind)
                    for p, e in sorted(plan.entries.items())
                    if e.sha256 is not None and e.size is not None)
    bom = sbom.bom_json(name=plan.bundle, version=plan.bl.version, arch=plan.arch,
                        k3s_version=plan.bl.k3s.version, created=plan.mtime, members=content,
                        images=plan.images, charts=plan.charts)
    bom_sha, bom_size = hash_chunks([bom])  # a signed member like any other (bundle-format)
    plan.entries[sbom.SBOM_PATH] = Entry(bom_sha, bom_size, 0o644, sbom.SBOM_KIND,
                                         bytes_chunks(bom))
    members = tuple(Member(path=p, size=e.size, sha256=e.sha256, mode=e.mode, kind=e.kind)
                    for p, e in sorted(plan.entries.items())
                    if e.sha256 is not None and e.size is not None)
    assert len(members) == len(plan.entries), "sign_plan before every digest is known"
    bl = plan.bl
    plan.manifest = Manifest(
        name=plan.bundle, version=bl.version, arch=plan.arch, k3s_version=bl.k3s.version,
        roles=bl.roles, lock_digest=bl.digest(), created=plan.mtime, members=members,
        images=plan.images, charts=plan.charts, allow_k3s_minor_skip=bl.allow_k3s_minor_skip,
        allow_k3s_downgrade=bl.allow_k3s_downgrade)
    data = plan.manifest.to_bytes()
    sigs, roots = sign(data) if sign else (unsigned_signatures(), [])
    plan.signed = (data, sigs, list(roots))


def known(plan: Plan) -> bool:
    return all(e.sha256 is not None and e.size is not None for e in plan.entries.values())


def check_current(plan: Plan) -> bool:
    """Step 2's test: the output file already is this bundle (verified once)."""
    assert plan.signed is not None
    start = time.perf_counter()
    data, sigs, roots = plan.signed
    plan.up_to_date = plan.dest.is_file() and bundlewrite.is_current(
        plan.dest, manifest_bytes=data, signatures=sigs, roots=roots)
    plan.phases["verify existing"] = time.perf_counter() - start
    return plan.up_to_date


# ---------------------------------------------------------------- step 3: free space


def space_needs(plans: list[Plan], src: Sources, out_dir: Path,
                *, extras: int) -> list[SpaceNeed]:
    """What the rest of the run writes: the bundles not up to date (sizes from the plan),
    the files beside them, and every download the cache does not hold yet."""
    todo = [p for p in plans if not p.up_to_date]
    size = sum(bundlewrite.bundle_size(len(p.signed[0]) if p.signed else 64 * 1024,
                                       [(_size_hint(e), 1) for e in p.entries.values()])
               for p in todo)
    missing: dict[str, int] = {}
    for p in todo:
        for digest, (args, _, _) in p.blobs.items():
            missing[digest] = args[3]
        for path in p.jobs:
            e = p.entries[path]
            missing[e.sha256 or path] = e.size or 0
    cache = sum(s for d, s in missing.items()
                if not src.store.path(d if ":" in d else f"sha256:{d}").exists())
    return [SpaceNeed(out_dir, size + (extras if todo else 0), "the bundles"),
            SpaceNeed(src.store.root, cache, "the downloads")]


def _size_hint(e: Entry) -> int:
    if e.size is not None:
        return e.size
    assert e.archive is not None
    return e.archive.size_hint()


# ---------------------------------------------------------------- per bundle: fetch, write


def fetch_plan(plan: Plan, src: Sources, *, workers: int) -> None:
    """Download what is missing (bounded pool) while a second thread hashes each images
    archive whose digest is unknown, blob by blob as they arrive; cache that digest."""
    start = time.perf_counter()
    pending = [(p, e) for p, e in plan.entries.items() if e.sha256 is None or e.size is None]
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            ThreadPoolExecutor(max_workers=max(1, len(pending))) as hashers:
        files = [pool.submit(job) for job in plan.jobs.values()]
        blobs: dict[str, Future[Path]] = {
            d: pool.submit(src.image_blob, *args[:3], declared=args[3], what=what,
                           kind=cap)
            for d, (args, what, cap) in sorted(plan.blobs.items())}
        hashes = {path: hashers.submit(_hash_archive, e, blobs, src) for path, e in pending}
        for fut in [*files, *blobs.values()]:
            fut.result()
        for path, hashed in hashes.items():
            sha, size = hashed.result()
            plan.entries[path] = replace(plan.entries[path], sha256=sha, size=size)
    plan.phases["fetch"] = time.perf_counter() - start


def _hash_archive(e: Entry, blobs: dict[str, Future[Path]], src: Sources) -> tuple[str, int]:
    assert e.archive is not None
    ap = e.archive

    def wait(digest: str) -> None:
        if digest in blobs:
            blobs[digest].result()  # raises if that download failed
    sha, size = hash_chunks(ap.chunks(wait=wait))
    ref = _ref_file(src, ap)
    ref.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(ref, durable=False) as f:  # a hint only: re-hashed when used
        f.write(f"{sha} {size}".encode())
    return sha, size


def write_plan(plan: Plan) -> None:
    assert plan.manifest is not None and plan.signed is not None
    start = time.perf_counter()
    bundlewrite.write_bundle_file(plan.dest, manifest=plan.manifest, signatures=plan.signed[1],
                                  roots=plan.signed[2],
                                  sources={p: e.chunks for p, e in plan.entries.items()})
    plan.phases["write"] = time.perf_counter() - start


# ---------------------------------------------------------------- the run


def build_all(spec: Spec, lock: Lock, targets: list[tuple[str, str]], *, src: Sources,
              out_dir: Path, sign: Signer | None = None, workers: int = 8,
              force: bool = False, extras: int = 0,
              before_write: Callable[[Plan], None] | None = None,
              on_done: Callable[[BuildResult], None] | None = None) -> list[BuildResult]:
    """Build every ``(bundle, arch)`` of ``targets``; see the module doc for the order.
    ``before_write(plan)`` runs once the manifest is signed and before the bundle's first
    byte (e.g. Sigstore signing, which may fail); ``on_done`` after each bundle."""
    _check_writable(out_dir)
    plans = [plan_bundle(spec, lock, bundle=b, arch=a, src=src, out_dir=out_dir,
                         workers=workers) for b, a in targets]
    for plan in plans:
        if known(plan):
            sign_plan(plan, sign)
            if not force:
                check_current(plan)
    bundlewrite.check_space(space_needs(plans, src, out_dir, extras=extras))
    results = []
    for plan in plans:
        before = (src.downloader.downloads, src.downloader.cache_hits)
        if not plan.up_to_date:
            fetch_plan(plan, src, workers=workers)
            checked = plan.signed is not None
            sign_plan(plan, sign)
            if force or checked or not check_current(plan):
                if before_write is not None:
                    before_write(plan)
                write_plan(plan)
        assert plan.manifest is not None
        res = BuildResult(plan.dest, plan.manifest, src.downloader.downloads - before[0],
                          src.downloader.cache_hits - before[1], plan.up_to_date,
                          dict(plan.phases))
        results.append(res)
        if on_done is not None:
            on_done(res)
    return results


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


def build(spec: Spec, lock: Lock, *, bundle: str, arch: str, src: Sources, out_dir: Path,
          sign: Signer | None = None, workers: int = 8, force: bool = False) -> BuildResult:
    """One bundle+arch (``build_all`` of one target)."""
    return build_all(spec, lock, [(bundle, arch)], src=src, out_dir=out_dir, sign=sign,
                     workers=workers, force=force)[0]

