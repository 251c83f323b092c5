"""`bundle diff OLD NEW`: what changed between two bundles or two locks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bundler.assemble.diff import diff_files, render_text
from bundler.cli.context import CONTEXT


@click.command("diff", context_settings=CONTEXT)
@click.argument("old", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("new", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff_cmd(old: Path, new: Path, as_json: bool) -> None:
    """Show what changed from OLD to NEW: two bundle files, or two bundles.lock files.

    \b
    Reports the K3s version, images added, removed or moved to another digest, charts,
    every file by sha256 and size (a unified diff for manifest texts of bundles), and the
    size change. Reads only headers and manifest texts; verifies no signature.
    Exit 0: no change; 1: changes (like diff(1)); 2: bad input.
    """

    result = diff_files(old, new)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(render_text(result))
    sys.stdout.flush()
    if result.changed:
        raise click.exceptions.Exit(1)


commands = [diff_cmd]
