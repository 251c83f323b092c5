"""Ed25519 signing for a device's own reports (RFC 8032 section 5.1.6), pure.

A device signs its reports with a key pair of its own (``installer/host/identity.py`` keeps it
in the state folder). Signing uses the ``cryptography`` package when it imports, else the small
pure-Python code below, built on the curve arithmetic of ``ed25519.py`` (which verifies). Both
give the same bytes: Ed25519 signatures are deterministic.

The pure code is not constant time. It signs a device's own status reports, on the device,
with a key that protects nothing but the authorship of those reports; a local attacker able to
time it could already read the key file.

No I/O: the seed comes in as bytes (the caller draws it from ``os.urandom``).
"""

import hashlib
import importlib
from typing import Any, Dict, Optional, Tuple

from installer.trust import ed25519

SEED_LEN = 32
_cryptography: Dict[str, Optional[Any]] = {}


def _scalar_mult(n: int) -> "ed25519._Point":
    """[n]B by double-and-add over the base point."""
    assert ed25519._B is not None
    acc = ed25519._IDENTITY
    for i in range(n.bit_length() - 1, -1, -1):
        acc = ed25519._double(acc)
        if (n >> i) & 1:
            acc = ed25519._add(acc, ed25519._B)
    return acc


def _expand(seed: bytes) -> Tuple[int, bytes]:
    h = hashlib.sha512(seed).digest()
    a = bytearray(h[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    return int.from_bytes(bytes(a), "little"), h[32:]


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_LEN:
        raise ValueError(f"an Ed25519 seed is {SEED_LEN} bytes")
    return bytes(seed)


def public_key_python(seed: bytes) -> bytes:
    a, _ = _expand(_check_seed(seed))
    return ed25519._encode_point(_scalar_mult(a))


def sign_python(seed: bytes, message: bytes) -> bytes:
    """RFC 8032 5.1.6, in pure Python."""
    a, prefix = _expand(_check_seed(seed))
    public = ed25519._encode_point(_scalar_mult(a))
    r = int.from_bytes(hashlib.sha512(prefix + message).digest(), "little") % ed25519._L
    r_enc = ed25519._encode_point(_scalar_mult(r))
    k = int.from_bytes(hashlib.sha512(r_enc + public + message).digest(),
                       "little") % ed25519._L
    s = (r + k * a) % ed25519._L
    return r_enc + s.to_bytes(32, "little")


def _private_class() -> Optional[Any]:
    # imported by name on first use: optional on a device, and the installer's own imports
    # stay standard-library only
    if "loaded" not in _cryptography:
        try:
            mod = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
            _cryptography["loaded"] = mod.Ed25519PrivateKey
        except ImportError:
            _cryptography["loaded"] = None
    return _cryptography["loaded"]


def backend() -> str:
    """``cryptography`` when it imports, else ``python``."""
    return "cryptography" if _private_class() is not None else "python"


def public_key(seed: bytes, *, use: Optional[str] = None) -> bytes:
    """The 32-byte public key of ``seed``."""
    cls = _private_class() if (use or backend()) == "cryptography" else None
    public = cls.from_private_bytes(_check_seed(seed)).public_key() if cls else None
    if public is None or not hasattr(public, "public_bytes_raw"):  # cryptography < 40
        return public_key_python(seed)
    return bytes(public.public_bytes_raw())


def sign(seed: bytes, message: bytes, *, use: Optional[str] = None) -> bytes:
    """The 64-byte signature of ``message`` by ``seed``."""
    cls = _private_class() if (use or backend()) == "cryptography" else None
    if cls is None:
        return sign_python(seed, message)
    return bytes(cls.from_private_bytes(_check_seed(seed)).sign(bytes(message)))


def fingerprint(public: bytes) -> str:
    """The device id: sha256 of the raw public key, hex."""
    return hashlib.sha256(public).hexdigest()
