"""Optional Sigstore provenance: keyless signing in CI and offline verification.

This is an extra layer on top of the device's TUF anchor, never a replacement: it records
WHO built a bundle (a CI workload identity certified by Fulcio, logged in Rekor) so an
auditor can check it later. Devices do not need it.

- ``sigstore_sign`` signs with the ambient OIDC credential of the CI job (GitHub Actions,
  GitLab, Buildkite, Google Cloud ...) as ``sigstore.oidc.detect_credential`` finds it. It
  talks to Fulcio, Rekor and a timestamp authority over the network. Without an ambient
  credential it raises ``SpecError`` before any network traffic.
- ``sigstore_verify`` checks a Sigstore bundle fully offline against a supplied trust
  configuration (a ClientTrustConfig JSON), or against the production trusted root bundled
  with sigstore-python (read from its local cache, never refreshed).

sigstore-python is imported only when these functions are called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bundler.errors import FetchError, SpecError, UpstreamError


def sigstore_path(file: Path) -> Path:
    """Where a Sigstore bundle for FILE lives: ``FILE.sigstore.json`` (sigstore's own
    convention). For a K3s bundle it signs the bundle manifest, which pins every member."""
    return file.with_name(file.name + ".sigstore.json")


def _sigstore() -> Any:
    try:
        import sigstore  # noqa: F401  # late: heavy, and needed only with --sigstore
    except ImportError:
        raise SpecError("Sigstore provenance needs the sigstore package",
                        hint="pip install 'sigstore>=4'") from None
    import sigstore.errors  # late: see above

    return sigstore.errors


def _trust_config(path: Path | None, *, offline: bool) -> Any:
    from sigstore.models import ClientTrustConfig  # late: sigstore only with --sigstore

    if path is None:
        try:
            return ClientTrustConfig.production(offline=offline)
        except Exception as e:  # TUFError, cache permission problems
            raise SpecError(f"cannot load the Sigstore production trust root: {e}",
                            hint="pass an explicit trust config file") from None
    try:
        return ClientTrustConfig.from_json(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"cannot read Sigstore trust config {path}: {e}") from None
    except Exception as e:  # the models raise pydantic/betterproto errors of various kinds
        raise SpecError(f"{path} is not a Sigstore ClientTrustConfig: {e}",
                        hint="expected application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
                        ) from None


def sigstore_preflight() -> None:
    """Refuse up front (``SpecError``) when keyless signing cannot work here: no sigstore
    package, or no ambient OIDC credential. ``bundle build --sigstore`` calls it before it
    fetches or writes anything."""
    _ambient_token()


def _ambient_token() -> str:
    errors = _sigstore()
    from sigstore.oidc import detect_credential  # late: sigstore only with --sigstore

    try:
        token = detect_credential()
    except errors.Error as e:
        raise SpecError(f"detecting the ambient OIDC credential failed: {e}",
                        hint="check the CI job's OIDC permissions") from None
    if token is None:
        raise SpecError(
            "no ambient OIDC credential found for Sigstore keyless signing",
            hint="run in a CI job that grants an OIDC token (GitHub Actions: "
                 "`permissions: id-token: write`), or build without --sigstore")
    return str(token)


def sigstore_sign(payload: bytes, *, trust_config: Path | None = None) -> bytes:
    """Keyless-sign ``payload`` with the CI job's ambient OIDC identity; return the Sigstore
    bundle JSON. ``trust_config`` selects another Sigstore instance (default: production)."""
    errors = _sigstore()
    from sigstore.oidc import ExpiredIdentity, IdentityToken  # late: sigstore only when used
    from sigstore.sign import SigningContext  # late: sigstore only when used

    token = _ambient_token()
    try:
        identity = IdentityToken(token)
        context = SigningContext.from_trust_config(_trust_config(trust_config, offline=False))
        with context.signer(identity, cache=False) as signer:
            bundle = signer.sign_artifact(payload)
    except errors.NetworkError as e:
        raise FetchError(f"Sigstore signing failed to reach its services: {e}") from None
    except (errors.Error, ExpiredIdentity) as e:
        raise SpecError(f"Sigstore signing failed: {e}") from None
    return str(bundle.to_json()).encode("utf-8")


def sigstore_verify(payload: bytes, bundle_json: bytes, *, identity: str, issuer: str,
                    trust_config: Path | None = None) -> None:
    """Verify offline that ``bundle_json`` is a Sigstore bundle over ``payload`` whose
    certificate names ``identity`` issued by ``issuer``, chained to ``trust_config``'s trusted
    root (default: sigstore-python's bundled production root). Raises ``UpstreamError``."""
    errors = _sigstore()
    from sigstore.models import Bundle  # late: sigstore only when used
    from sigstore.verify import Verifier, policy  # late: sigstore only when used

    try:
        bundle = Bundle.from_json(bundle_json)
    except Exception as e:  # InvalidBundle, JSON and model errors
        raise UpstreamError(f"not a valid Sigstore bundle: {e}") from None
    config = _trust_config(trust_config, offline=True)
    try:
        verifier = Verifier(trusted_root=config.trusted_root)
        verifier.verify_artifact(payload, bundle, policy.Identity(identity=identity,
                                                                  issuer=issuer))
    except errors.Error as e:
        where = trust_config or "the bundled Sigstore production root"
        raise UpstreamError(
            f"Sigstore provenance does not verify for identity {identity!r} and issuer "
            f"{issuer!r} against {where}: {e}",
            hint="check the expected identity/issuer and the trust config; the artifact may "
                 "have been changed") from None
