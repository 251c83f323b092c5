"""`bundle verify` as one library call: :func:`verify_artifact` checks a bundle with the very
code devices run (``installer.trust.verify``) and/or an artifact's Sigstore provenance, fully
offline; a folder of split parts is reassembled first (one lost part rebuilt from parity)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.assemble.parts import is_parts, reassembled
from bundler.assemble.provenance import sigstore_path, sigstore_verify
from bundler.errors import SpecError
from bundler.spec.specfiles import secret_warnings
from installer.format import envelope
from installer.format.bundlefmt import BundleReader
from installer.trust import verify

# a progress bar over N bytes: a context giving the callback that advances it
Progress = Callable[[int], AbstractContextManager[Callable[[int], None]]]


@dataclass(frozen=True)
class VerifyRequest:
    file: Path
    trust_root: Path | None = None
    sigstore_identity: str | None = None
    sigstore_issuer: str | None = None
    trust_config: Path | None = None


@dataclass(frozen=True)
class Verified:
    """What was verified: the ``--json`` report."""

    report: dict[str, Any]

    def text(self) -> str:
        r = self.report
        parts = []
        if "root_version" in r:
            parts.append(f"signatures valid (root v{r['root_version']}), "
                         f"{r['bytes_checked']} bytes checked")
        if "sigstore" in r:
            parts.append(f"Sigstore provenance valid for {r['sigstore']['identity']}")
        if r.get("rebuilt_part"):
            parts.append(f"part {r['rebuilt_part']} rebuilt from parity")
        return f"{r['file']}: OK: " + "; ".join(parts)


def verify_artifact(req: VerifyRequest, *, progress: Progress,
                    warn: Callable[[str], object]) -> Verified:
    """Verify ``req.file``; ``warn`` gets each member name that looks like a secret as soon
    as the signatures are checked."""
    if not req.trust_root and not req.sigstore_identity:
        raise SpecError("nothing to verify against", hint="pass --trust root.json and/or "
                        "--sigstore-identity ID --sigstore-issuer URL")
    if bool(req.sigstore_identity) != bool(req.sigstore_issuer):
        raise SpecError("--sigstore-identity and --sigstore-issuer go together")
    report: dict[str, Any] = {"file": str(req.file)}
    with ExitStack() as stack:
        file, sig_file = req.file, req.file
        if is_parts(file):
            folder = file if file.is_dir() else file.parent
            file, rebuilt = stack.enter_context(reassembled(
                file, anchor=req.trust_root.read_bytes() if req.trust_root else None))
            report["rebuilt_part"] = rebuilt
            sig_file = folder / file.name  # provenance sits beside the parts, named for it
        bundle = envelope.kind_of(str(file)) == envelope.BUNDLE
        if req.trust_root:
            if not bundle:
                raise SpecError(f"{file} is not a bundle; --trust applies to bundles only")
            payload = _check_signed(file, req.trust_root, report, progress=progress, warn=warn)
        elif bundle:
            with open(file, "rb") as f:
                payload = BundleReader(f).header().manifest_bytes
        else:
            payload = file.read_bytes()
        if req.sigstore_identity:
            _check_sigstore(req, sigstore_path(sig_file), payload)
            report["sigstore"] = {"identity": req.sigstore_identity,
                                  "issuer": req.sigstore_issuer}
    return Verified(report)


def _check_signed(file: Path, trust_root: Path, report: dict[str, Any], *,
                  progress: Progress, warn: Callable[[str], object]) -> bytes:
    """Signatures against ``trust_root`` and every member's sha256, as a device checks them;
    returns the signed manifest bytes."""
    # a signature error names both roots (installer.trust.verify.root_ids), in this wording
    opened = verify.open_bundle(str(file), anchor=trust_root.read_bytes(), now=int(time.time()),
                                trusted_label="this trusted root is")
    try:
        with progress(opened.header.manifest.payload_size) as advance:
            checked = verify.hash_payload(opened, on_bytes=advance)
    finally:
        opened.close()
    m = opened.header.manifest
    for warning in secret_warnings(mem.path for mem in m.members):
        warn(warning)
    report.update({"bundle": m.name, "version": m.version, "arch": m.arch,
                   "signatures": "ok", "root_version": opened.root.version,
                   "bytes_checked": checked})
    return opened.header.manifest_bytes


def _check_sigstore(req: VerifyRequest, sig: Path, payload: bytes) -> None:
    if not sig.is_file():
        raise SpecError(f"no Sigstore bundle at {sig}",
                        hint="build with --sigstore in CI, or copy the .sigstore.json")
    assert req.sigstore_identity is not None and req.sigstore_issuer is not None
    sigstore_verify(payload, sig.read_bytes(), identity=req.sigstore_identity,
                    issuer=req.sigstore_issuer, trust_config=req.trust_config)
