"""Resolve a spec into a lock: every artifact pinned by digest, per architecture.

Work items (one per K3s arch, image, chart) run concurrently on a bounded pool sharing one
transport. Items whose spec did not change keep their previous pin unless named in
``update`` (Cargo's rule: `bundle lock` never moves a pin it does not have to).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urljoin

from bundler.errors import BundleError, NotFoundError, UpstreamError
from bundler.fetch.sources import Sources
from bundler.fetch.transport import check_url
from bundler.spec import k3sfacts, specfiles
from bundler.spec.lockfile import (
    BundleLock,
    ChartLock,
    FileLock,
    ImageLock,
    K3sLock,
    Lock,
)
from bundler.spec.refs import ImageRef, parse_image_ref
from bundler.spec.spec import BundleSpec, ChartSpec, Spec
from bundler.spec.specfiles import LocalFile

HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
T = TypeVar("T")


def resolve_image(src: Sources, ref: ImageRef, arches: Iterable[str]) -> ImageLock:
    """Pin ``ref`` for every arch, by whichever source serves it (``Sources.image_source``)."""
    return src.image_source(ref).lock(ref, tuple(arches), what=f"image {ref}")


def resolve_k3s(src: Sources, spec: Spec, version: str, *, arches: Iterable[str],
                with_airgap_images: bool) -> K3sLock:
    _, sha, size = src.download_unpinned(spec.install_script, what="K3s install.sh",
                                         kind="install_script")
    install = FileLock(spec.install_script, sha, size)
    binaries: dict[str, FileLock] = {}
    images: dict[str, FileLock] = {}
    for arch in arches:
        sums_name = k3sfacts.checksums_name(arch)
        sums_url = k3sfacts.release_url(spec.releases, version, sums_name)
        source = f"K3s {version} {sums_name}"
        sums = k3sfacts.parse_checksums(src.get_text(sums_url, what=source, kind="checksums"),
                                        source=source)
        assets = [k3sfacts.binary_name(arch)]
        if with_airgap_images:
            assets.append(k3sfacts.airgap_images_name(arch))
        for asset in assets:
            sha = k3sfacts.checksum_for(sums, asset, source=source)
            url = k3sfacts.release_url(spec.releases, version, asset)
            what = f"K3s {version} {asset}"
            kind = "k3s_binary" if asset == assets[0] else "airgap_images"
            head = src.head_size(url, what=what, kind=kind)
            if head is None:
                _, got, size = src.download_unpinned(url, what=what, kind=kind)
                if got != sha:
                    raise UpstreamError(f"{what}: sha256 {got} does not match {sums_name} "
                                        f"({sha})", hint="the release asset is corrupt or was "
                                        "replaced; nothing was locked")
            else:
                size = head
                try:
                    # Fetching now checks the asset against the checksum file and warms the
                    # cache for `bundle build`.
                    src.fetch_url(url, sha, size, what=what, kind=kind,
                                  source="the HEAD Content-Length")
                except UpstreamError as e:
                    raise UpstreamError(f"{what} does not match its line in {sums_name}: "
                                        f"{e.message}", hint="the release asset is corrupt or "
                                        "was replaced; nothing was locked") from None
            entry = FileLock(url, sha, size)
            (binaries if asset == assets[0] else images)[arch] = entry
    return K3sLock(version=version, install_script=install, binaries=binaries,
                   airgap_images=images)


def resolve_chart(src: Sources, spec: Spec, chart: ChartSpec) -> ChartLock:
    what = f"chart {chart.name} {chart.version}"
    check = src.chart_check(chart.name, chart.version)
    if chart.is_oci:
        rest = chart.repo[len("oci://"):]
        host, _, path = rest.partition("/")
        repo = f"{path}/{chart.name}" if path else chart.name
        m = src.manifest(host, repo, chart.version, what=what)
        found = m.json().get("layers")
        layers = [ly for ly in (found if isinstance(found, list) else [])
                  if isinstance(ly, dict) and ly.get("mediaType") == HELM_CHART_LAYER]
        if len(layers) != 1 or not isinstance(layers[0].get("digest"), str):
            raise UpstreamError(f"{what}: OCI artifact {host}/{repo}:{chart.version} has no "
                                "Helm chart layer", hint="is it a Helm chart pushed with "
                                "`helm push`?")
        layer = layers[0]
        src.fetch_blob(host, repo, layer["digest"], declared=layer.get("size"), what=what,
                       kind="chart", source=f"OCI manifest {m.digest}", check=check)
        url = f"oci://{host}/{repo}@{m.digest}"
        sha, size = layer["digest"].split(":", 1)[1], int(layer["size"])
    else:
        url, declared = _index_entry(src, chart, what)
        _, sha, size = src.download_unpinned(url, what=what, kind="chart", check=check)
        if declared and declared != sha:
            raise UpstreamError(f"{what}: archive sha256 {sha} does not match the index "
                                f"digest {declared}", hint="the repository is inconsistent")
    values = chart_values(chart)
    return ChartLock(name=chart.name, version=chart.version, repo=chart.repo, url=url,
                     sha256=sha, size=size, namespace=chart.namespace,
                     release=chart.release or chart.name, values=values)


def _index_entry(src: Sources, chart: ChartSpec, what: str) -> tuple[str, str | None]:
    """The download URL and declared sha256 of a chart version in its repository's index
    (every field type-checked: the index is upstream data)."""
    index_url = f"{chart.repo}/index.yaml"
    index = src.chart_index(chart.repo)
    entries = index.get("entries") if isinstance(index, dict) else None
    if not isinstance(entries, dict):
        raise UpstreamError(f"{index_url} is not a Helm repository index (no entries mapping)")
    entry = _version_entry(entries, chart, what=what, index_url=index_url)
    urls = entry.get("urls")
    if not isinstance(urls, list) or not urls or not isinstance(urls[0], str):
        raise UpstreamError(f"{what}: index entry has no download URL")
    url = urljoin(chart.repo + "/", urls[0])
    check_url(url, what=f"{what} (from {index_url})")
    declared = entry.get("digest")
    if declared is not None and not isinstance(declared, str):
        raise UpstreamError(f"{what}: index entry digest is not a string")
    return url, declared


def _version_entry(entries: dict[str, Any], chart: ChartSpec, *, what: str,
                   index_url: str) -> dict[str, Any]:
    """The index entry of the chart's locked name and version, or an error naming what the
    index has instead."""
    versions = entries.get(chart.name) or []
    if not versions:
        names = sorted(str(n)[:100] for n in entries)
        close = difflib.get_close_matches(chart.name, names, n=3)
        raise NotFoundError(
            f"chart {chart.name}: no chart of that name in {index_url} (charts there: "
            f"{', '.join(names[:20]) or 'none'}{' ...' if len(names) > 20 else ''})",
            hint=(f"fix the chart name in bundles.toml (did you mean {' or '.join(close)}?)"
                  if close else "fix the chart name or the repo URL in bundles.toml"))
    if not isinstance(versions, list):
        raise UpstreamError(f"{index_url}: entries.{chart.name} is not a list")
    match = [e for e in versions if isinstance(e, dict) and e.get("version") == chart.version]
    if not match:
        have = sorted(str(e.get("version"))[:40] for e in versions
                      if isinstance(e, dict) and isinstance(e.get("version"), str))
        raise NotFoundError(f"{what}: not in {index_url} (versions: "
                            f"{', '.join(have[-10:]) or 'none'})",
                            hint="fix the version in bundles.toml")
    found: dict[str, Any] = match[0]
    return found


def _local_file(lf: LocalFile) -> FileLock:
    sha, size = specfiles.hash_checked(lf)
    return FileLock(url=lf.url, sha256=sha, size=size)


def chart_values(chart: ChartSpec) -> tuple[FileLock, ...]:
    """The chart's values files pinned (confined at spec load; key material refused here)."""
    return tuple(_local_file(v) for v in chart.value_files)


def local_files(spec: Spec, bundle: BundleSpec) -> tuple[FileLock, ...]:
    """The bundle's manifest files pinned: confined, named as members may be (see
    ``Spec.manifest_locals``), and free of private key material."""
    return tuple(_local_file(f) for f in spec.manifest_locals(bundle))


def _matches(update: set[str], *keys: str) -> bool:
    return "*" in update or any(k in update for k in keys)


Job = tuple[str, str, Callable[..., Any]]  # (bundle, label, work): one pool item


def resolve(spec: Spec, src: Sources, *, previous: Lock | None = None,
            update: Iterable[str] = (), workers: int = 16, epoch: int | None = None,
            extra_images: Mapping[str, Iterable[str]] | None = None,
            on_done: Callable[[str], None] | None = None) -> Lock:
    """Resolve every bundle of ``spec`` into a Lock.

    With ``previous``, unchanged entries keep their pins except those named in ``update``
    (an image reference, a chart name, ``k3s``, or ``*`` for everything). ``extra_images``
    (bundle -> references) are images discovery found that the spec does not list; they are
    locked like the spec's and recorded as ``discovered``.

    Steps: normalise ``update`` -> check local files (before any network traffic) -> one job
    per K3s release, image and chart (kept pin or fresh resolve) -> run them -> assemble.
    """
    extra = {name: tuple(dict.fromkeys(str(parse_image_ref(r)) for r in refs))
             for name, refs in (extra_images or {}).items()}
    upd = _update_keys(update)
    prev = previous.bundles if previous else {}
    local = _check_local_files(spec)
    jobs: list[Job] = []
    for b in spec.bundles.values():
        old = prev.get(b.name)
        jobs.append(_k3s_job(spec, src, b, old=old, upd=upd))
        jobs.extend(_image_jobs(src, b, extra.get(b.name, ()), old=old, upd=upd))
        jobs.extend(_chart_jobs(spec, src, b, old=old, upd=upd))
    results = _run(jobs, workers=workers, on_done=on_done)
    bundles = {b.name: _bundle_lock(b, jobs, results, manifests=local[b.name],
                                    extra=extra.get(b.name, ()))
               for b in spec.bundles.values()}
    if epoch is None:
        epoch = previous.source_date_epoch if previous else int(time.time())
    return Lock(spec_digest=spec.digest, source_date_epoch=epoch, bundles=bundles)


def _update_keys(update: Iterable[str]) -> set[str]:
    """``update`` as given plus each image reference in its normalised spelling."""
    upd = set(update)
    for u in list(upd):
        if ":" in u or "/" in u:
            try:
                upd.add(str(parse_image_ref(u)))
            except BundleError:
                pass
    return upd


def _check_local_files(spec: Spec) -> dict[str, tuple[FileLock, ...]]:
    """Local files first: a path outside the spec's roots, key material or a bad member name
    fails before any network traffic. Returns each bundle's manifests."""
    local = {b.name: local_files(spec, b) for b in spec.bundles.values()}
    for b in spec.bundles.values():
        for chart in b.charts:
            chart_values(chart)
    return local


def _k3s_job(spec: Spec, src: Sources, b: BundleSpec, *, old: BundleLock | None,
             upd: set[str]) -> Job:
    keep = (old is not None and old.k3s.version == b.k3s
            and set(old.k3s.binaries) == set(b.arch)
            and bool(old.k3s.airgap_images) == b.k3s_airgap_images
            and old.k3s.install_script.url == spec.install_script
            and not _matches(upd, "k3s", b.k3s))
    if keep:
        assert old is not None
        kept = old.k3s
        return (b.name, "k3s", lambda: kept)
    return (b.name, "k3s", lambda: resolve_k3s(src, spec, b.k3s, arches=b.arch,
                                                  with_airgap_images=b.k3s_airgap_images))


def _image_jobs(src: Sources, b: BundleSpec, extra: tuple[str, ...], *,
                old: BundleLock | None, upd: set[str]) -> list[Job]:
    spec_refs = {str(r) for r in b.images}
    discovered = [parse_image_ref(r) for r in extra if r not in spec_refs]
    jobs: list[Job] = []
    for ref in [*b.images, *discovered]:
        kept = None
        if old is not None and not _matches(upd, str(ref)):
            for il in old.images:
                if il.ref == str(ref) and set(il.platforms) == set(b.arch):
                    kept = il
        if kept is not None:
            jobs.append((b.name, f"image {ref}", lambda kept=kept: kept))
        else:
            jobs.append((b.name, f"image {ref}",
                         lambda ref=ref: resolve_image(src, ref, b.arch)))
    return jobs


def _chart_jobs(spec: Spec, src: Sources, b: BundleSpec, *, old: BundleLock | None,
                upd: set[str]) -> list[Job]:
    jobs: list[Job] = []
    for chart in b.charts:
        keep_chart = None
        if old is not None and not _matches(upd, chart.name):
            for cl in old.charts:
                if (cl.name, cl.version, cl.repo) == (chart.name, chart.version, chart.repo):
                    keep_chart = cl
        if keep_chart is not None:
            values = chart_values(chart)
            jobs.append((b.name, f"chart {chart.name}",
                         lambda k=keep_chart, v=values, c=chart: ChartLock(
                             k.name, k.version, k.repo, k.url, k.sha256, k.size,
                             c.namespace, c.release or c.name, v)))
        else:
            jobs.append((b.name, f"chart {chart.name}",
                         lambda chart=chart: resolve_chart(src, spec, chart)))
    return jobs


def _bundle_lock(b: BundleSpec, jobs: list[Job], results: list[Any], *,
                 manifests: tuple[FileLock, ...], extra: tuple[str, ...]) -> BundleLock:
    """One bundle's lock from the results of its jobs."""
    mine = [(label, r) for (name, label, _), r in zip(jobs, results, strict=True)
            if name == b.name]
    k3s = next(r for label, r in mine if label == "k3s")
    return BundleLock(
        name=b.name, version=b.version, arch=b.arch, roles=b.roles, k3s=k3s,
        images=tuple(r for label, r in mine if label.startswith("image ")),
        charts=tuple(r for label, r in mine if label.startswith("chart ")),
        manifests=manifests,
        allow_k3s_minor_skip=b.allow_k3s_minor_skip,
        allow_k3s_downgrade=b.allow_k3s_downgrade,
        discovered=tuple(r for r in extra if r not in {str(i) for i in b.images}))


def _run(jobs: list[tuple[str, str, Callable[[], T]]], *, workers: int,
         on_done: Callable[[str], None] | None) -> list[T]:
    """Run jobs on a bounded pool; the first failure (in job order) is raised, with every
    failure's message gathered so the user fixes them all at once."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(fn) for _, _, fn in jobs]
        results: list[Any] = []
        errors: list[BundleError] = []
        for (bundle, label, _), fut in zip(jobs, futures, strict=True):
            try:
                results.append(fut.result())
            except BundleError as e:
                errors.append(e)
                results.append(None)
            if on_done is not None:
                on_done(f"{bundle}: {label}")
    if errors:
        if len(errors) == 1:
            raise errors[0]
        first = errors[0]
        more = "\n".join(f"  - {e.message}" for e in errors[1:])
        raise type(first)(f"{first.message}\n  and {len(errors) - 1} more:\n{more}",
                          hint=first.hint)
    return results
