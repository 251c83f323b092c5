"""Strict, bounded DER and PEM readers for public keys and ECDSA signatures. Pure.

Only what TUF keys need: SubjectPublicKeyInfo (RFC 5280) for P-256 (RFC 5480) and RSA
(RFC 8017 A.1.1) keys, and the ECDSA-Sig-Value ``SEQUENCE { r INTEGER, s INTEGER }``. Every
reader returns None for anything that is not exactly DER: long-form lengths that could be
short, leading zero or 0xFF bytes in INTEGERs, negative numbers, indefinite lengths,
high-tag-number forms, trailing bytes, and inputs over ``MAX_DER`` bytes.
"""

import base64
import binascii
import re
from typing import List, Optional, Tuple

MAX_DER = 4096          # an RSA-16384 SPKI is about 2.1 kB
MAX_PEM = 8192

SEQUENCE, INTEGER, BIT_STRING, NULL, OID = 0x30, 0x02, 0x03, 0x05, 0x06

OID_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")        # 1.2.840.10045.2.1
OID_P256 = bytes.fromhex("2a8648ce3d030107")               # 1.2.840.10045.3.1.7
OID_RSA = bytes.fromhex("2a864886f70d010101")              # 1.2.840.113549.1.1.1

_PEM_RE = re.compile(
    rb"-----BEGIN PUBLIC KEY-----\r?\n((?:[A-Za-z0-9+/=]{1,76}\r?\n)+)-----END PUBLIC KEY-----")

Tlv = Tuple[int, bytes]


def _tlv(data: bytes, pos: int) -> Optional[Tuple[int, bytes, int]]:
    """One TLV at ``pos``: (tag, contents, next position), or None if not strict DER."""
    if pos + 2 > len(data):
        return None
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:          # high-tag-number form: never used here
        return None
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 2 or pos + count > len(data):
            return None             # indefinite, or longer than any key here
        length = int.from_bytes(data[pos:pos + count], "big")
        if length < 0x80 or (count == 2 and length < 0x100):
            return None             # not the shortest form
        pos += count
    if pos + length > len(data):
        return None
    return tag, data[pos:pos + length], pos + length


def elements(data: bytes, tag: int = SEQUENCE) -> Optional[List[Tlv]]:
    """The TLVs inside ``data``, which must be exactly one element of ``tag``."""
    if len(data) > MAX_DER:
        return None
    outer = _tlv(data, 0)
    if outer is None or outer[0] != tag or outer[2] != len(data):
        return None
    return children(outer[1])


def children(body: bytes) -> Optional[List[Tlv]]:
    """The TLVs that make up ``body`` exactly."""
    items: List[Tlv] = []
    pos = 0
    while pos < len(body):
        item = _tlv(body, pos)
        if item is None:
            return None
        items.append((item[0], item[1]))
        pos = item[2]
    return items


def positive_integer(tlv: Tlv) -> Optional[int]:
    """A DER INTEGER that is > 0 and minimally encoded, else None."""
    tag, body = tlv
    if tag != INTEGER or not body or body[0] & 0x80:
        return None
    if len(body) > 1 and body[0] == 0 and not body[1] & 0x80:
        return None
    value = int.from_bytes(body, "big")
    return value if value > 0 else None


def ecdsa_signature(data: bytes) -> Optional[Tuple[int, int]]:
    """``SEQUENCE { r, s }`` as (r, s), both > 0 (range against n is the caller's)."""
    items = elements(data) if len(data) <= 80 else None
    if items is None or len(items) != 2:
        return None
    r, s = positive_integer(items[0]), positive_integer(items[1])
    if r is None or s is None:
        return None
    return r, s


def spki(data: bytes) -> Optional[Tuple[List[Tlv], bytes]]:
    """SubjectPublicKeyInfo: (AlgorithmIdentifier elements, key bits with no unused bits)."""
    items = elements(data)
    if items is None or len(items) != 2 or items[0][0] != SEQUENCE or items[1][0] != BIT_STRING:
        return None
    algorithm = children(items[0][1])
    bits = items[1][1]
    if algorithm is None or not bits or bits[0] != 0:
        return None
    return algorithm, bits[1:]


def pem_public_key(text: str) -> Optional[bytes]:
    """The DER inside one ``PUBLIC KEY`` PEM block (surrounding whitespace allowed)."""
    if len(text) > MAX_PEM:
        return None
    try:
        raw = text.strip().encode("ascii")
    except UnicodeEncodeError:
        return None
    m = _PEM_RE.fullmatch(raw)
    if m is None:
        return None
    body = m.group(1).replace(b"\r", b"").replace(b"\n", b"")
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(der) != body:       # non-canonical padding bits
        return None
    return der
