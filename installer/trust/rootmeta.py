"""The device's trust anchor: TUF ``root.json``, root rotation, and signed bundle manifests.

Pure functions over bytes, parsed documents and an explicit ``now`` (epoch seconds). No file,
network or clock access: the caller reads the stored root and the bundle's root chain, calls
``verify_signed_manifest`` and persists the root it returns only after the whole install
verified.

What is accepted (python-tuf's client is the reference; tests compare decisions):

- ``root.json`` is TUF metadata as python-tuf's Metadata API writes it. Parsing is strict:
  duplicate JSON keys and floats are rejected (``canonjson.loads_strict``); the signed bytes
  are ``canonjson.encode(signed)``, the same canonical form python-tuf signs. Structural rules
  mirror python-tuf: ``_type`` root, spec version 1.x, version >= 1, ``expires`` exactly
  ``YYYY-MM-DDTHH:MM:SSZ``, exactly the four top-level roles, threshold >= 1, no keyid listed
  twice in a role, no two signatures with the same keyid in one root document.
- Keys of the types ``sigkeys`` knows (Ed25519, ECDSA P-256, RSA-PSS) are counted; other
  key types are parsed and ignored (a root may carry them; they never count).
- Thresholds count DISTINCT keys, by key material: two keyids for the same public key count
  once, as does a signature repeated in a list. (python-tuf counts keyids; here we are
  stricter.)
- A keyid is a label. Like python-tuf, we do not require it to equal the sha256 of the key's
  canonical JSON (the TUF spec's derivation); counting by key material makes a forged or
  duplicated keyid useless to an attacker.
- Root rotation is TUF client step 5.3: version N+1 exactly, signed by a threshold of root
  keys of version N and of N+1. Intermediate roots may be expired; only the final one must
  not be (5.3.10).

What is not done here: timestamp/snapshot freshness and ring promotion (other modules),
persisting anything.
"""

import calendar
import datetime
import hashlib
import re
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from installer.errors import FormatError, SignatureError
from installer.format import canonjson
from installer.trust import sigkeys

TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")  # TUF top-level, signing order
ED25519 = "ed25519"

_EXPIRES_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
_SPEC_RE = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?")
# Lowercase only: hex case is not covered by any signature, so accepting both would let the
# same signed document exist as several byte strings (python-tuf accepts either case).
_HEX_RE = re.compile(r"(?:[0-9a-f]{2})*")


@dataclass(frozen=True)
class Key:
    """A key from ``root.json``. ``public`` is its canonical material (``sigkeys``), or None
    for a key type this verifier does not use (such keys never count toward a threshold)."""

    keyid: str
    keytype: str
    scheme: str
    public: Optional[bytes]


@dataclass(frozen=True)
class Role:
    keyids: Tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Root:
    """A parsed root. Parsing alone proves nothing: see ``load_trusted_root``, ``update_root``
    and ``advance_root`` for the signature checks."""

    version: int
    expires: int
    keys: Mapping[str, Key]
    roles: Mapping[str, Role]
    signed: Mapping[str, Any] = field(repr=False)
    signatures: Tuple[Signature, ...] = field(repr=False)
    signed_bytes: bytes = field(repr=False)


def root_fingerprint(root: Root) -> str:
    """A short name for a root that a person can compare across screens: the first 12 hex
    digits of the sha256 of its canonical ``signed`` bytes (the bytes its keys sign)."""
    return hashlib.sha256(root.signed_bytes).hexdigest()[:12]


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(obj: Dict[str, Any], key: str, kind: type, *, what: str) -> Any:
    if key not in obj:
        raise FormatError(f"{what}: missing {key!r}")
    value = obj[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        found = type(value).__name__
        raise FormatError(f"{what}: {key!r} must be {kind.__name__}, found {found}")
    return value


def _hex(value: str, what: str) -> bytes:
    if not _HEX_RE.fullmatch(value):
        raise FormatError(f"{what} is not a lowercase hex string")
    return bytes.fromhex(value)


def parse_expires(value: str, what: str = "expires") -> int:
    """``YYYY-MM-DDTHH:MM:SSZ`` (the only form python-tuf round-trips) -> epoch seconds."""
    m = _EXPIRES_RE.fullmatch(value)
    if not m:
        raise FormatError(f"{what} {value!r} is not of the form YYYY-MM-DDTHH:MM:SSZ")
    try:
        year, month, day, hour, minute, second = (int(g) for g in m.groups())
        moment = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError as e:
        raise FormatError(f"{what} {value!r} is not a valid date: {e}") from None
    return calendar.timegm(moment.timetuple())


def _parse_key(keyid: str, obj: Any, what: str) -> Key:
    if not isinstance(obj, dict):
        raise FormatError(f"{what} must be an object")
    keytype = _get(obj, "keytype", str, what=what)
    scheme = _get(obj, "scheme", str, what=what)
    keyval = _get(obj, "keyval", dict, what=what)
    public = None
    if (keytype, scheme) in sigkeys.SUPPORTED:
        public = sigkeys.parse_public(keytype, scheme,
                                      _get(keyval, "public", str, what=what + ".keyval"),
                                      what=what)
    return Key(keyid, keytype, scheme, public)


def _parse_role(obj: Any, what: str) -> Role:
    if not isinstance(obj, dict):
        raise FormatError(f"{what} must be an object")
    keyids = _get(obj, "keyids", list, what=what)
    threshold = _get(obj, "threshold", int, what=what)
    if not all(isinstance(k, str) for k in keyids):
        raise FormatError(f"{what}: keyids must be strings")
    if len(set(keyids)) != len(keyids):
        dup = sorted({k for k in keyids if keyids.count(k) > 1})
        raise FormatError(f"{what} lists keyid {', '.join(dup)} more than once")
    if threshold < 1:
        raise FormatError(f"{what}: threshold must be at least 1, found {threshold}")
    return Role(tuple(keyids), threshold)


def parse_signatures(obj: Any, what: str, *, allow_repeats: bool) -> Tuple[Signature, ...]:
    """A JSON list of ``{"keyid": str, "sig": hex}``. Repeated keyids are rejected unless
    ``allow_repeats`` (threshold counting ignores repeats either way)."""
    if not isinstance(obj, list):
        raise FormatError(f"{what} must be a list")
    result: List[Signature] = []
    seen: Set[str] = set()
    for i, entry in enumerate(obj):
        where = f"{what}[{i}]"
        if not isinstance(entry, dict):
            raise FormatError(f"{where} must be an object")
        keyid = _get(entry, "keyid", str, what=where)
        sig = _hex(_get(entry, "sig", str, what=where), where + ".sig")
        if keyid in seen and not allow_repeats:
            raise FormatError(f"{what}: more than one signature by keyid {keyid}")
        seen.add(keyid)
        result.append(Signature(keyid, sig))
    return tuple(result)


def parse_root(data: bytes, *, what: str = "root.json") -> Root:
    """Parse TUF root metadata strictly. Checks structure only, not signatures."""
    doc = canonjson.loads_strict(data, what=what)
    if not isinstance(doc, dict):
        raise FormatError(f"{what} must be a JSON object")
    signed = _get(doc, "signed", dict, what=what)
    sigs = parse_signatures(_get(doc, "signatures", list, what=what), what + " signatures",
                            allow_repeats=False)
    where = what + " signed"
    if signed.get("_type") != "root":
        raise FormatError(f"{where}: _type must be 'root', found {signed.get('_type')!r}")
    spec = _get(signed, "spec_version", str, what=where)
    if not _SPEC_RE.fullmatch(spec) or spec.split(".")[0] != "1":
        raise FormatError(f"{where}: unsupported spec_version {spec!r} (1.x expected)")
    version = _get(signed, "version", int, what=where)
    if version < 1:
        raise FormatError(f"{where}: version must be at least 1, found {version}")
    expires = parse_expires(_get(signed, "expires", str, what=where), where + " expires")
    if "consistent_snapshot" in signed and not isinstance(signed["consistent_snapshot"], bool):
        raise FormatError(f"{where}: consistent_snapshot must be a boolean")
    keys = {keyid: _parse_key(keyid, obj, f"{where} key {keyid}")
            for keyid, obj in _get(signed, "keys", dict, what=where).items()}
    roles_obj = _get(signed, "roles", dict, what=where)
    if sorted(roles_obj) != sorted(TOP_LEVEL_ROLES):
        found = ", ".join(sorted(roles_obj)) or "none"
        raise FormatError(f"{where}: roles must be exactly {', '.join(sorted(TOP_LEVEL_ROLES))}, "
                          f"found {found}")
    roles = {name: _parse_role(obj, f"{where} role {name}")
             for name, obj in roles_obj.items()}
    return Root(version=version, expires=expires, keys=MappingProxyType(keys),
                roles=MappingProxyType(roles), signed=MappingProxyType(signed),
                signatures=sigs, signed_bytes=canonjson.encode(signed))


def count_valid(root: Root, role: str, payload: bytes,
                *, signatures: Sequence[Signature]) -> int:
    """How many distinct keys of ``role`` in ``root`` validly signed ``payload``."""
    wanted = root.roles.get(role)
    if wanted is None:
        return 0
    return count_valid_keys(root.keys, wanted.keyids, payload, signatures=signatures)


def count_valid_keys(keys: Mapping[str, Key], keyids: Sequence[str], payload: bytes,
                     *, signatures: Sequence[Signature]) -> int:
    """How many distinct keys (by material) among ``keyids`` validly signed ``payload``: the
    threshold count for a top-level role and for a delegated one alike."""
    role_keyids = set(keyids)
    valid: Set[Tuple[str, bytes]] = set()
    for sig in signatures:
        key = keys.get(sig.keyid) if sig.keyid in role_keyids else None
        if key is None or key.public is None or (key.scheme, key.public) in valid:
            continue
        if sigkeys.verify(key.scheme, key.public, sig.sig, message=payload):
            valid.add((key.scheme, key.public))
    return len(valid)


def verify_threshold(root: Root, role: str, payload: bytes, *,
                     signatures: Sequence[Signature], what: Optional[str] = None) -> None:
    """Raise ``SignatureError`` unless a threshold of distinct keys of ``role`` (as defined by
    ``root``) signed ``payload``. Keys outside the role and unsupported key types are ignored."""
    wanted = root.roles.get(role)
    label = what or f"{role} metadata"
    if wanted is None:
        raise SignatureError(f"{label}: root v{root.version} defines no role {role!r}")
    found = count_valid(root, role, payload, signatures=signatures)
    if found < wanted.threshold:
        in_role = sum(1 for s in signatures if s.keyid in wanted.keyids)
        raise SignatureError(
            f"{label}: the {role!r} role of root v{root.version} needs {wanted.threshold} "
            f"valid signature(s) from distinct keys, found {found} ({len(signatures)} "
            f"signature(s) given, {in_role} by keyids in the role)",
            hint=f"sign with the {role} keys listed in root v{root.version}")


def load_trusted_root(data: bytes) -> Root:
    """Parse the device's stored root and check it is signed by its own root role (it is
    the anchor; this catches corruption). Expiry is left to ``advance_root``."""
    root = parse_root(data, what="trusted root.json")
    verify_threshold(root, "root", root.signed_bytes, signatures=root.signatures,
                     what=f"trusted root v{root.version}")
    return root


def _step(trusted: Root, new: Root) -> Root:
    if new.version != trusted.version + 1:
        raise SignatureError(
            f"root chain: after trusted root v{trusted.version} the next root must be "
            f"v{trusted.version + 1}, found v{new.version}",
            hint=f"the bundle must carry every root from v{trusted.version + 1} up to the newest")
    verify_threshold(trusted, "root", new.signed_bytes, signatures=new.signatures,
                     what=f"root v{new.version} (checked with the keys of trusted root "
                          f"v{trusted.version})")
    verify_threshold(new, "root", new.signed_bytes, signatures=new.signatures,
                     what=f"root v{new.version} (checked with its own root keys)")
    return new


def update_root(trusted: Root, new_root_bytes: bytes) -> Root:
    """One TUF root update step: ``new_root_bytes`` must be version trusted+1 and signed by a
    threshold of the trusted root's root keys AND of its own. Expiry is not checked here."""
    return _step(trusted, parse_root(new_root_bytes, what="new root.json"))


def advance_root(trusted_bytes: bytes, chain: Sequence[bytes], now: int) -> Root:
    """Walk ``chain`` (any order; versions <= the trusted one are ignored) from the trusted
    root to the newest, one version at a time, then require the final root to be unexpired
    at ``now``. A gap (v1 -> v3) or two different documents for one version are rejected."""
    current = load_trusted_root(trusted_bytes)
    # version -> (index in chain, identity); only one parsed root is alive at a time, so a
    # long chain of large roots costs the bytes the caller already holds, not their parses
    newer: Dict[int, Tuple[int, Tuple[bytes, Tuple[Signature, ...]]]] = {}
    for i, data in enumerate(chain):
        candidate = parse_root(data, what=f"root chain entry {i + 1}")
        if candidate.version <= current.version:
            continue
        identity = (hashlib.sha256(candidate.signed_bytes).digest(), candidate.signatures)
        seen = newer.get(candidate.version)
        if seen is not None and seen[1] != identity:
            raise SignatureError(
                f"root chain holds two different documents for root v{candidate.version}",
                hint="rebuild the bundle from one key directory")
        newer[candidate.version] = (i, identity)
    for version in sorted(newer):
        index = newer[version][0]
        current = _step(current, parse_root(chain[index], what=f"root chain entry {index + 1}"))
    if now >= current.expires:
        raise SignatureError(
            f"root v{current.version} expired at {_iso(current.expires)} (now is {_iso(now)})",
            hint="use a bundle that carries a newer root (rotate or re-sign root.json), or "
                 "check this host's clock")
    return current


def parse_envelope(data: bytes, kind: str, *,
                   what: str) -> Tuple[Dict[str, Any], Tuple[Signature, ...]]:
    """A metadata envelope ``{"signed": {"_type": kind, ...}, "signatures": [...]}``, parsed
    strictly (bounded JSON, exactly those two keys, no repeated keyid); no signature check."""
    doc = canonjson.loads_strict(data, what=what)
    if not isinstance(doc, dict) or set(doc) != {"signed", "signatures"}:
        raise FormatError(f"{what} must be an object holding exactly signed and signatures")
    signed = _get(doc, "signed", dict, what=what)
    sigs = parse_signatures(doc["signatures"], what + " signatures", allow_repeats=False)
    if signed.get("_type") != kind:
        raise FormatError(f"{what} signed: _type must be {kind!r}, found "
                          f"{signed.get('_type')!r}")
    return signed, sigs


def parse_signatures_doc(data: bytes) -> Tuple[Signature, ...]:
    """The canonical ``{"signatures": [{"keyid": .., "sig": hex}, ..]}`` next to a manifest."""
    doc = canonjson.loads_canonical(data, what="manifest signatures")
    if not isinstance(doc, dict) or set(doc) != {"signatures"}:
        raise FormatError('manifest signatures must be {"signatures": [...]} and nothing else')
    for i, entry in enumerate(doc["signatures"] if isinstance(doc["signatures"], list) else []):
        if isinstance(entry, dict) and set(entry) != {"keyid", "sig"}:
            raise FormatError(f"manifest signatures[{i}] must hold exactly keyid and sig")
    return parse_signatures(doc["signatures"], "manifest signatures", allow_repeats=True)


def verify_signed_manifest(trusted_root_bytes: bytes, chain: Sequence[bytes],
                           manifest_bytes: bytes, *, signatures_doc: bytes, now: int) -> Root:
    """Advance the root through ``chain``, then require ``manifest_bytes`` to be canonical
    JSON signed by a threshold of the newest root's ``targets`` role. Returns that root, for
    the caller to persist once the install has succeeded."""
    root = advance_root(trusted_root_bytes, chain, now)
    canonjson.loads_canonical(manifest_bytes, what="bundle manifest")
    signatures = parse_signatures_doc(signatures_doc)
    verify_threshold(root, "targets", manifest_bytes, signatures=signatures, what="bundle manifest")
    return root
