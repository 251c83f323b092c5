"""ECDSA over NIST P-256 with SHA-256 (FIPS 186-5, SEC 1 4.1.4): key parsing and a pure
Python verifier. Pure; no I/O.

``public_point`` reads a PEM or DER SubjectPublicKeyInfo (id-ecPublicKey, prime256v1) and
returns the 65-byte uncompressed point, checked to lie on the curve (compressed points are
decompressed). ``verify_python`` checks a DER ``ECDSA-Sig-Value`` over ``message``. Point
arithmetic is variable time: every input here is public.
"""

import hashlib
from typing import Optional, Tuple

from installer.trust import der
from installer.trust.ecmath import straus

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
A = P - 3
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

POINT_LEN = 65

_Jac = Tuple[int, int, int]          # Jacobian (X, Y, Z): x = X/Z^2, y = Y/Z^3; Z == 0 is infinity
_INF: _Jac = (1, 1, 0)


def on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def decode_point(enc: bytes) -> Optional[Tuple[int, int]]:
    """SEC 1 2.3.4: uncompressed (04 X Y) or compressed (02/03 X), on the curve; not infinity."""
    if len(enc) == POINT_LEN and enc[0] == 4:
        x, y = int.from_bytes(enc[1:33], "big"), int.from_bytes(enc[33:], "big")
        return (x, y) if on_curve(x, y) else None
    if len(enc) == 33 and enc[0] in (2, 3):
        x = int.from_bytes(enc[1:], "big")
        if x >= P:
            return None
        rhs = (x * x * x + A * x + B) % P
        y = pow(rhs, (P + 1) // 4, P)            # P = 3 mod 4
        if y * y % P != rhs:
            return None
        if y & 1 != enc[0] & 1:
            y = P - y
        return x, y
    return None


def public_point(pem_or_der: "str | bytes") -> Optional[bytes]:
    """The uncompressed point of a P-256 SPKI (PEM text or DER bytes), or None."""
    data = der.pem_public_key(pem_or_der) if isinstance(pem_or_der, str) else pem_or_der
    if data is None:
        return None
    parsed = der.spki(data)
    if parsed is None:
        return None
    algorithm, bits = parsed
    if algorithm != [(der.OID, der.OID_EC_PUBLIC_KEY), (der.OID, der.OID_P256)]:
        return None
    point = decode_point(bits)
    if point is None:
        return None
    return b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")


def spki_der(point: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an uncompressed point (for the openssl backend)."""
    return bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + point


def signature_values(signature: bytes) -> Optional[Tuple[int, int]]:
    """(r, s) of a strict DER signature with 1 <= r, s < n, or None."""
    rs = der.ecdsa_signature(signature)
    if rs is None or not (rs[0] < N and rs[1] < N):
        return None
    return rs


def _double(p1: _Jac) -> _Jac:
    x, y, z = p1
    if z == 0 or y == 0:
        return _INF
    yy = y * y % P
    s = 4 * x * yy % P
    zz = z * z % P
    m = 3 * (x - zz) * (x + zz) % P          # a = -3
    x3 = (m * m - 2 * s) % P
    y3 = (m * (s - x3) - 8 * yy * yy) % P
    return x3, y3, 2 * y * z % P


def _add(p1: _Jac, p2: _Jac) -> _Jac:
    if p1[2] == 0:
        return p2
    if p2[2] == 0:
        return p1
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    z1z1, z2z2 = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2z2 % P, x2 * z1z1 % P
    s1, s2 = y1 * z2 * z2z2 % P, y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(p1) if s1 == s2 else _INF
    h, r = (u2 - u1) % P, (s2 - s1) % P
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    return x3, y3, z1 * z2 * h % P


def _affine_x(p1: _Jac) -> Optional[int]:
    if p1[2] == 0:
        return None
    zinv = pow(p1[2], P - 2, P)
    return p1[0] * zinv * zinv % P


def verify_python(point: bytes, signature: bytes, message: bytes) -> bool:
    """SEC 1 4.1.4 over SHA-256; ``point`` as ``public_point`` returns it."""
    q = decode_point(point)
    rs = signature_values(signature)
    if q is None or rs is None:
        return False
    r, s = rs
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")   # 256 bits: no truncation
    w = pow(s, N - 2, N)
    x = _affine_x(straus(e * w % N, (GX, GY, 1), r * w % N, p2=(q[0], q[1], 1),
                           add=_add, double=_double, identity=_INF))
    return x is not None and x % N == r
