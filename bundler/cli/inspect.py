"""`bundle inspect`: what a bundle holds, from its header (plus its SBOM member), without
verifying or extracting anything (``bundler.assemble.describe``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bundler.assemble.describe import describe
from bundler.assemble.sbom import SBOM_PATH
from bundler.cli.context import CONTEXT
from bundler.errors import SpecError


@click.command("inspect", context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path, exists=True))
@click.option("--sbom", "show_sbom", is_flag=True,
              help="Print the bundle's CycloneDX SBOM document instead of the summary.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_cmd(file: Path, show_sbom: bool, as_json: bool) -> None:
    """Show what a bundle holds without extracting it (reads its header and its SBOM).

    Works on a read-only medium. This does not verify signatures or payload bytes: use
    `bundle verify` or `airgap-install verify` for that. The root fingerprint shown is the
    newest root the bundle ships; a device shows the same for the same root. FILE may be a
    folder of split parts (or its .parts.json index): they are reassembled in $TMPDIR first.
    """
    d = describe(file)
    for warning in d.warnings:
        click.echo(warning, err=True)
    if show_sbom:
        if d.sbom is None:
            raise SpecError(f"{file} carries no readable SBOM ({SBOM_PATH})",
                            hint="bundles built before SBOMs were added have none: rebuild")
        click.echo(d.sbom.decode().rstrip("\n"))
    elif as_json:
        click.echo(json.dumps(d.doc, indent=2, sort_keys=True))
    else:
        for line in d.text():
            click.echo(line)


commands = [inspect_cmd]
