"""Discovery wired to the spec and the lock: `bundle images`, `bundle check`, and the gate
`bundle lock` runs before it writes a lock.

Charts are read from the content cache by their locked digest (fetched by digest only when the
cache lacks them), so these commands touch the network no more than they must.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli import CONTEXT, Ctx, pass_ctx
from .discover import ChartInput, Finding, compare, discover
from .discover.cli import images_report
from .discover.model import BLIND_KINDS, LOCAL_ONLY, REQUIRED_KINDS
from .errors import MissingImagesError, SpecError
from .lockfile import BundleLock, Lock
from .sources import Sources
from .spec import BundleSpec, Spec


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


def _load(c: Ctx, cache: Path | None) -> tuple[Spec, Lock, Sources]:
    from .cache import default_cache_dir
    from .lockfile import read_lock
    from .spec import load_spec
    spec = load_spec(c.spec)
    lock = read_lock(c.lock)
    if lock.spec_digest != spec.digest:
        raise SpecError("the lock was made from another spec",
                        hint="run `bundle lock` to update bundles.lock")
    from .resolve import local_files
    for name, b in spec.bundles.items():
        # a glob that now matches another file, or an edited manifest, makes the lock stale
        if {(f.url, f.sha256) for f in local_files(spec, b)} != \
                {(f.url, f.sha256) for f in lock.bundles[name].manifests}:
            raise SpecError(f"bundle {name}: the manifest files changed since the lock was "
                            "written", hint="run `bundle lock` to pin them")
    return spec, lock, Sources(spec, cache or default_cache_dir(), frozen=True)


@click.command("images", context_settings=CONTEXT)
@click.option("--bundle", "only", metavar="NAME", help="Only this bundle.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Content cache folder.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def images_cmd(c: Ctx, only: str | None, cache: Path | None, as_json: bool) -> None:
    """List every image the bundle's manifests and charts reference, where each was found
    (file, object, field or argument) and whether the bundle carries it.

    Charts are rendered with Helm's own engine (helm-python-sdk) using the bundle's values.
    Exits 9 when an image is missing or a chart/HelmChart could not be looked into.
    """
    spec, lock, src = _load(c, cache)
    with src:
        names = [only] if only else sorted(spec.bundles)
        reports, any_missing = {}, False
        for name in names:
            b, bl = spec.bundle(name), lock.bundles[name]
            findings = bundle_findings(spec, b, chart_paths(src, bl))
            missing, _ = compare(findings, locked_images(bl))
            any_missing |= bool(missing)
            reports[name] = images_report(findings, locked_images(bl), as_json)
    if as_json:
        click.echo(json.dumps({n: json.loads(r) for n, r in reports.items()}, indent=2,
                              sort_keys=True))
    else:
        for name, text in reports.items():
            click.echo(f"bundle {name}:\n{text}")
    if any_missing:
        raise MissingImagesError("images are missing from the bundle (see the report above)",
                                 hint="`bundle lock --add-discovered` locks them")


@click.command("check", context_settings=CONTEXT)
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Content cache folder.")
@click.option("--allow-unrendered", is_flag=True,
              help="Do not fail on charts or HelmCharts discovery could not render.")
@pass_ctx
def check_cmd(c: Ctx, cache: Path | None, allow_unrendered: bool) -> None:
    """CI gate: the lock matches the spec and carries every discovered image.

    Uses only the lock and the cache (fetching locked chart archives by digest if needed);
    resolves no tag. Exit 2 for a stale lock, 9 for missing images.
    """
    spec, lock, src = _load(c, cache)
    with src:
        results = gate(spec, lock, src, allow_blind=allow_unrendered)
    for name, (findings, missing) in results.items():
        if missing:
            raise missing_error(name, findings, locked_images(lock.bundles[name]),
                                add_hint=bool(pullable_missing(missing)))
    click.echo(f"ok: {c.lock} matches {c.spec}; every referenced image is in its bundle")


commands = [images_cmd, check_cmd]
