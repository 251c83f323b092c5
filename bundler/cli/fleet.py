"""``bundle push`` / ``bundle pull`` (and ``bundle repo push``, registered in ``repo``): bundles
and ring repositories through an OCI registry (thin layer over ``bundler.registry.ocipush``;
docs/fleet.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bundler.cli.context import CONTEXT, Ctx, out, pass_ctx
from bundler.fetch.cache import default_cache_dir
from bundler.fetch.sources import Sources
from bundler.lock.gate import check_fresh
from bundler.registry.mirror import mirror, parse_target
from bundler.registry.ocipush import access_from, pull, push_bundles, push_repo
from bundler.spec.lockfile import read_lock
from bundler.spec.spec import load_spec

_json_opt = click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")


def _access_opts(f: Any) -> Any:
    """``--plain-http``, ``--ca-file``, ``--credentials-file``: how every registry command
    reaches its registry (``bundler.registry.ocipush.access_from``)."""
    for opt in reversed((
            click.option("--plain-http", is_flag=True,
                         help="Plain HTTP to a registry that is not on loopback (loopback is "
                              "plain HTTP unless --ca-file is given)."),
            click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path),
                         default=None, metavar="PEM",
                         help="CA certificates for the registry's https (default: the "
                              "system's); on loopback this switches to https."),
            click.option("--credentials-file", type=click.Path(dir_okay=False, path_type=Path),
                         default=None, metavar="FILE",
                         help="Registry credentials: one line user:password, or "
                              "{\"username\": .., \"password\": ..} (default: "
                              "$AIRGAP_REGISTRY_USERNAME and $AIRGAP_REGISTRY_PASSWORD; never "
                              "on the command line)."))):
        f = opt(f)
    return f


def _access(plain_http: bool, ca_file: Path | None, credentials_file: Path | None) -> Any:
    return access_from(plain_http=plain_http, ca_file=ca_file,
                       credentials_file=credentials_file)


def _human(report: Any) -> str:
    return (f"pushed {report.target} ({report.digest}): {report.files} files, "
            f"{report.pushed} blobs ({report.bytes_pushed} bytes) pushed, "
            f"{report.skipped} ({report.bytes_skipped} bytes) already there")


@click.command("push", context_settings=CONTEXT)
@click.argument("items", nargs=-1, required=True, metavar="BUNDLE... oci://HOST/REPO[:TAG]")
@_access_opts
@_json_opt
def push_cmd(*, items: tuple[str, ...], plain_http: bool, ca_file: Path | None,
             credentials_file: Path | None, as_json: bool) -> None:
    """Push bundle files to a registry, one artifact each, tagged <name>-<version>-<arch>
    unless a tag is given (one bundle only)."""
    if len(items) < 2 or not items[-1].startswith("oci://"):
        raise click.UsageError("expected BUNDLE... oci://HOST/REPO[:TAG]")
    reports = push_bundles([Path(p) for p in items[:-1]], items[-1],
                           access=_access(plain_http, ca_file, credentials_file))
    out(as_json, {"pushed": [r.as_json() for r in reports]},
        "\n".join(_human(r) for r in reports))


@click.command("repo-push", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("target", metavar="oci://HOST/REPO[:TAG]")
@_access_opts
@_json_opt
def repo_push_cmd(*, directory: Path, target: str, plain_http: bool, ca_file: Path | None,
                  credentials_file: Path | None, as_json: bool) -> None:
    """Push a ring repository folder (every regular file but `staged/`, the changes still
    waiting for signatures) as one artifact, tag `latest` by default; devices then sync with
    `airgap-install sync --source oci://HOST/REPO`."""
    report = push_repo(directory, target, access=_access(plain_http, ca_file, credentials_file))
    left = (f"\nleft out {len(report.left_out)} staged files (waiting for signatures; "
            "`bundle repo sign` publishes them)") if report.left_out else ""
    out(as_json, report.as_json(), _human(report) + left)


@click.command("pull", context_settings=CONTEXT)
@click.argument("source", metavar="oci://HOST/REPO:TAG")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The folder to write the files into (a stick, a share).")
@_access_opts
@_json_opt
def pull_cmd(*, source: str, out_dir: Path, plain_http: bool, ca_file: Path | None,
             credentials_file: Path | None, as_json: bool) -> None:
    """Pull a pushed ring repository or bundle onto a folder, each file verified against
    its digest and written atomically."""
    report = pull(source, out_dir, access=_access(plain_http, ca_file, credentials_file))
    out(as_json, report.as_json(),
        f"pulled {len(report.files)} files ({report.bytes} bytes) from {report.source} "
        f"into {report.out}")


@click.command("mirror", context_settings=CONTEXT)
@click.option("--to", "target", required=True, metavar="oci://HOST[/PREFIX]",
              help="The in-site registry; image REPO goes to PREFIX/REPO.")
@click.option("--bundle", "bundles", multiple=True, metavar="NAME",
              help="Mirror the images of this bundle only; repeatable (default: every locked "
                   "bundle).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Content cache folder (default: $XDG_CACHE_HOME/k3s-airgap-bundler).")
@click.option("--jobs", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Concurrent blob transfers.")
@_access_opts
@_json_opt
@pass_ctx
def mirror_cmd(c: Ctx, *, target: str, bundles: tuple[str, ...], cache: Path | None, jobs: int,
               plain_http: bool, ca_file: Path | None, credentials_file: Path | None,
               as_json: bool) -> None:
    """Push every locked image (per-arch manifests by their locked digests, the index
    restricted to the bundle's arches, and the tag) to an in-site registry, skipping what it
    already holds (HEAD first). Bytes come from the content cache, fetched by digest when
    absent. A restricted index is a new index (its digest is printed); per-arch digests are
    the lock's, so K3s nodes pulling by those digests through the mirror get the same bytes."""
    parse_target(target)  # a bad target fails before the spec is read
    access = _access(plain_http, ca_file, credentials_file)
    spec = load_spec(c.spec)
    lock = read_lock(c.lock)
    check_fresh(spec, lock)
    with Sources(spec, cache or default_cache_dir(), frozen=True,
                 pool_size=max(16, jobs)) as src:
        report = mirror(lock, src, to=target, bundles=list(bundles) or sorted(lock.bundles),
                        access=access, workers=jobs)
    lines = [f"mirrored {len(report.images)} images to {report.target}: {report.pushed} blobs "
             f"({report.bytes_pushed} bytes) pushed, {report.skipped} ({report.bytes_skipped} "
             f"bytes) already there; {report.manifests_pushed} manifests pushed, "
             f"{report.manifests_skipped} already there"]
    for img in report.images:
        note = " (new index: restricted to " + ", ".join(sorted(img.platforms)) + ")" \
            if img.index_rewritten else ""
        lines.append(f"  {img.ref} -> {report.target.split('/', 3)[2]}/{img.repository}"
                     f"{':' + img.tag if img.tag else ''}@{img.index_digest}{note}")
        lines += [f"    {a}: {d}" for a, d in sorted(img.platforms.items())]
    out(as_json, report.as_json(), "\n".join(lines))


commands = [push_cmd, pull_cmd, mirror_cmd]
