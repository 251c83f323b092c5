"""RSASSA-PSS with SHA-256 and MGF1-SHA-256 (RFC 8017 8.1.2, 9.1.2): key parsing and a pure
Python verifier. Pure; no I/O.

The salt length is recovered from the encoded message (OpenSSL's and ``cryptography``'s
``PSS.AUTO``), as securesystemslib verifies; python-tuf signers use a 32-byte salt.
``public_numbers`` reads a PEM or DER SubjectPublicKeyInfo (rsaEncryption) into (n, e),
refusing moduli outside ``MIN_BITS``..``MAX_BITS`` and even or tiny exponents.
"""

import hashlib
from typing import Optional, Tuple

from installer.trust import der

MIN_BITS = 1024
MAX_BITS = 16384
_H_LEN = 32


def public_numbers(pem_or_der: "str | bytes") -> Optional[Tuple[int, int]]:
    data = der.pem_public_key(pem_or_der) if isinstance(pem_or_der, str) else pem_or_der
    if data is None:
        return None
    parsed = der.spki(data)
    if parsed is None:
        return None
    algorithm, bits = parsed
    if algorithm != [(der.OID, der.OID_RSA), (der.NULL, b"")]:
        return None
    items = der.elements(bits)
    if items is None or len(items) != 2:
        return None
    n, e = der.positive_integer(items[0]), der.positive_integer(items[1])
    if n is None or e is None or not MIN_BITS <= n.bit_length() <= MAX_BITS:
        return None
    if e < 3 or e % 2 == 0 or e >= n or n % 2 == 0:
        return None
    return n, e


def encode_numbers(n: int, e: int) -> bytes:
    """The DER SubjectPublicKeyInfo of (n, e) (for the openssl and cryptography backends)."""
    def integer(value: int) -> bytes:
        body = value.to_bytes(value.bit_length() // 8 + 1, "big")
        return _tlv(der.INTEGER, body)
    key = _tlv(der.SEQUENCE, integer(n) + integer(e))
    algorithm = _tlv(der.SEQUENCE, _tlv(der.OID, der.OID_RSA) + _tlv(der.NULL, b""))
    return _tlv(der.SEQUENCE, algorithm + _tlv(der.BIT_STRING, b"\x00" + key))


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + body


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def verify_python(numbers: Tuple[int, int], signature: bytes, message: bytes) -> bool:
    n, e = numbers
    k = (n.bit_length() + 7) // 8
    if not 0 < len(signature) <= k:     # shorter: leading zeros dropped (OpenSSL accepts it)
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em_bits = n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    m = pow(s, e, n)
    if m.bit_length() > em_bits:
        return False
    em = m.to_bytes(em_len, "big")
    m_hash = hashlib.sha256(message).digest()
    if em_len < _H_LEN + 2 or em[-1] != 0xBC:
        return False
    masked, h = em[:em_len - _H_LEN - 1], em[em_len - _H_LEN - 1:-1]
    unused = 8 * em_len - em_bits
    if unused and masked[0] >> (8 - unused):
        return False
    mask = _mgf1(h, len(masked))
    db = (int.from_bytes(masked, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(masked),
                                                                             "big")
    db = bytes([db[0] & (0xFF >> unused)]) + db[1:]
    sep = len(db) - len(db.lstrip(b"\x00"))
    if sep >= len(db) or db[sep] != 1:
        return False
    salt = db[sep + 1:]
    return hashlib.sha256(b"\x00" * 8 + m_hash + salt).digest() == h
