"""TUF public keys and signature verification for every key type the device accepts.

=========================  ===================  ===========================================
keytype                    scheme               ``keyval.public``
=========================  ===================  ===========================================
``ed25519``                ``ed25519``          32 raw bytes, lowercase hex
``ecdsa``                  ecdsa-sha2-nistp256  PEM SubjectPublicKeyInfo (P-256)
``ecdsa-sha2-nistp256``    ecdsa-sha2-nistp256  the same (the legacy keytype name)
``rsa``                    rsassa-pss-sha256    PEM SubjectPublicKeyInfo (rsaEncryption)
=========================  ===================  ===========================================

``parse_public`` turns ``keyval`` into the key's canonical material (raw Ed25519 bytes, the
uncompressed P-256 point, or the DER SPKI of (n, e) for RSA), or None for a pair this device
does not use (such a key never counts toward a threshold). Thresholds compare this material,
so one key under two keyids or two encodings counts once.

Backends, chosen as ``ed25519`` chooses them (argument, ``$AIRGAP_ED25519_BACKEND``, or the
first available of ``cryptography``, ``openssl``, ``python``): all three answer the same
question the same way, because the strict parsing (PEM, DER, the curve equation, signature
DER with 1 <= r, s < n, 1 to k bytes for an RSA signature) happens here, once, before any backend
runs; ``tests/test_trust_keytypes.py`` compares them with ``cryptography``.
"""

import importlib
import os
import shutil
import subprocess
import tempfile
from typing import Any, Callable, Dict, Optional

from installer.errors import EnvironmentProblem, FormatError
from installer.trust import ed25519, p256, rsapss

ED25519 = ("ed25519", "ed25519")
ECDSA = "ecdsa-sha2-nistp256"
RSA_PSS = "rsassa-pss-sha256"
SUPPORTED = {ED25519, ("ecdsa", ECDSA), (ECDSA, ECDSA), ("rsa", RSA_PSS)}


def parse_public(keytype: str, scheme: str, public: str, *, what: str) -> Optional[bytes]:
    """Canonical key material, None for an unsupported (keytype, scheme); a supported pair
    whose key does not parse is a ``FormatError``."""
    if (keytype, scheme) not in SUPPORTED:
        return None
    if (keytype, scheme) == ED25519:
        if not all(c in "0123456789abcdef" for c in public) or len(public) % 2:
            raise FormatError(f"{what}.keyval.public is not a lowercase hex string")
        raw = bytes.fromhex(public)
        if len(raw) != ed25519.PUBLIC_KEY_LEN:
            raise FormatError(f"{what}: an Ed25519 public key is 32 bytes, found {len(raw)}")
        return raw
    if scheme == ECDSA:
        point = p256.public_point(public)
        if point is None:
            raise FormatError(f"{what}: keyval.public is not a PEM P-256 public key")
        return point
    numbers = rsapss.public_numbers(public)
    if numbers is None:
        raise FormatError(f"{what}: keyval.public is not a PEM RSA public key of "
                          f"{rsapss.MIN_BITS}-{rsapss.MAX_BITS} bits")
    return rsapss.encode_numbers(*numbers)


def verify(scheme: str, public: bytes, signature: bytes, *, message: bytes,
           backend: Optional[str] = None) -> bool:
    """True when ``signature`` over ``message`` is valid for the key material ``public`` (as
    ``parse_public`` returns it) under ``scheme``; False for anything else."""
    if scheme == "ed25519":
        return ed25519.verify(public, signature, message, backend=backend)
    name = ed25519.select_backend(backend)
    if scheme == ECDSA:
        if p256.decode_point(public) is None or p256.signature_values(signature) is None:
            return False
        return _ECDSA[name](public, signature, message)
    if scheme == RSA_PSS:
        numbers = rsapss.public_numbers(public)
        # as OpenSSL (and so cryptography) does: a signature may come without its leading
        # zero bytes, never longer than the modulus and never empty
        if numbers is None or not 0 < len(signature) <= (numbers[0].bit_length() + 7) // 8:
            return False
        return _RSA[name](public, signature, message)
    return False


# --- cryptography -----------------------------------------------------------------------

_loaded: Dict[str, Any] = {}


def _crypto() -> Any:
    # imported by name on first use: optional on a device (see ed25519)
    if "mods" not in _loaded:
        try:
            _loaded["mods"] = tuple(importlib.import_module("cryptography." + m) for m in (
                "hazmat.primitives.asymmetric.ec", "hazmat.primitives.asymmetric.padding",
                "hazmat.primitives.hashes", "hazmat.primitives.serialization",
                "exceptions"))
        except ImportError:
            _loaded["mods"] = None
    if _loaded["mods"] is None:
        raise EnvironmentProblem("the cryptography package is not importable")
    return _loaded["mods"]


def _ecdsa_cryptography(point: bytes, signature: bytes, message: bytes) -> bool:
    ec, _, hashes, _, exc = _crypto()
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (exc.InvalidSignature, ValueError):
        return False
    return True


def _rsa_cryptography(spki: bytes, signature: bytes, message: bytes) -> bool:
    _, padding, hashes, serialization, exc = _crypto()
    try:
        key = serialization.load_der_public_key(spki)
        key.verify(signature, message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                   salt_length=padding.PSS.AUTO),
                   hashes.SHA256())
    except (exc.InvalidSignature, ValueError):
        return False
    return True


# --- openssl command --------------------------------------------------------------------

_OK, _BAD = "Verified OK", "Verification failure"


def _openssl(spki: bytes, signature: bytes, message: bytes, *, pss: bool) -> bool:
    exe = ed25519._openssl_path()
    if exe is None:
        raise EnvironmentProblem("no openssl 3.0+ command on PATH")
    tmp = tempfile.mkdtemp(prefix="airgap-sig-")  # created 0700
    try:
        names = {n: os.path.join(tmp, n) for n in ("pub.der", "msg", "sig")}
        for name, data in (("pub.der", spki), ("msg", message), ("sig", signature)):
            ed25519._write_private(names[name], data)
        args = [exe, "dgst", "-sha256", "-keyform", "DER", "-verify", names["pub.der"],
                "-signature", names["sig"]]
        if pss:
            args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:auto",
                     "-sigopt", "rsa_mgf1_md:sha256"]
        try:
            out = subprocess.run(args + [names["msg"]], stdin=subprocess.DEVNULL,
                                 capture_output=True, env=ed25519._openssl_env(), cwd=tmp,
                                 timeout=ed25519._OPENSSL_TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise EnvironmentProblem(f"running {exe} failed: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stdout = out.stdout.decode("utf-8", "replace")
    if out.returncode == 0 and _OK in stdout:
        return True
    if _BAD in stdout + out.stderr.decode("utf-8", "replace"):
        return False
    detail = (out.stderr.decode("utf-8", "replace") or stdout).strip()[:500]
    raise EnvironmentProblem(f"{exe} dgst gave no verdict (exit {out.returncode}): {detail}",
                             hint=f"force another backend with {ed25519.ENV_BACKEND}=python")


def _ecdsa_openssl(point: bytes, signature: bytes, message: bytes) -> bool:
    return _openssl(p256.spki_der(point), signature, message, pss=False)


def _rsa_openssl(spki: bytes, signature: bytes, message: bytes) -> bool:
    return _openssl(spki, signature, message, pss=True)


# --- pure Python --------------------------------------------------------------------------

def _rsa_python(spki: bytes, signature: bytes, message: bytes) -> bool:
    numbers = rsapss.public_numbers(spki)
    return numbers is not None and rsapss.verify_python(numbers, signature, message)


_Verify = Callable[[bytes, bytes, bytes], bool]
_ECDSA: Dict[str, _Verify] = {"cryptography": _ecdsa_cryptography, "openssl": _ecdsa_openssl,
                              "python": p256.verify_python}
_RSA: Dict[str, _Verify] = {"cryptography": _rsa_cryptography, "openssl": _rsa_openssl,
                            "python": _rsa_python}


def implementations(scheme: str) -> Dict[str, _Verify]:
    """Backend name -> raw verifier (no pre-check), for the differential tests."""
    return {ECDSA: _ECDSA, RSA_PSS: _RSA}.get(scheme, {})

