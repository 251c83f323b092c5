"""`bundle verify`: check a bundle with the very code devices run (``installer.trust.verify``), and
optionally its Sigstore provenance, fully offline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from bundler.assemble.parts import is_parts, reassembled
from bundler.assemble.provenance import sigstore_path, sigstore_verify
from bundler.cli.context import CONTEXT, Ctx, pass_ctx
from bundler.errors import SpecError
from bundler.spec.specfiles import secret_warnings
from installer.format import envelope
from installer.format.bundlefmt import BundleReader
from installer.trust import verify


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
    if not trust_root and not sigstore_identity:
        raise SpecError("nothing to verify against", hint="pass --trust root.json and/or "
                        "--sigstore-identity ID --sigstore-issuer URL")
    if bool(sigstore_identity) != bool(sigstore_issuer):
        raise SpecError("--sigstore-identity and --sigstore-issuer go together")
    report: dict[str, Any] = {"file": str(file)}
    if is_parts(file):
        folder = file if file.is_dir() else file.parent
        file, rebuilt = click.get_current_context().with_resource(reassembled(
            file, anchor=trust_root.read_bytes() if trust_root else None))
        report["rebuilt_part"] = rebuilt
        sig_file = folder / file.name  # provenance sits beside the parts, named for the bundle
    else:
        sig_file = file
    bundle = envelope.kind_of(str(file)) == envelope.BUNDLE
    payload = file.read_bytes() if not bundle else b""
    if trust_root:
        if not bundle:
            raise SpecError(f"{file} is not a bundle; --trust applies to bundles only")
        anchor = trust_root.read_bytes()
        # a signature error names both roots (installer.trust.verify.root_ids), in this wording
        opened = verify.open_bundle(str(file), anchor=anchor, now=int(time.time()),
                                    trusted_label="this trusted root is")
        try:
            with c.progress(opened.header.manifest.payload_size, "verifying", unit="B",
                            unit_scale=True) as bar:
                checked = verify.hash_payload(opened, on_bytes=bar.update)
        finally:
            opened.close()
        m = opened.header.manifest
        for warning in secret_warnings(mem.path for mem in m.members):
            click.echo(warning, err=True)
        report.update({"bundle": m.name, "version": m.version, "arch": m.arch,
                       "signatures": "ok", "root_version": opened.root.version,
                       "bytes_checked": checked})
        payload = opened.header.manifest_bytes
    elif bundle:
        with open(file, "rb") as f:
            payload = BundleReader(f).header().manifest_bytes
    if sigstore_identity:
        sig = sigstore_path(sig_file)
        if not sig.is_file():
            raise SpecError(f"no Sigstore bundle at {sig}",
                            hint="build with --sigstore in CI, or copy the .sigstore.json")
        assert sigstore_issuer is not None
        sigstore_verify(payload, sig.read_bytes(), identity=sigstore_identity,
                        issuer=sigstore_issuer, trust_config=trust_config)
        report["sigstore"] = {"identity": sigstore_identity, "issuer": sigstore_issuer}
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        parts = []
        if trust_root:
            parts.append(f"signatures valid (root v{report['root_version']}), "
                         f"{report['bytes_checked']} bytes checked")
        if sigstore_identity:
            parts.append(f"Sigstore provenance valid for {sigstore_identity}")
        if report.get("rebuilt_part"):
            parts.append(f"part {report['rebuilt_part']} rebuilt from parity")
        click.echo(f"{report['file']}: OK: " + "; ".join(parts))


commands = [verify_cmd]
