"""``bundle keys``: create a key directory and rotate keys (thin layer over ``bundler.keys``).

The main CLI registers the group with ``cli.add_command(keys)`` and maps ``BundleError``
families to exit codes; nothing here catches errors or exits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bundler.cli.context import CONTEXT

if TYPE_CHECKING:  # bundler.keys pulls in python-tuf and securesystemslib: import on use
    from bundler.keys import KeyDirReport

from bundler.keys import describe, init_keys, rotate, sign_root
from installer.trust.rootmeta import TOP_LEVEL_ROLES as ROLES

_dir_arg = click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
_expires_opt = click.option("--expires-days", type=click.IntRange(min=1), default=365,
                            show_default=True, help="Days until the new root.json expires.")
_passphrase_opt = click.option(
    "--passphrase-env", metavar="VAR", default=None,
    help="Environment variable holding the passphrase that encrypts the private keys.")


def _warn_unencrypted(report: KeyDirReport) -> None:
    if not report.encrypted:
        click.echo(f"WARNING: the private keys in {report.directory / 'keys'} are NOT "
                   "encrypted: anyone who can read them can sign bundles that devices "
                   "trust. Use --passphrase-env VAR to encrypt them.", err=True)


def _report(report: KeyDirReport, as_json: bool) -> None:
    _warn_unencrypted(report)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return
    for path in report.written:
        note = " (private key, mode 0600)" if path.suffix == ".pem" else ""
        click.echo(f"wrote {path}{note}")
    if report.staged:
        s = report.staged
        old, new = s["old_root"], s["new_root"]
        assert isinstance(old, dict) and isinstance(new, dict)
        click.echo(f"root v{s['version']} is staged, not yet root.json: root signatures "
                   f"{old['present']} of {old['needed']} (current root), {new['present']} of "
                   f"{new['needed']} (new root); add them with `bundle keys sign "
                   f"{report.directory} --keys FOLDER`")
    click.echo(f"root.json is version {report.root_version}, fingerprint "
               f"{report.fingerprint}, expires {report.expires}")
    for name, role in report.roles.items():
        keyids = role["keyids"]
        assert isinstance(keyids, list)
        click.echo(f"  {name}: threshold {role['threshold']} of {len(keyids)} key(s)")


@click.group("keys", context_settings=CONTEXT)
def keys() -> None:
    """Manage the TUF root.json and the Ed25519 keys that sign bundles."""


@keys.command("show")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_json_opt
def show_cmd(directory: Path, as_json: bool) -> None:
    """Show DIRECTORY's current root: version, fingerprint, expiry, roles, key files.

    The fingerprint is what `airgap-install trust` and `status` show on a device: equal
    fingerprints mean the same root.
    """
    report = describe(directory)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return
    click.echo(f"{directory}: root.json version {report.root_version}, fingerprint "
               f"{report.fingerprint}, expires {report.expires}")
    for name, role in report.roles.items():
        keyids = role["keyids"]
        assert isinstance(keyids, list)
        click.echo(f"  {name}: threshold {role['threshold']} of {len(keyids)} key(s)")
    state = ("none" if not report.written else
             f"{len(report.written)} ({'encrypted' if report.encrypted else 'NOT encrypted'})")
    click.echo(f"  private key files here: {state}")
    for path in report.written:
        click.echo(f"    {path.name}")
    if report.staged:
        old, new = report.staged["old_root"], report.staged["new_root"]
        assert isinstance(old, dict) and isinstance(new, dict)
        click.echo(f"  staged root v{report.staged['version']}: root signatures "
                   f"{old['present']} of {old['needed']} (current), {new['present']} of "
                   f"{new['needed']} (new): `bundle keys sign {directory} --keys FOLDER`")


@keys.command("init")
@_dir_arg
@click.option("--root-keys", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--root-threshold", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--targets-keys", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--targets-threshold", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--snapshot-keys", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--timestamp-keys", type=click.IntRange(min=1), default=1, show_default=True)
@_expires_opt
@_passphrase_opt
@_json_opt
def init_cmd(*, directory: Path, root_keys: int, root_threshold: int, targets_keys: int,
             targets_threshold: int, snapshot_keys: int, timestamp_keys: int,
             expires_days: int, passphrase_env: str | None, as_json: bool) -> None:
    """Create DIRECTORY with fresh keys and root.json version 1."""
    _report(init_keys(directory, root_keys=root_keys, root_threshold=root_threshold,
                      targets_keys=targets_keys, targets_threshold=targets_threshold,
                      snapshot_keys=snapshot_keys, timestamp_keys=timestamp_keys,
                      expires_days=expires_days, passphrase_env=passphrase_env), as_json)


@keys.command("rotate")
@_dir_arg
@click.option("--role", required=True, metavar="ROLE",
              help=f"Role whose keys change: {', '.join(sorted(ROLES))}, or a ring of a "
                   "repository made with this key directory.")
@click.option("--keys", "new_keys", type=click.IntRange(min=1), default=None,
              help="Number of new keys for the role (default: as many as it has now).")
@click.option("--threshold", type=click.IntRange(min=1), default=None,
              help="New threshold for the role (default: unchanged).")
@_expires_opt
@_passphrase_opt
@_json_opt
def rotate_cmd(*, directory: Path, role: str, new_keys: int | None, threshold: int | None,
               expires_days: int, passphrase_env: str | None, as_json: bool) -> None:
    """Write the next root.json version with new keys for ROLE.

    The old root keys (and, for --role root, the new ones) sign it; devices accept it
    when a bundle carries the whole chain roots/1..N. For a ring, new ring keys are
    recorded in rings.json. Then run `bundle repo refresh REPO --keys DIRECTORY`: it
    re-signs what the new keys change (targets, the rotated ring) and publishes.
    """
    _report(rotate(directory, role=role, new_keys=new_keys, threshold=threshold,
                   expires_days=expires_days, passphrase_env=passphrase_env), as_json)


@keys.command("sign")
@_dir_arg
@click.option("--keys", "keys_from", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A folder holding one person's root key(s) (keys/*.pem).")
@_passphrase_opt
@_json_opt
def sign_cmd(*, directory: Path, keys_from: Path, passphrase_env: str | None,
             as_json: bool) -> None:
    """Add the root signatures of --keys to DIRECTORY's staged root (a rotation started with
    fewer root keys than the threshold); with enough signatures it becomes root.json."""
    _report(sign_root(directory, keys_from=keys_from, passphrase_env=passphrase_env), as_json)
