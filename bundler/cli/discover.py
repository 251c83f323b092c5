"""`bundle images` and `bundle check`: discovery wired to the spec and the lock (the checks
themselves live in ``bundler.lock.gate``).

Charts are read from the content cache by their locked digest (fetched by digest only when the
cache lacks them), so these commands touch the network no more than they must.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from bundler.cli.context import CONTEXT, Ctx, out, pass_ctx
from bundler.discover import LOCAL_ONLY, REQUIRED_KINDS, Finding, compare
from bundler.discover.lint import lint_error, lint_json, lint_text
from bundler.discover.report import images_report
from bundler.errors import MissingImagesError
from bundler.fetch.cache import default_cache_dir
from bundler.fetch.sources import Sources
from bundler.lock.gate import (
    bundle_findings,
    chart_paths,
    check_fresh,
    check_spec_files,
    gate,
    lint_lock,
    locked_images,
    missing_error,
    pullable_missing,
)
from bundler.lock.resolve import resolve_chart
from bundler.spec.lockfile import Lock, read_lock
from bundler.spec.spec import Spec, load_spec


def _load(c: Ctx, cache: Path | None) -> tuple[Spec, Lock, Sources]:
    spec = load_spec(c.spec)
    check_spec_files(spec)
    lock = read_lock(c.lock)
    check_fresh(spec, lock)
    return spec, lock, Sources(spec, cache or default_cache_dir(), frozen=True)


def _listing(findings: list[Finding]) -> list[str]:
    """Each referenced image with every place it was found (file or chart:template, object,
    field), for the text output of `bundle images`."""
    where: dict[str, list[Finding]] = {}
    for f in findings:
        if f.kind in REQUIRED_KINDS:
            where.setdefault(f.image, []).append(f)
    lines = []
    for image, refs in sorted(where.items()):
        lines.append(f"  {image}{' (local-only)' if refs[0].kind == LOCAL_ONLY else ''}")
        lines += [f"    <- {f.source}: {f.location}" for f in refs]
    return lines


def _unlocked(spec: Spec, src: Sources, names: list[str]
              ) -> dict[str, tuple[list[Finding], list[str]]]:
    """Without a lock: each chart fetched as `bundle lock` would (into the cache only), and
    compared with the images the spec lists."""
    out = {}
    for name in names:
        b = spec.bundle(name)
        charts = {ch.name: src.fetch_chart(resolve_chart(src, spec, ch)) for ch in b.charts}
        out[name] = (bundle_findings(spec, b, charts), sorted(str(r) for r in b.images))
    return out


@click.command("images", context_settings=CONTEXT)
@click.option("--bundle", "only", metavar="NAME", help="Only this bundle.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Content cache folder.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def images_cmd(c: Ctx, *, only: str | None, cache: Path | None, as_json: bool) -> None:
    """List every image the bundle's manifests and charts reference, where each was found
    (file or chart template, object, field or argument) and whether the bundle carries it.

    Charts are rendered with Helm's own engine (helm-python-sdk) using the bundle's values.
    With no lock yet, charts are fetched as `bundle lock` would (into the cache only; no lock
    is written) and the bundle is what the spec lists. Exits 9 when an image is missing or a
    chart/HelmChart could not be looked into.
    """
    if c.lock.exists():
        spec, lock, src = _load(c, cache)
    else:
        spec = load_spec(c.spec)
        check_spec_files(spec)
        lock, src = None, Sources(spec, cache or default_cache_dir())
    with src:
        names = [only] if only else sorted(spec.bundles)
        for name in names:
            spec.bundle(name)  # an unknown --bundle is a clear error
        if lock is None:
            per_bundle = _unlocked(spec, src, names)
        else:
            per_bundle = {n: (bundle_findings(spec, spec.bundle(n),
                                              chart_paths(src, lock.bundles[n])),
                              locked_images(lock.bundles[n])) for n in names}
    reports, any_missing = {}, False
    for name, (findings, carried) in per_bundle.items():
        missing, _ = compare(findings, carried)
        any_missing |= bool(missing)
        reports[name] = images_report(findings, carried, as_json)
        if not as_json:
            reports[name] = "\n".join([*_listing(findings), reports[name]])
    doc = {n: json.loads(r) for n, r in reports.items()} if as_json else None
    if any_missing:  # with --json the report rides in the one error object, as "details"
        error = MissingImagesError("images are missing from the bundle (see the report "
                                   f"{'in details' if as_json else 'above'})",
                                   hint="`bundle lock --add-discovered` locks them")
        error.details = doc
    if as_json:
        if not any_missing:
            click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        for name, text in reports.items():
            click.echo(f"bundle {name}" + ("" if lock else f" (no lock: as {c.spec} lists it)")
                       + f":\n{text}")
    if any_missing:
        raise error


@click.command("check", context_settings=CONTEXT)
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Content cache folder.")
@click.option("--allow-unrendered", is_flag=True,
              help="Do not fail on charts or HelmCharts discovery could not render.")
@click.option("--strict", is_flag=True,
              help="Airgap lint warnings are errors (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def check_cmd(c: Ctx, *, cache: Path | None, allow_unrendered: bool, strict: bool,
              as_json: bool) -> None:
    """CI gate: the lock matches the spec and carries every discovered image.

    Uses only the lock and the cache (fetching locked chart archives by digest if needed);
    resolves no tag. Exit 2 for a stale lock, 9 for missing images. The airgap lint
    (imagePullPolicy: Always, :latest or untagged images, custom resources nothing in the
    bundle defines) warns on stderr, or fails (exit 2) with --strict.
    """
    spec, lock, src = _load(c, cache)
    with src:
        results = gate(spec, lock, src, allow_blind=allow_unrendered)
        for name, (findings, missing) in results.items():
            if missing:
                raise missing_error(name, findings, locked_images(lock.bundles[name]),
                                    add_hint=bool(pullable_missing(missing)))
        warnings = lint_lock(spec, lock, src)
    if strict and any(warnings.values()):
        raise lint_error(warnings)
    if any(warnings.values()):
        click.echo(lint_text(warnings), err=True)
    count = sum(len(w) for w in warnings.values())
    out(as_json, {"ok": True, "lock": str(c.lock), "spec": str(c.spec),
                  "bundles": sorted(results), "warnings": lint_json(warnings)},
        f"ok: {c.lock} matches {c.spec}; every referenced image is in its bundle"
        + (f" ({count} airgap lint warning(s) above)" if count else ""))


commands = [images_cmd, check_cmd]
