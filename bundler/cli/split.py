"""`bundle split BUNDLE --max-part-size SIZE`: parts with parity for media with a file size
limit (FAT32 sticks stop at 4 GiB)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bundler.assemble.release import split_bundle
from bundler.cli.context import CONTEXT
from installer.policy import human_bytes


@click.command("split", context_settings=CONTEXT)
@click.argument("bundle_file", metavar="BUNDLE",
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--max-part-size", "max_part_size", required=True, metavar="SIZE",
              help="Largest file the medium holds, e.g. 4G for FAT32 (K/M/G/T = 1024 powers). "
                   "Parts are the largest whole MiB strictly below it.")
@click.option("--parity/--no-parity", default=True, show_default=True,
              help="Write one XOR parity part: any ONE lost or damaged part can be rebuilt.")
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Key folder whose targets keys sign the parts index (as for build).")
@click.option("--unsigned", is_flag=True, help="Write an unsigned index (devices refuse it).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def split_cmd(*, bundle_file: Path, max_part_size: str, parity: bool, keys_dir: Path | None,
              unsigned: bool, as_json: bool) -> None:
    """Split BUNDLE into BUNDLE.part-001, -002, ..., BUNDLE.part-parity and a signed index
    BUNDLE.parts.json beside it; the parts replace BUNDLE.

    \b
    On the device, `airgap-install verify|install FOLDER` reads the parts set (one lost or
    damaged part rebuilt from parity, every bad part named otherwise; installer/sources/parts.py).
    `bundle build --max-part-size` splits as it builds. A bundle that already fits is left
    as it is.
    """

    res = split_bundle(bundle_file, max_part_size=max_part_size, parity=parity,
                       keys_dir=keys_dir, unsigned=unsigned)
    if res is None:
        size = bundle_file.stat().st_size
        msg = f"{bundle_file} ({human_bytes(size)}) fits in one file below {max_part_size}"
        click.echo(json.dumps({"split": False, "bundle": str(bundle_file)}) if as_json else msg)
    elif as_json:
        click.echo(json.dumps({"split": True, **res}, indent=2))
    else:
        click.echo(f"split {bundle_file} into {len(res['parts'])} parts"
                   f"{' + parity' if res['parity'] else ''}; index {res['index']}")


commands = [split_cmd]
