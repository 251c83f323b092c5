"""Optional Sigstore provenance, verified offline with real staging fixtures.

Signing needs an ambient CI OIDC credential and Sigstore's network services, so only its
refusal without a credential is exercised here.
"""

import socket
from pathlib import Path
from typing import Any

import pytest

from bundler.assemble import provenance
from bundler.errors import SpecError, UpstreamError
from tests.paths import SIGSTORE as FIXTURES

ARTIFACT = FIXTURES / "staging-rekor-v2.txt"
BUNDLE = FIXTURES / "staging-rekor-v2.txt.sigstore.json"
STAGING = FIXTURES / "staging-trust-config.json"
IDENTITY = "jku@goto.fi"
ISSUER = "https://github.com/login/oauth"

pytestmark = pytest.mark.skipif(not BUNDLE.exists(), reason="Sigstore fixtures not present")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Private caches, no ambient CI credentials, and no network at all."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for var in ("GITHUB_ACTIONS", "GOOGLE_SERVICE_ACCOUNT_NAME", "BUILDKITE", "GITLAB_CI",
                "CIRCLECI", "SIGSTORE_ID_TOKEN"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_staging_bundle_verifies_offline() -> None:
    provenance.sigstore_verify(ARTIFACT.read_bytes(), BUNDLE.read_bytes(), identity=IDENTITY,
                               issuer=ISSUER, trust_config=STAGING)


def test_changed_byte_is_rejected() -> None:
    data = bytearray(ARTIFACT.read_bytes())
    data[0] ^= 0x01
    with pytest.raises(UpstreamError, match="does not verify.*digest mismatch"):
        provenance.sigstore_verify(bytes(data), BUNDLE.read_bytes(), identity=IDENTITY,
                                   issuer=ISSUER, trust_config=STAGING)


@pytest.mark.parametrize("identity,issuer,reason", [
    ("someone-else@example.com", ISSUER, "SANs do not match"),
    (IDENTITY, "https://token.actions.githubusercontent.com", "OIDCIssuer does not match"),
])
def test_other_identity_or_issuer_is_rejected(identity: str, issuer: str, reason: str) -> None:
    with pytest.raises(UpstreamError, match=reason):
        provenance.sigstore_verify(ARTIFACT.read_bytes(), BUNDLE.read_bytes(),
                                   identity=identity, issuer=issuer, trust_config=STAGING)


def test_production_trust_root_is_rejected() -> None:
    """Without a trust config the bundled production root is used; staging is not in it."""
    with pytest.raises(UpstreamError, match="production root"):
        provenance.sigstore_verify(ARTIFACT.read_bytes(), BUNDLE.read_bytes(),
                                   identity=IDENTITY, issuer=ISSUER, trust_config=None)


def test_malformed_bundle_is_rejected() -> None:
    with pytest.raises(UpstreamError, match="not a valid Sigstore bundle"):
        provenance.sigstore_verify(ARTIFACT.read_bytes(), b'{"mediaType": "x"}',
                                   identity=IDENTITY, issuer=ISSUER, trust_config=STAGING)


def test_bad_trust_config_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        provenance.sigstore_verify(ARTIFACT.read_bytes(), BUNDLE.read_bytes(),
                                   identity=IDENTITY, issuer=ISSUER,
                                   trust_config=tmp_path / "missing.json")
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"mediaType": "nonsense"}')
    with pytest.raises(SpecError, match="not a Sigstore ClientTrustConfig"):
        provenance.sigstore_verify(ARTIFACT.read_bytes(), BUNDLE.read_bytes(),
                                   identity=IDENTITY, issuer=ISSUER, trust_config=bogus)


def test_signing_without_ambient_credential_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="no ambient OIDC credential"):
        provenance.sigstore_sign(b"bundle manifest bytes")


def test_signing_with_a_broken_ci_credential_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """GitHub Actions without `id-token: write`: detection fails before any request."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", raising=False)
    with pytest.raises(SpecError, match="OIDC"):
        provenance.sigstore_sign(b"bundle manifest bytes")
