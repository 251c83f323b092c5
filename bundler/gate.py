"""Is a lock fit to use? Staleness against the spec, and the discovery gate.

One module for both questions, shared by `bundle lock`, `bundle check`, `bundle images` and
`bundle build`: a lock made from another spec, a manifest file added or edited since the lock,
a bundle or arch the lock does not hold, and images referenced by manifests or charts that the
bundle does not carry. Pure over the spec, the lock and chart archives from the cache.
"""

from __future__ import annotations

from pathlib import Path

from .discover import ChartInput, Finding, compare, discover
from .discover.model import BLIND_KINDS, LOCAL_ONLY, REQUIRED_KINDS
from .discover.report import images_report
from .errors import MissingImagesError, SpecError
from .lockfile import BundleLock, Lock
from .sources import Sources
from .spec import BundleSpec, Spec


def check_fresh(spec: Spec, lock: Lock) -> None:
    """Refuse a lock made from another spec, or whose manifest files changed since."""
    if lock.spec_digest != spec.digest:
        raise SpecError(f"the lock was made from another spec ({lock.spec_digest[:19]}... vs "
                        f"{spec.digest[:19]}... for {spec.path})",
                        hint="run `bundle lock` to update bundles.lock")
    from .resolve import local_files
    for name, b in spec.bundles.items():
        # a glob that now matches another file, or an edited manifest, makes the lock stale
        if {(f.url, f.sha256) for f in local_files(spec, b)} != \
                {(f.url, f.sha256) for f in lock.bundles[name].manifests}:
            raise SpecError(f"bundle {name}: the manifest files changed since the lock was "
                            "written", hint="run `bundle lock` to pin them")


def check_lock(spec: Spec, lock: Lock, bundle: str, arch: str) -> BundleLock:
    """The locked bundle, after refusing a stale lock or an arch it does not hold."""
    if lock.spec_digest != spec.digest:
        raise SpecError(f"the lock was made from another spec ({lock.spec_digest[:19]}... vs "
                        f"{spec.digest[:19]}... for {spec.path})",
                        hint="run `bundle lock` to update bundles.lock, then build again")
    if bundle not in lock.bundles:
        raise SpecError(f"bundle {bundle!r} is not in the lock",
                        hint=f"locked bundles: {', '.join(sorted(lock.bundles))}")
    bl = lock.bundles[bundle]
    if arch not in bl.arch:
        raise SpecError(f"bundle {bundle} is locked for {', '.join(bl.arch)}, not {arch}",
                        hint=f"add {arch!r} to bundles.{bundle}.arch and run `bundle lock`")
    return bl


def chart_paths(src: Sources, bl: BundleLock) -> dict[str, Path]:
    """Locked chart archives, from the cache (fetched by digest if absent)."""
    return {c.name: src.fetch_chart(c) for c in bl.charts}


def bundle_findings(spec: Spec, bundle: BundleSpec, charts: dict[str, Path]) -> list[Finding]:
    inputs = [ChartInput(name=c.release or c.name, archive_or_dir=charts[c.name],
                         values_files=tuple(c.values), namespace=c.namespace)
              for c in bundle.charts]
    return discover(spec.manifest_files(bundle), inputs)


def locked_images(bl: BundleLock) -> list[str]:
    return sorted(i.ref for i in bl.images)


def gate(spec: Spec, lock: Lock, src: Sources, *, allow_blind: bool = False
         ) -> dict[str, tuple[list[Finding], list[Finding]]]:
    """Per bundle: ``(findings, missing)``; ``missing`` excludes blind spots when allowed."""
    result = {}
    for name, b in spec.bundles.items():
        bl = lock.bundles[name]
        findings = bundle_findings(spec, b, chart_paths(src, bl))
        missing, _ = compare(findings, locked_images(bl))
        if allow_blind:
            missing = [f for f in missing if f.kind not in BLIND_KINDS]
        result[name] = (findings, missing)
    return result


def pullable_missing(missing: list[Finding]) -> list[str]:
    """Missing images that `--add-discovered` can lock (registry images, not local-only)."""
    return sorted({f.image for f in missing if f.kind in REQUIRED_KINDS and f.kind != LOCAL_ONLY})


def missing_error(name: str, findings: list[Finding], bundle_images: list[str],
                  *, add_hint: bool) -> MissingImagesError:
    report = images_report(findings, bundle_images, as_json=False)
    hint = ("run `bundle lock --add-discovered` to lock them, or add them to "
            f"bundles.{name}.images" if add_hint else
            f"add them to bundles.{name}.images (local-only images must be built/exported)")
    return MissingImagesError(f"bundle {name}: images referenced by its manifests or charts "
                              f"are not in the bundle:\n{report}", hint=hint)
