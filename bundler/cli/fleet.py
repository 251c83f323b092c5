"""``bundle push`` / ``bundle pull`` (and ``bundle repo push``, registered in ``repo``): bundles
and ring repositories through an OCI registry (thin layer over ``bundler.ocipush``;
docs/fleet.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .context import CONTEXT, out

_json_opt = click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
_plain_opt = click.option("--plain-http", is_flag=True,
                          help="Plain HTTP to a registry that is not on loopback "
                               "(loopback always is).")


def _human(report: Any) -> str:
    return (f"pushed {report.target} ({report.digest}): {report.files} files, "
            f"{report.pushed} blobs ({report.bytes_pushed} bytes) pushed, "
            f"{report.skipped} ({report.bytes_skipped} bytes) already there")


@click.command("push", context_settings=CONTEXT)
@click.argument("items", nargs=-1, required=True, metavar="BUNDLE... oci://HOST/REPO[:TAG]")
@_plain_opt
@_json_opt
def push_cmd(items: tuple[str, ...], plain_http: bool, as_json: bool) -> None:
    """Push bundle files to a registry, one artifact each, tagged <name>-<version>-<arch>
    unless a tag is given (one bundle only)."""
    if len(items) < 2 or not items[-1].startswith("oci://"):
        raise click.UsageError("expected BUNDLE... oci://HOST/REPO[:TAG]")
    from ..ocipush import push_bundles
    reports = push_bundles([Path(p) for p in items[:-1]], items[-1], plain_http=plain_http)
    out(as_json, {"pushed": [r.as_json() for r in reports]},
        "\n".join(_human(r) for r in reports))


@click.command("repo-push", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("target", metavar="oci://HOST/REPO[:TAG]")
@_plain_opt
@_json_opt
def repo_push_cmd(*, directory: Path, target: str, plain_http: bool, as_json: bool) -> None:
    """Push a ring repository folder (every regular file) as one artifact, tag `repo` by
    default; devices then sync with `airgap-install sync --source oci://HOST/REPO:repo`."""
    from ..ocipush import push_repo
    report = push_repo(directory, target, plain_http=plain_http)
    out(as_json, report.as_json(), _human(report))


@click.command("pull", context_settings=CONTEXT)
@click.argument("source", metavar="oci://HOST/REPO:TAG")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The folder to write the files into (a stick, a share).")
@_plain_opt
@_json_opt
def pull_cmd(*, source: str, out_dir: Path, plain_http: bool, as_json: bool) -> None:
    """Pull a pushed ring repository or bundle onto a folder, each file verified against
    its digest and written atomically."""
    from ..ocipush import pull
    report = pull(source, out_dir, plain_http=plain_http)
    out(as_json, report.as_json(),
        f"pulled {len(report.files)} files ({report.bytes} bytes) from {report.source} "
        f"into {report.out}")


commands = [push_cmd, pull_cmd]
