"""ECDSA P-256 and RSA-PSS keys (``installer.trust.sigkeys``, ``p256``, ``rsapss``, ``der``):
every backend (``cryptography``, the ``openssl`` command, pure Python) gives the verdict
``cryptography`` gives, on valid signatures and on flipped bits, wrong keys, malformed
PEM/DER, out-of-range r/s, points off the curve and truncated input; and the pure and openssl
paths work in a ``python3 -I -S`` interpreter (no site-packages)."""

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import pytest
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from installer.errors import FormatError
from installer.trust import ed25519, p256, sigkeys
from tests.bundles import REPO

ECDSA = sigkeys.ECDSA
PSS = sigkeys.RSA_PSS
MSG = b'{"_type":"root","version":1}'


@dataclass(frozen=True)
class Vector:
    name: str
    keytype: str
    scheme: str
    pem: str
    sig: bytes
    msg: bytes


def _pem(public: Any) -> str:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _der(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem_of(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def _int(value: int, *, pad: int = 0) -> bytes:
    body = b"\x00" * pad + value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _seq(body: bytes) -> bytes:
    return bytes([0x30, len(body)]) + body


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1:]


def _ecdsa_vectors() -> List[Vector]:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    pem, der = _pem(key.public_key()), _der(key.public_key())
    sig = key.sign(MSG, ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(sig)
    n = p256.N
    compressed = key.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.CompressedPoint)
    algorithm = der[2:2 + 2 + der[3]]          # the AlgorithmIdentifier SEQUENCE
    off_curve = der[:-1] + bytes([der[-1] ^ 1])
    p384 = _pem(ec.generate_private_key(ec.SECP384R1()).public_key())
    cases: List[Tuple[str, str, bytes, bytes]] = [
        ("valid", pem, sig, MSG),
        ("valid, empty message", pem, key.sign(b"", ec.ECDSA(hashes.SHA256())), b""),
        ("valid, high s", pem, utils.encode_dss_signature(r, n - s), MSG),
        ("message bit flipped", pem, sig, _flip(MSG, 3)),
        ("signature bit flipped", pem, _flip(sig, len(sig) - 1), MSG),
        ("wrong key", _pem(other.public_key()), sig, MSG),
        ("r = 0", pem, _seq(_int(0) + _int(s)), MSG),
        ("s = 0", pem, _seq(_int(r) + _int(0)), MSG),
        ("r = n", pem, _seq(_int(n) + _int(s)), MSG),
        ("s = n", pem, _seq(_int(r) + _int(n)), MSG),
        ("r + n", pem, _seq(_int(r + n) + _int(s)), MSG),
        ("non-minimal integer", pem, _seq(_int(r, pad=1) + _int(s)), MSG),
        ("negative r", pem, _seq(bytes([2, 32]) + (r | 1 << 255).to_bytes(32, "big")
                                 + _int(s)), MSG),
        ("long-form length", pem, bytes([0x30, 0x81, len(sig) - 2]) + sig[2:], MSG),
        ("trailing byte", pem, sig + b"\x00", MSG),
        ("truncated signature", pem, sig[:-1], MSG),
        ("empty signature", pem, b"", MSG),
        ("raw r||s signature", pem, r.to_bytes(32, "big") + s.to_bytes(32, "big"), MSG),
        ("compressed point key", _pem_of(_seq(algorithm + bytes([0x03, 0x22, 0x00])
                                              + compressed)), sig, MSG),
        ("point not on curve", _pem_of(off_curve), sig, MSG),
        ("P-384 key", p384, sig, MSG),
        ("truncated DER key", _pem_of(der[:-3]), sig, MSG),
        ("DER key with trailing byte", _pem_of(der + b"\x00"), sig, MSG),
        ("PEM with bad base64", pem.replace("A", "*", 1) if "A" in pem[27:] else pem[:30]
         + "*" + pem[31:], sig, MSG),
        ("PEM truncated", pem[:-30], sig, MSG),
        ("not PEM", der.hex(), sig, MSG),
    ]
    vectors = [Vector(name, "ecdsa", ECDSA, k, g, m) for name, k, g, m in cases]
    vectors.append(Vector("legacy keytype name", ECDSA, ECDSA, pem, sig, MSG))
    return vectors


def _rsa_vectors() -> List[Vector]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _pem(key.public_key())

    def sign(salt: Any, msg: bytes = MSG) -> bytes:
        return key.sign(msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt),
                        hashes.SHA256())
    sig = sign(32)
    n = key.public_key().public_numbers().n
    short_msg = MSG
    short = sign(32)
    while short[0] != 0:       # PSS is randomised: about 1 in 256 signatures starts with 0
        short = sign(32)
    pkcs1 = key.sign(MSG, padding.PKCS1v15(), hashes.SHA256())
    cases = [
        ("valid, salt 32", pem, sig, MSG),
        ("valid, salt 0", pem, sign(0), MSG),
        ("valid, longest salt", pem, sign(padding.PSS.MAX_LENGTH), MSG),
        ("message bit flipped", pem, sig, _flip(MSG, 0)),
        ("signature bit flipped", pem, _flip(sig, 100), MSG),
        ("wrong key", _pem(other.public_key()), sig, MSG),
        ("PKCS#1 v1.5 signature", pem, pkcs1, MSG),
        ("signature = n", pem, n.to_bytes(256, "big"), MSG),
        ("signature too long", pem, b"\x00" + sig, MSG),
        ("signature truncated", pem, sig[:-1], MSG),
        ("signature with its leading zero dropped", pem, short[1:], short_msg),
        ("empty signature", pem, b"", MSG),
        ("truncated DER key", _pem_of(_der(key.public_key())[:-5]), sig, MSG),
        ("EC key for rsa", _pem(ec.generate_private_key(ec.SECP256R1()).public_key()), sig,
         MSG),
    ]
    return [Vector(name, "rsa", PSS, k, g, m) for name, k, g, m in cases]


VECTORS = _ecdsa_vectors() + _rsa_vectors()


def reference(v: Vector) -> bool:
    """``cryptography``'s verdict, as securesystemslib verifies these schemes."""
    try:
        key = serialization.load_pem_public_key(v.pem.encode())
    except (ValueError, UnsupportedAlgorithm, TypeError):
        return False
    try:
        if v.scheme == ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                return False
            key.verify(v.sig, v.msg, ec.ECDSA(hashes.SHA256()))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(v.sig, v.msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                 salt_length=padding.PSS.AUTO),
                       hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def ours(v: Vector, backend: str) -> bool:
    try:
        public = sigkeys.parse_public(v.keytype, v.scheme, v.pem, what="key")
    except FormatError:
        return False
    assert public is not None
    return sigkeys.verify(v.scheme, public, v.sig, message=v.msg, backend=backend)


@pytest.mark.parametrize("v", VECTORS, ids=[f"{v.scheme}: {v.name}" for v in VECTORS])
def test_every_backend_agrees_with_cryptography(v: Vector) -> None:
    want = reference(v)
    for backend in ed25519.available_backends():
        assert ours(v, backend) is want, backend
    if v.name.startswith("valid"):
        assert want


def test_vectors_hold_both_verdicts() -> None:
    verdicts = [reference(v) for v in VECTORS]
    assert verdicts.count(True) >= 6 and verdicts.count(False) >= 25


def test_raw_backends_on_prechecked_input_agree() -> None:
    """Past the shared pre-check, the raw verifiers agree too (no backend relies on it)."""
    for v in VECTORS:
        try:
            public = sigkeys.parse_public(v.keytype, v.scheme, v.pem, what="key")
        except FormatError:
            continue
        assert public is not None
        if (v.scheme == ECDSA and p256.signature_values(v.sig) is None) or not v.sig:
            continue
        impls: Dict[str, Callable[[bytes, bytes, bytes], bool]] = sigkeys.implementations(
            v.scheme)
        answers = {b: impls[b](public, v.sig, v.msg) for b in ed25519.available_backends()}
        assert set(answers.values()) == {reference(v)}, (v.name, answers)


_ISOLATED = """
import json, sys
sys.path.insert(0, sys.argv[1])
from installer.errors import FormatError
from installer.trust import sigkeys
out = []
for v in json.load(sys.stdin):
    try:
        public = sigkeys.parse_public(v["keytype"], v["scheme"], v["pem"], what="key")
    except FormatError:
        out.append([False, False])
        continue
    out.append([sigkeys.verify(v["scheme"], public, bytes.fromhex(v["sig"]),
                               message=bytes.fromhex(v["msg"]), backend=b)
                for b in ("python", "openssl")])
assert "cryptography" not in sys.modules
print(json.dumps(out))
"""


@pytest.mark.skipif(ed25519._openssl_path() is None, reason="no openssl 3 command")
def test_pure_and_openssl_backends_work_without_site_packages() -> None:
    payload = json.dumps([{"keytype": v.keytype, "scheme": v.scheme, "pem": v.pem,
                           "sig": v.sig.hex(), "msg": v.msg.hex()} for v in VECTORS])
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _ISOLATED, str(REPO)],
                          input=payload, capture_output=True, text=True, timeout=300,
                          check=True)
    answers = json.loads(done.stdout)
    for v, (python, openssl) in zip(VECTORS, answers, strict=True):
        assert python is openssl is reference(v), v.name
