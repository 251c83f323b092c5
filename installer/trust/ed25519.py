"""Ed25519 signature verification (RFC 8032) with three interchangeable backends.

Backends, in order of preference:

``cryptography``
    the ``cryptography`` package, when it is importable (it is optional on a device; it is
    imported by name on first use, so the installer itself imports only the standard
    library);
``openssl``
    the ``openssl`` command, 3.0 or newer, found with ``shutil.which`` at call time and run
    with an argument list, a clean environment and 0600 files in a private temp folder
    (OpenSSL 3.0's ``pkeyutl -rawin`` cannot read an empty message, so that one case is
    answered by the pure-Python code);
``python``
    a small pure-Python verifier, always available (a few milliseconds per signature).

All three answer the same question the same way. Before any backend runs, ``verify`` applies
one strict pre-check shared by all of them: exact lengths, ``s < L`` and canonical point
encodings for ``A`` and ``R`` (``y < p``; no "negative zero" x). This matters because
OpenSSL (and so ``cryptography``) reduces a non-canonical public key modulo p and accepts
it. After the pre-check every backend evaluates the cofactorless equation
``[S]B == R + [k]A`` compared by encoding, as OpenSSL does. Small-order keys are not
rejected (neither OpenSSL nor RFC 8032 rejects them); the keys a device trusts come from a
signed root, never from the message.

``verify`` never raises for a bad or malformed signature or key: it returns False. It raises
only when a backend was forced (argument or ``AIRGAP_ED25519_BACKEND``) that does not exist
or is not available, or when the ``openssl`` command fails in a way that is not a verdict.

No I/O apart from the ``openssl`` backend's subprocess and temp files; the only state is a
cache of which backends exist (the ``openssl`` version per path, whether ``cryptography``
imports).
"""

import base64
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Callable, Dict, Optional, Tuple

from installer.errors import ConfigError, EnvironmentProblem
from installer.trust.ecmath import straus

ENV_BACKEND = "AIRGAP_ED25519_BACKEND"
BACKENDS = ("cryptography", "openssl", "python")

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Y_MASK = (1 << 255) - 1

# SubjectPublicKeyInfo DER prefix for an Ed25519 key (RFC 8410): the 32 raw bytes follow.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_OPENSSL_TIMEOUT = 60
_OPENSSL_OK = "Signature Verified Successfully"
_OPENSSL_BAD = "Signature Verification Failure"


# --- shared strict pre-check -------------------------------------------------------------

def _canonical_point_encoding(enc: bytes) -> bool:
    """True when ``enc`` is a canonical encoding: y < p and no sign bit on x == 0.

    x is zero exactly when y is 1 or p-1, so this needs no square root.
    """
    n = int.from_bytes(enc, "little")
    y = n & _Y_MASK
    if y >= _P:
        return False
    if n >> 255 and y in (1, _P - 1):
        return False
    return True


def _precheck(public_key: Any, signature: Any) -> bool:
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != PUBLIC_KEY_LEN:
        return False
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_LEN:
        return False
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    return _canonical_point_encoding(bytes(public_key)) and \
        _canonical_point_encoding(bytes(signature[:32]))


# --- pure Python (RFC 8032 section 5.1.7, extended coordinates) -----------------------------

_Point = Tuple[int, int, int, int]  # X, Y, Z, T with x = X/Z, y = Y/Z, x*y = T/Z


def _add(p1: _Point, p2: _Point) -> _Point:
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _double(p1: _Point) -> _Point:
    x1, y1, z1, _ = p1
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _decode_point(enc: bytes) -> Optional[_Point]:
    """RFC 8032 5.1.3, strict: None for y >= p, no square root, or x == 0 with sign bit."""
    n = int.from_bytes(enc, "little")
    y = n & _Y_MASK
    sign = n >> 255
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vxx = v * x * x % _P
    if vxx == u:
        pass
    elif vxx == (-u) % _P:
        x = x * _SQRT_M1 % _P
    else:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y, 1, x * y % _P


def _encode_point(pt: _Point) -> bytes:
    x, y, z, _ = pt
    zinv = pow(z, _P - 2, _P)
    x = x * zinv % _P
    y = y * zinv % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_B = _decode_point(bytes.fromhex(
    "5866666666666666666666666666666666666666666666666666666666666666"))
_IDENTITY = (0, 1, 1, 0)


def _verify_python(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    r_enc, s_enc = signature[:32], signature[32:]
    s = int.from_bytes(s_enc, "little")
    if s >= _L:
        return False
    a_point = _decode_point(public_key)
    if a_point is None or _decode_point(r_enc) is None:
        return False
    k = int.from_bytes(hashlib.sha512(r_enc + public_key + message).digest(), "little") % _L
    ax, ay, az, at = a_point
    neg_a = ((-ax) % _P, ay, az, (-at) % _P)
    assert _B is not None
    # [S]B - [k]A must encode to exactly the R bytes given.
    total = straus(s, _B, k, p2=neg_a, add=_add, double=_double, identity=_IDENTITY)
    return _encode_point(total) == r_enc


# --- cryptography -----------------------------------------------------------------------

_cryptography: Dict[str, Optional[Tuple[Any, Any]]] = {}


def _load_cryptography() -> Optional[Tuple[Any, Any]]:
    # Imported by name on first use: the package is optional on devices, and the installer's
    # own imports must stay standard-library only. The outcome is remembered (a failed import
    # rescans sys.path every time).
    if "loaded" not in _cryptography:
        try:
            ed = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
            exc = importlib.import_module("cryptography.exceptions")
            _cryptography["loaded"] = (ed.Ed25519PublicKey, exc.InvalidSignature)
        except ImportError:
            _cryptography["loaded"] = None
    return _cryptography["loaded"]


def _verify_cryptography(public_key: bytes, signature: bytes, message: bytes) -> bool:
    loaded = _load_cryptography()
    if loaded is None:
        raise EnvironmentProblem("the cryptography package is not importable")
    key_class, invalid = loaded
    try:
        key_class.from_public_bytes(bytes(public_key)).verify(bytes(signature), bytes(message))
    except (invalid, ValueError):
        return False
    return True


# --- openssl command --------------------------------------------------------------------

_openssl_versions: Dict[str, Optional[Tuple[int, int]]] = {}


def _openssl_env() -> Dict[str, str]:
    # Nothing from the caller's environment: no OPENSSL_CONF, OPENSSL_MODULES or LD_* tricks.
    return {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}


def _openssl_path() -> Optional[str]:
    """Absolute path of an ``openssl`` 3.0+ command on PATH, or None."""
    found = shutil.which("openssl")
    if not found:
        return None
    path = os.path.realpath(found)
    if path not in _openssl_versions:
        _openssl_versions[path] = _openssl_version(path)
    version = _openssl_versions[path]
    return path if version is not None and version >= (3, 0) else None


def _openssl_version(path: str) -> Optional[Tuple[int, int]]:
    try:
        out = subprocess.run([path, "version"], stdin=subprocess.DEVNULL, capture_output=True,
                             env=_openssl_env(), timeout=_OPENSSL_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"OpenSSL (\d+)\.(\d+)", out.stdout.decode("ascii", "replace"))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _verify_openssl(public_key: bytes, signature: bytes, message: bytes) -> bool:
    exe = _openssl_path()
    if exe is None:
        raise EnvironmentProblem("no openssl 3.0+ command on PATH")
    if not message:
        # `openssl pkeyutl -rawin` (3.0) cannot take an empty input ("Could not allocate 0
        # bytes for oneshot sign/verify buffer"; stdin is refused for one-shot algorithms).
        # No document this project signs is empty; answer with the RFC 8032 code instead.
        return _verify_python(public_key, signature, message)
    pem = (b"-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(_SPKI_PREFIX + public_key)
           + b"\n-----END PUBLIC KEY-----\n")
    tmp = tempfile.mkdtemp(prefix="airgap-ed25519-")  # created 0700
    try:
        names = {n: os.path.join(tmp, n) for n in ("pub.pem", "msg", "sig")}
        _write_private(names["pub.pem"], pem)
        _write_private(names["msg"], bytes(message))
        _write_private(names["sig"], bytes(signature))
        try:
            out = subprocess.run(
                [exe, "pkeyutl", "-verify", "-pubin", "-inkey", names["pub.pem"], "-rawin",
                 "-in", names["msg"], "-sigfile", names["sig"]],
                stdin=subprocess.DEVNULL, capture_output=True, env=_openssl_env(),
                cwd=tmp, timeout=_OPENSSL_TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise EnvironmentProblem(f"running {exe} failed: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stdout = out.stdout.decode("utf-8", "replace")
    if out.returncode == 0 and _OPENSSL_OK in stdout:
        return True
    if _OPENSSL_BAD in stdout:
        return False
    # Anything else (cannot load the key file, missing -rawin support, a provider error) is a
    # broken tool, not a verdict: fail closed and say so.
    stderr = out.stderr.decode("utf-8", "replace")
    detail = (stderr or stdout).strip()[:500]
    raise EnvironmentProblem(
        f"{exe} pkeyutl gave no verdict (exit {out.returncode}): {detail}",
        hint=f"force another backend with {ENV_BACKEND}=python")


# --- selection --------------------------------------------------------------------------

_IMPLEMENTATIONS: Dict[str, Callable[[bytes, bytes, bytes], bool]] = {
    "cryptography": _verify_cryptography,
    "openssl": _verify_openssl,
    "python": _verify_python,
}


def _is_available(name: str) -> bool:
    if name == "cryptography":
        return _load_cryptography() is not None
    if name == "openssl":
        return _openssl_path() is not None
    return name == "python"


def available_backends() -> Tuple[str, ...]:
    """The backends usable on this host right now, most preferred first."""
    return tuple(name for name in BACKENDS if _is_available(name))


def select_backend(backend: Optional[str] = None) -> str:
    """The backend ``verify`` would use: ``backend``, else ``$AIRGAP_ED25519_BACKEND``, else
    the first available one. A forced backend that is unknown or unavailable is an error."""
    forced = backend if backend is not None else (os.environ.get(ENV_BACKEND) or None)
    if forced is None:
        return available_backends()[0]
    source = "argument" if backend is not None else ENV_BACKEND
    if forced not in BACKENDS:
        raise ConfigError(f"unknown Ed25519 backend {forced!r} (from {source})",
                          hint="choose one of: {}".format(", ".join(BACKENDS)))
    if not _is_available(forced):
        raise EnvironmentProblem(
            f"Ed25519 backend {forced!r} (from {source}) is not available on this host",
            hint="available here: {}; unset {} to choose automatically".format(
                ", ".join(available_backends()), ENV_BACKEND))
    return forced


def verify(public_key: bytes, signature: bytes, message: bytes,
           *, backend: Optional[str] = None) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by the 32-byte
    ``public_key``; False for anything else, including malformed lengths and encodings."""
    name = select_backend(backend)
    if not _precheck(public_key, signature):
        return False
    if not isinstance(message, (bytes, bytearray)):
        return False
    return _IMPLEMENTATIONS[name](bytes(public_key), bytes(signature), bytes(message))
