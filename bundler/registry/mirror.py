"""`bundle mirror`: every locked image of the lock into an in-site registry (docs/fleet.md).

What goes up, per image and per target repository ``PREFIX/<upstream repository>``:

- each locked per-arch manifest of the bundle's arches, PUT by its digest, with its config and
  layers; the bytes are the locked ones (from the content cache, fetched by digest through
  ``Sources`` when absent), so the per-arch digests on the mirror are the lock's;
- the index, restricted to those per-arch manifests: when the upstream index lists other
  platforms (or attestations) it is a NEW index with its own digest (reported as
  ``index_digest``; canonical JSON of the upstream document minus the other entries), PUT by
  that digest and under the image's tag. A single-manifest image is PUT as is;
- except for an image pinned by its index digest (``image@sha256:<index>``, as many charts
  pin): then the exact upstream index bytes go up, under that digest, with every platform
  manifest it lists and their blobs (fetched by digest and verified), so a node pulling by
  that digest through the mirror gets it.

Every blob and manifest is asked for first (HEAD) and skipped when the registry holds it, so a
second mirror moves only what changed. Source bytes are verified by digest on the way into the
cache; the registry checks each upload's digest.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bundler.assemble.buildinputs import image_manifests
from bundler.assemble.imagearchive import Blob
from bundler.errors import SpecError, UpstreamError
from bundler.fetch.oci import INDEX_TYPES, RegistryClient, sha256_digest
from bundler.fetch.sources import Sources
from bundler.registry.ocipush import Access, client_for, endpoint_for
from bundler.spec.lockfile import ImageLock, Lock
from bundler.spec.refs import ImageRef, parse_image_ref
from installer.format import canonjson
from installer.sources.ocidist import OciRef

_REPO_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


@dataclass
class MirroredImage:
    ref: str
    repository: str                 # on the mirror
    tag: str | None
    locked_digest: str              # what the lock pins (the upstream index or manifest)
    index_digest: str               # what the mirror holds under the tag
    index_rewritten: bool           # index restricted to the bundle's arches: a new digest
    platforms: dict[str, str] = field(default_factory=dict)   # arch -> per-arch digest (same)

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class MirrorReport:
    target: str
    images: list[MirroredImage] = field(default_factory=list)
    pushed: int = 0                 # blobs uploaded
    skipped: int = 0                # blobs the registry already held
    bytes_pushed: int = 0
    bytes_skipped: int = 0
    manifests_pushed: int = 0       # per-arch manifests and indexes PUT by digest
    manifests_skipped: int = 0

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "images": [i.as_json() for i in self.images]}


def parse_target(url: str) -> tuple[str, str]:
    """``oci://HOST[:PORT][/PREFIX]`` -> (host, prefix) (pure: before any traffic)."""
    if not url.startswith("oci://"):
        raise SpecError(f"--to {url[:200]!r} is not an oci:// registry",
                        hint="write it like oci://registry.site.local:5000[/PREFIX]")
    host, _, prefix = url[len("oci://"):].partition("/")
    prefix = prefix.rstrip("/")
    if not host or "@" in url or (prefix and not _REPO_RE.match(prefix)) or \
            ":" in prefix:
        raise SpecError(f"--to {url[:200]}: expected oci://HOST[:PORT][/PREFIX]",
                        hint="no tag or digest: each image keeps its own; a prefix is "
                             "lowercase path components separated by /")
    return host, prefix


def restricted_index(data: bytes, keep: set[str], *, what: str) -> tuple[bytes, bool]:
    """The upstream index bytes, or a new index listing only the manifests in ``keep``
    (canonical JSON of the same document otherwise), and whether it changed (pure)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise UpstreamError(f"{what}: the index is not JSON") from None
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise UpstreamError(f"{what}: the index has no manifests list")
    kept = [e for e in entries if isinstance(e, dict) and e.get("digest") in keep]
    missing = keep - {e["digest"] for e in kept}
    if missing:
        raise UpstreamError(f"{what}: the index does not list the locked manifest "
                            f"{sorted(missing)[0]}", hint="the lock and the upstream index "
                            "disagree: run `bundle lock --update`")
    if len(kept) == len(entries):
        return data, False
    return canonjson.encode({**doc, "manifests": kept}), True


class _Pusher:
    """Uploads into one registry, each blob or manifest once per repository (HEAD first)."""

    def __init__(self, client: RegistryClient, report: MirrorReport) -> None:
        self.client = client
        self.report = report

    def blob(self, src: Sources, *, upstream: tuple[ImageRef, str], repo: str, blob: Blob,
             kind: str, what: str) -> None:
        """``upstream``: the image and its locked platform manifest (a registry's or, for a
        ``docker-daemon:`` image, the engine's: ``Sources.image_blob`` routes it)."""
        label = f"{self.report.target}/{repo}: blob {blob.digest[:19]}"
        if self.client.blob_exists(repo, blob.digest, what=label):
            self.report.skipped += 1
            self.report.bytes_skipped += blob.size
            return
        path = src.image_blob(upstream[0], upstream[1], blob.digest, declared=blob.size,
                              what=what, kind=kind)
        self.client.upload_blob(repo, blob.digest, path, size=blob.size, what=label)
        self.report.pushed += 1
        self.report.bytes_pushed += blob.size

    def manifest(self, repo: str, data: bytes, *, media_type: str,
                 tag: str | None = None) -> str:
        digest = sha256_digest(data)
        label = f"{self.report.target}/{repo}: manifest {digest[:19]}"
        if self.client.manifest_exists(repo, digest, what=label):
            self.report.manifests_skipped += 1
        else:
            self.client.put_manifest(repo, digest, data, media_type=media_type, what=label)
            self.report.manifests_pushed += 1
        if tag is not None:  # a tag may move: always PUT
            self.client.put_manifest(repo, tag, data, media_type=media_type,
                                     what=f"{self.report.target}/{repo}:{tag}")
        return digest


def _wanted(lock: Lock, bundles: list[str]) -> list[tuple[ImageLock, tuple[str, ...]]]:
    """Each locked image once, with the arches of the bundles (among ``bundles``) using it."""
    for name in bundles:
        if name not in lock.bundles:
            raise SpecError(f"bundle {name!r} is not in the lock",
                            hint=f"locked bundles: {', '.join(sorted(lock.bundles))}")
    by_ref: dict[tuple[str, str], tuple[ImageLock, set[str]]] = {}
    for name in bundles:
        bl = lock.bundles[name]
        for img in bl.images:
            entry = by_ref.setdefault((img.ref, img.digest), (img, set()))
            entry[1].update(a for a in bl.arch if a in img.platforms)
    return [(img, tuple(sorted(arches))) for img, arches in
            (by_ref[k] for k in sorted(by_ref)) if arches]


def _upstream_manifest(src: Sources, img: ImageLock, *, what: str) -> bytes:
    """The locked top-level manifest's bytes: from the cache, else by digest upstream."""
    cached = src.store.path(img.digest)
    if cached.is_file():
        data = cached.read_bytes()
        if sha256_digest(data) == img.digest:
            return data
    r = parse_image_ref(img.ref)
    return src.manifest(r.registry, r.repository, img.digest, what=what).data


def _exact_index(pusher: _Pusher, src: Sources, img: ImageLock, *, r: ImageRef, repo: str,
                 have: dict[str, str], what: str) -> str:
    """Push the upstream index bytes unchanged (its digest is what workloads pin), after every
    platform manifest it lists (besides those in ``have``, already up) with their config and
    layers, fetched by digest and verified; returns the index digest."""
    data = _upstream_manifest(src, img, what=what)
    doc = json.loads(data)
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise UpstreamError(f"{what}: the index has no manifests list")
    for entry in entries:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or digest in have.values():
            continue
        m = src.manifest(r.registry, r.repository, digest, what=f"{what} ({digest[:19]})",
                         size=entry.get("size"))
        if m.media_type in INDEX_TYPES:
            raise UpstreamError(f"{what}: the index nests another index ({digest})",
                                hint="mirror it by a platform manifest digest instead")
        body = m.json()
        descs = [body.get("config"), *(body.get("layers") or [])]
        for i, d in enumerate(descs):
            if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
                raise UpstreamError(f"{what}: manifest {digest} has a bad descriptor")
            kind = "config" if i == 0 else "layer"
            pusher.blob(src, upstream=(r, digest), repo=repo, kind=kind, what=what,
                        blob=Blob(d["digest"], src.limits.check_size(
                            kind, d.get("size"), what=what, source=f"manifest {digest}"),
                            Path()))
        pusher.manifest(repo, m.data, media_type=m.media_type)
    return pusher.manifest(repo, data, media_type=img.media_type, tag=r.tag)


def mirror(lock: Lock, src: Sources, *, to: str, bundles: list[str], access: Access,
           workers: int = 4) -> MirrorReport:
    host, prefix = parse_target(to)
    wanted = _wanted(lock, bundles)
    if not wanted:
        raise SpecError("nothing to mirror: the selected bundles lock no image")
    client = client_for(OciRef(host, prefix or "mirror", None), endpoint_for(host, access),
                        access=access, transport=src.transport)
    report = MirrorReport(target=f"oci://{host}" + (f"/{prefix}" if prefix else ""))
    pusher = _Pusher(client, report)
    for img, arches in wanted:
        r = parse_image_ref(img.ref)
        repo = f"{prefix}/{r.repository}" if prefix else r.repository
        what = f"image {img.ref}"
        found = [image_manifests(src, [img], a, workers=1)[0] for a in arches]
        blobs: dict[str, tuple[Blob, str, str]] = {}  # shared layers go up once
        for a, (_, _, descs) in zip(arches, found, strict=True):
            for i, b in enumerate(descs):
                blobs.setdefault(b.digest, (b, "config" if i == 0 else "layer", a))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            jobs = [pool.submit(pusher.blob, src, upstream=(r, img.platforms[a].digest),
                                repo=repo, blob=b, kind=kind, what=f"{what} ({a})")
                    for _, (b, kind, a) in sorted(blobs.items())]
            for job in jobs:
                job.result()
        platforms: dict[str, str] = {}
        for a, (manifest, media_type, _) in zip(arches, found, strict=True):
            data = manifest.path.read_bytes()
            if sha256_digest(data) != manifest.digest:  # the cache was tampered with
                raise UpstreamError(f"{what} ({a}): cached manifest {manifest.digest} does "
                                    "not match its digest", hint="delete it from the cache")
            single = img.media_type not in INDEX_TYPES
            platforms[a] = pusher.manifest(repo, data, media_type=media_type,
                                           tag=r.tag if single else None)
        if img.media_type in INDEX_TYPES and r.digest is not None:
            # pinned by its index digest (image@sha256:<index>): the exact upstream index
            index_digest = _exact_index(pusher, src, img, r=r, repo=repo, have=platforms,
                                        what=what)
            changed = False
        elif img.media_type in INDEX_TYPES:
            index, changed = restricted_index(
                _upstream_manifest(src, img, what=what), set(platforms.values()), what=what)
            index_digest = pusher.manifest(repo, index, media_type=img.media_type, tag=r.tag)
        else:
            index_digest, changed = img.digest, False
        report.images.append(MirroredImage(
            ref=img.ref, repository=repo, tag=r.tag, locked_digest=img.digest,
            index_digest=index_digest, index_rewritten=changed, platforms=platforms))
    return report
