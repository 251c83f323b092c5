"""`bundle verify`: flags into a ``VerifyRequest``, one ``verify_artifact`` call
(``bundler.assemble.verifying``), its report."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from bundler.assemble.verifying import VerifyRequest, verify_artifact
from bundler.cli.context import CONTEXT, Ctx, pass_ctx


@click.command("verify", context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path, exists=True))
@click.option("--trust", "trust_root", type=click.Path(path_type=Path, exists=True,
                                                       dir_okay=False),
              help="root.json to verify the bundle's signatures against (as a device would).")
@click.option("--sigstore-identity", metavar="ID", help="Expected signer identity (e-mail or "
              "CI workflow URI) of FILE.sigstore.json.")
@click.option("--sigstore-issuer", metavar="URL", help="Expected OIDC issuer of that identity.")
@click.option("--trust-config", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Sigstore ClientTrustConfig JSON (default: the production root shipped "
                   "with sigstore-python). Never fetched.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def verify_cmd(c: Ctx, *, file: Path, trust_root: Path | None, sigstore_identity: str | None,
               sigstore_issuer: str | None, trust_config: Path | None, as_json: bool) -> None:
    """Verify FILE offline: a bundle's signatures and every member's sha256 (with --trust),
    and/or its Sigstore provenance (with --sigstore-identity and --sigstore-issuer).

    FILE may also be any artifact with a FILE.sigstore.json beside it, or a folder of split
    parts (or its .parts.json index): the index is verified with --trust, the parts
    reassembled in $TMPDIR (one lost or damaged part rebuilt from parity), then checked.
    """
    req = VerifyRequest(file=file, trust_root=trust_root, sigstore_identity=sigstore_identity,
                        sigstore_issuer=sigstore_issuer, trust_config=trust_config)
    done = verify_artifact(
        req, warn=lambda w: click.echo(w, err=True),
        progress=lambda total: _bar(c, total))
    if as_json:
        click.echo(json.dumps(done.report, indent=2, sort_keys=True))
    else:
        click.echo(done.text())


@contextmanager
def _bar(c: Ctx, total: int) -> Iterator[Callable[[int], None]]:
    with c.progress(total, "verifying", unit="B", unit_scale=True) as bar:
        yield bar.update


commands = [verify_cmd]
