"""Ed25519 verification: RFC 8032 vectors and edge cases, identical on every backend.

THREATS line 12: s >= L, non-canonical points, small-order points and the RFC 8032 vectors
must get the same answer from ``cryptography``, ``openssl`` and the pure-Python verifier.
"""

import hashlib
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from installer.errors import ConfigError, EnvironmentProblem
from installer.trust import ed25519

REPO = Path(__file__).resolve().parent.parent
P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493


# --- RFC 8032 section 7.1 -------------------------------------------------------------------

@dataclass(frozen=True)
class Vector:
    name: str
    secret: str
    public: str
    message: str
    signature: str


_MSG_1024 = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98"
    "fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8"
    "79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc"
    "1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe"
    "ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef"
    "efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7"
    "aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2"
    "d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24"
    "554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc"
    "2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07"
    "07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a"
    "ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e"
    "c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c"
    "42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8"
    "ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08"
    "d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649"
    "de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3"
    "2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e"
    "6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5"
    "0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1"
    "369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c"
    "0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0")

RFC8032 = [
    Vector("TEST 1",
           "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
           "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
           "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
           "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    Vector("TEST 2",
           "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
           "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
           "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
           "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    Vector("TEST 3",
           "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
           "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
           "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
           "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    Vector("TEST 1024",
           "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
           "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e", _MSG_1024,
           "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
           "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"),
    Vector("TEST SHA(abc)",
           "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
           "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
           hashlib.sha512(b"abc").hexdigest(),
           "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
           "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
]


def test_vectors_are_transcribed_correctly() -> None:
    """Cross-check the table against an independent signer before trusting it."""
    assert len(bytes.fromhex(_MSG_1024)) == 1023
    for v in RFC8032:
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v.secret))
        raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
        assert raw.hex() == v.public, v.name
        assert private.sign(bytes.fromhex(v.message)).hex() == v.signature, v.name


# --- edge cases -----------------------------------------------------------------------------

def _enc(y: int, sign: int = 0) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


def _le(n: int) -> bytes:
    return n.to_bytes(32, "little")


def _k(r: bytes, a: bytes, m: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + m).digest(), "little") % L


B_ENC = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")
IDENTITY = _enc(1)
ORDER2 = _enc(P - 1)  # (0, -1)
V1 = RFC8032[0]
PUB1, SIG1 = bytes.fromhex(V1.public), bytes.fromhex(V1.signature)
S1 = int.from_bytes(SIG1[32:], "little")


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _message_with_k_mod(r: bytes, a: bytes, modulus: int, residue: int) -> bytes:
    """A message for which k = H(R||A||M) mod L is ``residue`` modulo ``modulus`` (for an A of
    order 2 or 4, [k]A is then the identity when the residue is 0)."""
    for i in range(1000):
        m = b"pre-check %d" % i
        if _k(r, a, m) % modulus == residue:
            return m
    raise AssertionError("unreachable")


def _message_with_k_parity(r: bytes, a: bytes, parity: int) -> bytes:
    """A message for which k = H(R||A||M) mod L has the given parity ([k]A for an order-2 A
    is then the identity (even) or A itself (odd))."""
    for i in range(1000):
        m = b"small-order %d" % i
        if _k(r, a, m) % 2 == parity:
            return m
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Case:
    name: str
    public: bytes
    signature: bytes
    message: bytes
    expected: bool


def _precheck_only() -> List[Case]:
    y_p, neg_zero = _enc(P), _enc(P - 1, 1)
    return [
        Case("A = identity as y = p+1, any k (pre-check only)", _enc(P + 1), B_ENC + _le(1),
             b"x", False),
        Case("A = identity with sign bit, any k (pre-check only)", _enc(1, 1), B_ENC + _le(1),
             b"x", False),
        Case("A with y = p (order 4), k = 0 mod 4 (pre-check only)", y_p, B_ENC + _le(1),
             _message_with_k_mod(B_ENC, y_p, 4, 0), False),
        Case("A = (0,-1) with sign bit, k even (pre-check only)", neg_zero, B_ENC + _le(1),
             _message_with_k_mod(B_ENC, neg_zero, 2, 0), False),
    ]


PRECHECK_ONLY = _precheck_only()


def _cases() -> List[Case]:
    cases = [Case("rfc8032 " + v.name, bytes.fromhex(v.public), bytes.fromhex(v.signature),
                  bytes.fromhex(v.message), True) for v in RFC8032]
    v3 = RFC8032[2]
    pub3, sig3, msg3 = (bytes.fromhex(v3.public), bytes.fromhex(v3.signature),
                        bytes.fromhex(v3.message))
    m_even = _message_with_k_parity(B_ENC, ORDER2, 0)
    m_odd = _message_with_k_parity(B_ENC, ORDER2, 1)
    cases += [
        # malleability and scalar range
        Case("s + L (same point, non-reduced scalar)", PUB1, SIG1[:32] + _le(S1 + L), b"", False),
        Case("s = L", PUB1, SIG1[:32] + _le(L), b"", False),
        Case("s with the top bits set", PUB1, SIG1[:32] + b"\xff" * 32, b"", False),
        # bit flips in every part
        Case("flipped bit in message", pub3, sig3, _flip(msg3, 3), False),
        Case("flipped bit in R", pub3, _flip(sig3, 5), msg3, False),
        Case("flipped bit in S", pub3, _flip(sig3, 300), msg3, False),
        Case("flipped bit in public key", _flip(pub3, 9), sig3, msg3, False),
        Case("flipped sign bit of R", pub3, _flip(sig3, 255), msg3, False),
        Case("flipped sign bit of A", _flip(pub3, 255), sig3, msg3, False),
        # non-canonical encodings (y >= p, or x == 0 with the sign bit); the next two would
        # fail on k alone too ([k]A != identity for m = "x"): PRECHECK_ONLY has the exact ones
        Case("A = (0,-1) with sign bit (negative zero)", _enc(P - 1, 1), B_ENC + _le(1), b"x",
             False),
        Case("A with y = p (non-canonical 0)", _enc(P), B_ENC + _le(1), b"x", False),
        Case("A with y = 2^255-1", _enc(2 ** 255 - 1), B_ENC + _le(1), b"x", False),
    ]
    # Refused only by the shared pre-check: OpenSSL (and so cryptography) reduces y mod p and
    # ignores a sign bit on x == 0, and for these A, [k]A is the identity, so [1]B - [k]A = R.
    # test_precheck_is_what_refuses proves each verifies on those backends without it.
    cases += PRECHECK_ONLY
    cases += [
        Case("R = identity as y = p+1 (non-canonical)", IDENTITY, _enc(P + 1) + _le(0), b"x",
             False),
        Case("R = B + p in y (non-canonical)", PUB1,
             _enc(int.from_bytes(B_ENC, "little") + P) + SIG1[32:], b"", False),
        # points off the curve
        Case("A not on the curve (y = 2)", _enc(2), B_ENC + _le(1), b"x", False),
        Case("R not on the curve (y = 2)", PUB1, _enc(2) + SIG1[32:], b"", False),
        # small-order points: accepted by the cofactorless equation on every backend
        Case("A = identity (small order), R = [1]B", IDENTITY, B_ENC + _le(1), b"any", True),
        Case("A = identity, R = identity, S = 0", IDENTITY, IDENTITY + _le(0), b"any", True),
        Case("A = (0,-1) order 2, k even", ORDER2, B_ENC + _le(1), m_even, True),
        Case("A = (0,-1) order 2, k odd", ORDER2, B_ENC + _le(1), m_odd, False),
        Case("R = identity (small order) with a real key", PUB1, IDENTITY + _le(0), b"", False),
        Case("all-zero signature", PUB1, bytes(64), b"", False),
        Case("all-zero public key (y = 0, order 4)", bytes(32), SIG1, b"", False),
        # lengths
        Case("public key 31 bytes", PUB1[:31], SIG1, b"", False),
        Case("public key 33 bytes", PUB1 + b"\0", SIG1, b"", False),
        Case("signature 63 bytes", PUB1, SIG1[:63], b"", False),
        Case("signature 65 bytes", PUB1, SIG1 + b"\0", b"", False),
        Case("empty signature", PUB1, b"", b"", False),
        Case("empty public key", b"", SIG1, b"", False),
    ]
    return cases


CASES = _cases()


def test_all_three_backends_are_available_here() -> None:
    assert ed25519.available_backends() == ("cryptography", "openssl", "python")


@pytest.mark.parametrize("backend", ed25519.BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_on_backend(case: Case, backend: str) -> None:
    assert ed25519.verify(case.public, case.signature, case.message,
                          backend=backend) is case.expected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_backends_agree(case: Case) -> None:
    answers = {b: ed25519.verify(case.public, case.signature, case.message, backend=b)
               for b in ed25519.available_backends()}
    assert set(answers.values()) == {case.expected}, answers


@pytest.mark.parametrize("case", PRECHECK_ONLY, ids=[c.name for c in PRECHECK_ONLY])
def test_precheck_is_what_refuses(case: Case) -> None:
    """Each of these is a valid signature to OpenSSL and cryptography once the pre-check is
    skipped (their own decoding reduces the encoding); ``verify`` refuses it on every backend."""
    for backend in ("cryptography", "openssl"):
        assert ed25519._IMPLEMENTATIONS[backend](case.public, case.signature,
                                                 case.message) is True, backend
        assert ed25519.verify(case.public, case.signature, case.message, backend=backend) is False
    assert ed25519._precheck(case.public, case.signature) is False


def test_pure_python_is_strict_without_the_shared_precheck() -> None:
    """The pure verifier rejects non-canonical A by itself (RFC 8032 5.1.3). OpenSSL reduces
    y mod p instead, which is why ``verify`` runs one shared pre-check before any backend."""
    assert ed25519._verify_python(_enc(P + 1), B_ENC + _le(1), b"x") is False
    assert ed25519._verify_python(_enc(1, 1), B_ENC + _le(1), b"x") is False
    assert ed25519._verify_python(IDENTITY, B_ENC + _le(1), b"x") is True


def test_random_keys_agree() -> None:
    for i in range(20):
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        message = os.urandom(i * 7)
        sig = private.sign(message)
        for backend in ed25519.BACKENDS:
            assert ed25519.verify(public, sig, message, backend=backend) is True
            assert ed25519.verify(public, sig, message + b"!", backend=backend) is False


def test_non_bytes_arguments_are_false() -> None:
    assert ed25519.verify(PUB1.hex(), SIG1, b"", backend="python") is False  # type: ignore[arg-type]
    assert ed25519.verify(PUB1, SIG1.hex(), b"", backend="python") is False  # type: ignore[arg-type]
    assert ed25519.verify(PUB1, SIG1, "", backend="python") is False  # type: ignore[arg-type]


# --- backend selection --------------------------------------------------------------------

def test_env_var_forces_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ed25519.BACKENDS:
        monkeypatch.setenv(ed25519.ENV_BACKEND, name)
        assert ed25519.select_backend() == name
        assert ed25519.verify(PUB1, SIG1, b"") is True
    monkeypatch.setenv(ed25519.ENV_BACKEND, "openssl")
    assert ed25519.select_backend("python") == "python"  # the argument wins


def test_default_backend_is_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ed25519.ENV_BACKEND, raising=False)
    assert ed25519.select_backend() == "cryptography"


def test_unknown_backend_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ed25519.ENV_BACKEND, "libsodium")
    with pytest.raises(ConfigError, match="libsodium"):
        ed25519.verify(PUB1, SIG1, b"")


def test_forcing_unavailable_openssl_is_clear(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "openssl" not in ed25519.available_backends()
    with pytest.raises(EnvironmentProblem, match="'openssl'.*not available"):
        ed25519.verify(PUB1, SIG1, b"", backend="openssl")


def test_old_openssl_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "openssl"
    fake.write_text("#!/bin/sh\necho 'OpenSSL 1.1.1w  11 Sep 2023'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "openssl" not in ed25519.available_backends()


def test_forcing_unavailable_cryptography_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ed25519._cryptography, "loaded", None)
    assert ed25519.available_backends()[0] == "openssl"
    with pytest.raises(EnvironmentProblem, match="cryptography"):
        ed25519.verify(PUB1, SIG1, b"", backend="cryptography")


def test_openssl_call_is_hygienic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Absolute path, argument list, clean environment, 0600 files in a 0700 folder."""
    seen = {}
    real_run = subprocess.run

    def spy(args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(args, list) and "pkeyutl" in args:
            folder = os.path.dirname(args[args.index("-inkey") + 1])
            seen["args"] = args
            seen["env"] = kwargs.get("env")
            seen["dir_mode"] = stat.S_IMODE(os.stat(folder).st_mode)
            seen["file_modes"] = {n: stat.S_IMODE(os.stat(os.path.join(folder, n)).st_mode)
                                  for n in os.listdir(folder)}
            seen["folder"] = folder
        return real_run(args, **kwargs)

    v2 = RFC8032[1]
    monkeypatch.setenv("OPENSSL_CONF", "/nonexistent/evil.cnf")
    monkeypatch.setattr(ed25519.subprocess, "run", spy)
    assert ed25519.verify(PUB1, SIG1, b"", backend="openssl") is True
    assert seen == {}  # OpenSSL 3.0 cannot read an empty message: answered in Python
    assert ed25519.verify(bytes.fromhex(v2.public), bytes.fromhex(v2.signature),
                          bytes.fromhex(v2.message), backend="openssl") is True
    assert os.path.isabs(seen["args"][0])
    assert "OPENSSL_CONF" not in seen["env"]
    assert seen["dir_mode"] == 0o700
    assert set(seen["file_modes"].values()) == {0o600}
    assert not os.path.exists(seen["folder"])  # cleaned up


def test_installer_modules_import_with_stdlib_only() -> None:
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r});"
            "import installer.trust, installer.trust.ed25519;"
            "print(','.join(installer.trust.ed25519.available_backends()));"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('cryptography', 'tuf', 'securesystemslib')))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, check=True)
    backends, third_party = out.stdout.splitlines()
    assert backends == "openssl,python"
    assert third_party == "[]"
