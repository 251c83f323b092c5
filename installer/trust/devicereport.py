"""The signed device report: its envelope, sealing and opening (pure, bytes in and out).

::

    {"signed": {"type": "airgap-device-report", "format": 1, "device_id": ..., "public_key":
                ..., "sequence": N, "time": ..., ...},
     "signature": "<hex Ed25519 signature of canonjson(signed)>"}

The whole file is canonical JSON (``installer/format/canonjson.py``). ``device_id`` is the
sha256 of ``public_key`` (``devicekey.fingerprint``), so a report names the key that must have
signed it; whether that key is *enrolled* is the desk's question (``bundler/fleet``).
"""

from typing import Any, Dict, Optional

from installer.errors import FormatError, SignatureError
from installer.format import canonjson
from installer.trust import devicekey, ed25519

REPORT_TYPE = "airgap-device-report"
FORMAT = 1
MAX_BYTES = 64 * 1024
REQUIRED = {"device_id": str, "public_key": str, "sequence": int, "time": int,
            "event": str, "hostname": str}


def seal(signed: Dict[str, Any], seed: bytes) -> bytes:
    """The report file: ``signed`` and its signature by ``seed``, canonical JSON."""
    body = dict(signed, type=REPORT_TYPE, format=FORMAT)
    signature = devicekey.sign(seed, canonjson.encode(body))
    return canonjson.encode({"signed": body, "signature": signature.hex()})


def _shape(doc: Any) -> Dict[str, Any]:
    if not isinstance(doc, dict) or set(doc) != {"signed", "signature"}:
        raise FormatError("not a device report (expected signed and signature)")
    signed = doc["signed"]
    if not isinstance(signed, dict) or signed.get("type") != REPORT_TYPE or \
            signed.get("format") != FORMAT:
        raise FormatError(f"not a {REPORT_TYPE} of format {FORMAT}")
    for key, kind in REQUIRED.items():
        value = signed.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise FormatError(f"field {key} is missing or not a {kind.__name__}")
    if signed["sequence"] < 1:
        raise FormatError("sequence must be 1 or more")
    return signed


_HEAD = b'{"signature":"'
_SIG_HEX = 2 * ed25519.SIGNATURE_LEN
_MID = b'","signed":'


def open_report(data: bytes, *, backend: Optional[str] = None) -> Dict[str, Any]:
    """The signed part of a report whose signature is by the key it names; raises
    ``FormatError`` (malformed) or ``SignatureError`` (bad signature) otherwise.

    The file must be exactly what :func:`seal` writes (canonical JSON: ``signature`` sorts
    before ``signed``), so the signed bytes are a slice of it and are verified as they are,
    without re-encoding. ``backend``: the Ed25519 backend (the desk picks one for many)."""
    if len(data) > MAX_BYTES:
        raise FormatError(f"{len(data)} bytes, over {MAX_BYTES}")
    end = len(_HEAD) + _SIG_HEX
    if not data.startswith(_HEAD) or data[end:end + len(_MID)] != _MID or \
            not data.endswith(b"}"):
        raise FormatError("not a canonical device report (as `airgap-install` writes it)")
    body = data[end + len(_MID):-1]
    signed = _shape({"signed": canonjson.loads_strict(body, what="report"), "signature": ""})
    try:
        public = bytes.fromhex(signed["public_key"])
        signature = bytes.fromhex(data[len(_HEAD):end].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise FormatError("public_key or signature is not hex") from None
    if devicekey.fingerprint(public) != signed["device_id"]:
        raise SignatureError("device_id is not the fingerprint of public_key")
    if not ed25519.verify(public, signature, body, backend=backend):
        raise SignatureError("bad signature")
    return signed
