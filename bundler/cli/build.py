"""`bundle build`: flags into a ``BuildRequest``, one ``build_release`` call, its output."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bundler.assemble.release import BuildRequest, build_release
from bundler.cli.context import CONTEXT, ArchType, Ctx, pass_ctx


@click.command("build", context_settings=CONTEXT)
@click.option("--arch", "arches", multiple=True, type=ArchType(),
              help="Architecture to build for; repeatable (default: every arch the bundle is "
                   "locked for). arm means linux/arm/v7; x86_64, aarch64, armhf, armv7l are "
                   "accepted as aliases.")
@click.option("--bundle", "bundles", multiple=True, metavar="NAME",
              help="Bundle(s) to build (default: every bundle locked for that arch).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("dist"), show_default=True,
              help="Output folder; it can be copied to a USB stick as is.")
@click.option("--frozen", is_flag=True,
              help="Use only the cache and locked digests; fail rather than look anything up.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Content cache folder (default: $XDG_CACHE_HOME/k3s-airgap-bundler).")
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Key folder from `bundle keys init`: sign with its targets keys "
                                 "and ship its root chain (default: [signing] keys in the spec).")
@click.option("--unsigned", is_flag=True,
              help="Build unsigned bundles on purpose (devices refuse them); needed when "
                   "neither --keys nor [signing] keys is given.")
@click.option("--sigstore", is_flag=True,
              help="Also sign keyless with Sigstore (CI only: needs an ambient OIDC token).")
@click.option("--jobs", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Concurrent downloads.")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Seconds without a byte before a download is retried (it resumes).")
@click.option("--force", is_flag=True,
              help="Write the bundle even when the output folder already holds an identical, "
                   "verified one (default: leave it in place, 'up to date').")
@click.option("--max-part-size", "max_part_size", metavar="SIZE", default=None,
              help="Split each bundle larger than SIZE (e.g. 4G for FAT32; K/M/G/T = 1024 "
                   "powers) into parts with a signed index, as `bundle split` does "
                   "(default: one file).")
@click.option("--parity", type=click.IntRange(0, 1), default=1, show_default=True,
              help="Parity parts per split bundle: 1 rebuilds any ONE lost or damaged part; "
                   "0 writes none.")
@click.option("--delta-from", "delta_from", type=click.Path(path_type=Path, dir_okay=False),
              default=None, metavar="RECEIPT|OLD_BUNDLE",
              help="Also write <name>-<version>-<arch>.delta.tar: only the members this "
                   "device receipt (`airgap-install receipt`) or old bundle lacks.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def build_cmd(c: Ctx, *, arches: tuple[str, ...], bundles: tuple[str, ...], out: Path,
              frozen: bool, cache: Path | None, keys_dir: Path | None, unsigned: bool,
              sigstore: bool, jobs: int, timeout: float, force: bool, max_part_size: str | None,
              parity: int, delta_from: Path | None, as_json: bool) -> None:
    """Build DIR/<name>-<version>-<arch>.tar from bundles.lock, in the shape K3s consumes.

    Fetches exactly the locked digests (never re-resolves a tag), verifies every byte,
    reuses the cache, and writes the bundle atomically. Signs with --keys or the spec's
    [signing] keys; --unsigned says an unsigned bundle is meant. Credentials and free space
    for the whole run are checked before the first byte is written. A bundle already in DIR
    with the same manifest is verified once and left in place (--force rewrites it). Also writes
    airgap-install.pyz, INSTALL.txt and SHA256SUMS so DIR can go onto a USB stick as is.
    """
    req = BuildRequest(spec=c.spec, lock=c.lock, out=out, arches=arches, bundles=bundles,
                       frozen=frozen, cache=cache, keys_dir=keys_dir, unsigned=unsigned,
                       sigstore=sigstore, jobs=jobs, timeout=timeout, force=force,
                       max_part_size=max_part_size, parity=parity, delta_from=delta_from)
    with c.progress(0, "fetching", unit="B", unit_scale=True, unit_divisor=1024) as bar:
        def grow(n: int) -> None:
            bar.total = (bar.total or 0) + n
            bar.refresh()
        release = build_release(req, on_bytes=bar.update, on_total=grow)
    if as_json:
        click.echo(json.dumps(release.to_json(), indent=2, sort_keys=True))
    else:
        for line in release.text():
            click.echo(line)


commands = [build_cmd]
