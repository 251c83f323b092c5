"""`bundle lock`: resolve bundles.toml into bundles.lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bundler.cli.context import CONTEXT, Ctx, out, pass_ctx
from bundler.discover.lint import lint_error, lint_json, lint_text
from bundler.fetch.cache import default_cache_dir
from bundler.fetch.sources import Sources
from bundler.fetch.transport import RetryPolicy
from bundler.lock.locking import lock_spec, save
from bundler.spec.lockfile import Lock, read_lock
from bundler.spec.spec import load_spec


@click.command("lock", context_settings=CONTEXT)
@click.option("--check", is_flag=True,
              help="Write nothing; exit 8 and list each drift if the lock is out of date "
                   "(spec changed, tag moved upstream, artifact gone).")
@click.option("--update", "update", multiple=True, metavar="REF",
              help="Re-resolve only this entry (image reference, chart name, or 'k3s'); "
                   "repeatable. '*' re-resolves everything.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Content cache folder (default: $XDG_CACHE_HOME/k3s-airgap-bundler).")
@click.option("--jobs", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Concurrent lookups.")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Seconds without a byte before a request is retried.")
@click.option("--add-discovered", is_flag=True,
              help="Lock images that discovery finds in manifests and charts but the spec "
                   "does not list (recorded as 'discovered' in the lock).")
@click.option("--allow-unrendered", is_flag=True,
              help="Do not fail on charts or HelmCharts discovery could not render.")
@click.option("--strict", is_flag=True,
              help="Airgap lint warnings are errors: exit 2 and write no lock.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def lock_cmd(c: Ctx, *, check: bool, update: tuple[str, ...], cache: Path | None, jobs: int,
             timeout: float, add_discovered: bool, allow_unrendered: bool, strict: bool,
             as_json: bool) -> None:
    """Resolve bundles.toml into bundles.lock (every artifact pinned by digest, per arch).

    Entries whose spec is unchanged keep their pins; use --update to move one. Before
    writing, every image the bundle's manifests and charts reference must be in the bundle
    (exit 9 lists each with where it was found); --add-discovered locks them instead.
    The airgap lint (imagePullPolicy: Always, :latest or untagged images, custom resources
    nothing in the bundle defines) warns on stderr, or fails with --strict.
    """

    spec = load_spec(c.spec)
    previous: Lock | None = read_lock(c.lock) if c.lock.exists() else None
    total = sum(1 + len(b.images) + len(b.charts) for b in spec.bundles.values())
    with Sources(spec, cache or default_cache_dir(),
                 policy=RetryPolicy(read_timeout=timeout)) as src:
        with c.progress(total, "resolving") as bar:
            result = lock_spec(spec, src, previous=previous, update=update, check=check,
                               add_discovered=add_discovered, allow_unrendered=allow_unrendered,
                               workers=jobs, on_done=lambda _: bar.update(1))
    if check:
        if result.drift:
            raise result.drift_error()  # with --json: the error object's details
        out(as_json, {"drift": []}, f"{c.lock} is up to date")
        return
    if strict and any(result.warnings.values()):
        raise lint_error(result.warnings)  # before anything is written
    if any(result.warnings.values()):
        click.echo(lint_text(result.warnings), err=True)
    changed = save(c.lock, result)
    new = result.lock
    summary: dict[str, dict[str, Any]] = {
        name: {"images": len(b.images), "charts": len(b.charts), "arch": list(b.arch),
               "k3s": b.k3s.version, "discovered": list(b.discovered)}
        for name, b in new.bundles.items()}
    lines = [f"{'wrote' if changed else 'unchanged'} {c.lock}"]
    for n, s in summary.items():
        lines.append(f"  {n}: K3s {s['k3s']}, {s['images']} images, {s['charts']} charts, "
                     f"arch {', '.join(s['arch'])}")
        for ref in result.added.get(n, ()):
            lines.append(f"    + {ref} (added by discovery)")
    out(as_json, {"lock": str(c.lock), "changed": changed, "bundles": summary,
                   "added_discovered": {n: list(r) for n, r in result.added.items()},
                   "warnings": lint_json(result.warnings)},
        "\n".join(lines))


commands = [lock_cmd]
