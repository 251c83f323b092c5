"""Is a lock fit to use? Staleness against the spec, and the discovery gate.

One module for both questions, shared by `bundle lock`, `bundle check`, `bundle images` and
`bundle build`: a lock made from another spec, a manifest file added or edited since the lock,
a bundle or arch the lock does not hold, and images referenced by manifests or charts that the
bundle does not carry. Pure over the spec, the lock and chart archives from the cache.
"""

from __future__ import annotations

from pathlib import Path

from bundler.discover import ChartInput, Finding, compare, discover
from bundler.discover.lint import LintWarning, bundle_documents, lint_documents
from bundler.discover.model import BLIND_KINDS, INVALID, LOCAL_ONLY, REQUIRED_KINDS, UNRENDERED
from bundler.discover.report import images_report
from bundler.errors import MissingImagesError, SpecError
from bundler.fetch.sources import Sources
from bundler.lock.resolve import chart_values, local_files
from bundler.spec.lockfile import BundleLock, Lock
from bundler.spec.spec import BundleSpec, Spec


def check_spec_files(spec: Spec) -> None:
    """Every rule for the spec's local files (roots, key material, member names), with no
    lock needed: what `bundle lock` applies before resolving anything."""
    for b in spec.bundles.values():
        local_files(spec, b)
        for c in b.charts:
            chart_values(c)


def check_fresh(spec: Spec, lock: Lock, *, only: str | None = None) -> None:
    """Refuse a lock made from another spec, or whose local files (manifests and values
    files, of every bundle or of bundle ``only``) were added, removed or edited since; the
    error names the file. Cache-independent: the files on disk are hashed each time."""
    if lock.spec_digest != spec.digest:
        raise SpecError(f"the lock was made from another spec ({lock.spec_digest[:19]}... vs "
                        f"{spec.digest[:19]}... for {spec.path})",
                        hint="run `bundle lock` to update bundles.lock")
    for name, b in spec.bundles.items():
        if only is not None and name != only:
            continue
        if name not in lock.bundles:
            raise SpecError(f"bundle {name!r} is not in the lock",
                            hint="run `bundle lock` to update bundles.lock")
        bl = lock.bundles[name]
        for kind, now_files, pinned_files in (
                ("manifest", local_files(spec, b), bl.manifests),
                ("values", [f for c in b.charts for f in chart_values(c)],
                 [f for c in bl.charts for f in c.values])):
            now = {f.url: f.sha256 for f in now_files}
            pinned = {f.url: f.sha256 for f in pinned_files}
            for url in sorted(set(now) | set(pinned)):
                if url not in pinned:
                    why = "is new (not in the lock)"
                elif url not in now:
                    why = "is in the lock but no longer in the spec"
                elif now[url] != pinned[url]:
                    why = "was edited"
                else:
                    continue
                raise SpecError(f"bundle {name}: the {kind} files changed since the lock was "
                                f"written: {spec.base_dir / url} {why}",
                                hint="run `bundle lock` to pin it (and review the change)")


def check_lock(spec: Spec, lock: Lock, bundle: str, *, arch: str) -> BundleLock:
    """The locked bundle, after refusing a stale lock (spec or local files changed, whatever
    the cache holds) or an arch it does not hold."""
    if bundle not in lock.bundles:
        raise SpecError(f"bundle {bundle!r} is not in the lock",
                        hint=f"locked bundles: {', '.join(sorted(lock.bundles))}")
    check_fresh(spec, lock, only=bundle)
    bl = lock.bundles[bundle]
    if arch not in bl.arch:
        raise SpecError(f"bundle {bundle} is locked for {', '.join(bl.arch)}, not {arch}",
                        hint=f"add {arch!r} to bundles.{bundle}.arch and run `bundle lock`")
    return bl


def chart_paths(src: Sources, bl: BundleLock) -> dict[str, Path]:
    """Locked chart archives, from the cache (fetched by digest if absent)."""
    return {c.name: src.fetch_chart(c) for c in bl.charts}


def _chart_inputs(bundle: BundleSpec, charts: dict[str, Path]) -> list[ChartInput]:
    return [ChartInput(name=c.release or c.name, archive_or_dir=charts[c.name],
                       values_files=tuple(c.values), namespace=c.namespace)
            for c in bundle.charts]


def bundle_findings(spec: Spec, bundle: BundleSpec, charts: dict[str, Path]) -> list[Finding]:
    return discover(spec.manifest_files(bundle), _chart_inputs(bundle, charts))


def bundle_lint(spec: Spec, bundle: BundleSpec, charts: dict[str, Path]) -> list[LintWarning]:
    """The airgap lint warnings of one bundle (bundler.discover.lint), over the same manifests and
    chart renders discovery sees; files named relative to the spec folder."""
    docs = bundle_documents(spec.manifest_files(bundle), _chart_inputs(bundle, charts),
                            base=spec.base_dir)
    return lint_documents(docs)


def lint_lock(spec: Spec, lock: Lock, src: Sources) -> dict[str, list[LintWarning]]:
    """Per bundle of the spec: its airgap lint warnings (charts from the cache by digest)."""
    return {name: bundle_lint(spec, b, chart_paths(src, lock.bundles[name]))
            for name, b in spec.bundles.items()}


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
                  *, add_hint: bool, missing: list[Finding] | None = None
                  ) -> MissingImagesError:
    """The gate's failure, with a hint for each cause actually present: images to lock,
    local-only images to supply, documents that are not valid YAML, charts not rendered."""
    report = images_report(findings, bundle_images, as_json=False)
    if missing is None:
        missing, _ = compare(findings, bundle_images)
    hints = []
    absent = [f for f in missing if f.kind in REQUIRED_KINDS]
    if any(f.kind != LOCAL_ONLY for f in absent):
        hints.append("run `bundle lock --add-discovered` to lock the missing images, or add "
                     f"them to bundles.{name}.images" if add_hint else
                     f"add the missing images to bundles.{name}.images")
    if any(f.kind == LOCAL_ONLY for f in absent):
        hints.append("local-only images must be built or exported and added to "
                     f"bundles.{name}.images")
    bad_yaml = sorted({f.source for f in missing if f.kind == INVALID
                       and f.detail.startswith("not valid YAML")})
    if bad_yaml:
        hints.append(f"fix the YAML of {', '.join(bad_yaml)}")
    if any(f.kind == INVALID for f in missing if f.source not in bad_yaml):
        hints.append("fix the image fields reported as invalid")
    if any(f.kind == UNRENDERED for f in missing):
        hints.append("make the charts reported as not looked into renderable, or pass "
                     "--allow-unrendered after checking their images by hand")
    return MissingImagesError(f"bundle {name}: images referenced by its manifests or charts "
                              f"are not in the bundle, or could not be looked for:\n{report}",
                              hint="; ".join(hints) or None)
