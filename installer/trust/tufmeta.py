"""Typed TUF metadata records, parsed once from bytes (no signature checks here). Pure.

``parse_timestamp``, ``parse_snapshot`` and ``parse_targets`` read the envelope strictly
(``rootmeta.parse_envelope``: bounded JSON, no duplicate keys or floats, no keyid signing
twice, the right ``_type``), then the fields the TUF specification (1.0.x, section 4) gives
each role. Root is ``rootmeta.Root``. Unknown fields are kept in ``signed`` (they are signed)
and otherwise ignored, as the specification asks.

Also here, because every role uses them: the length-and-hashes check of a file against its
``MetaFile`` or ``TargetFile`` (every listed supported hash must match; a listing with no
supported algorithm is refused), the delegation path rules (fnmatch per path segment, so
``*`` never matches ``/``; ``path_hash_prefixes`` over the sha256 of the target path), and
the names a role's metadata has on a repository (URL-quoted, version-prefixed under
consistent snapshots).
"""

import fnmatch
import hashlib
import urllib.parse
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Tuple

from installer.errors import DigestMismatch, FormatError
from installer.format import canonjson
from installer.trust import rootmeta

HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
ISSUED = "x-airgap-issued"
TOP_TARGETS = "targets"


@dataclass(frozen=True)
class Signed:
    """What every verified document has: the envelope and the common ``signed`` fields."""

    kind: str
    version: int
    expires: int
    signed: Mapping[str, Any] = field(repr=False)
    signatures: Tuple[rootmeta.Signature, ...] = field(repr=False)
    signed_bytes: bytes = field(repr=False)
    data: bytes = field(repr=False)

    @property
    def issued(self) -> Optional[int]:
        value = self.signed.get(ISSUED)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class MetaFile:
    version: int
    length: Optional[int] = None
    hashes: Optional[Mapping[str, str]] = None


@dataclass(frozen=True)
class Timestamp(Signed):
    snapshot: MetaFile = MetaFile(1)


@dataclass(frozen=True)
class Snapshot(Signed):
    meta: Mapping[str, MetaFile] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetFile:
    path: str
    length: int
    hashes: Mapping[str, str]
    custom: Mapping[str, Any]


@dataclass(frozen=True)
class DelegatedRole:
    name: str
    keyids: Tuple[str, ...]
    threshold: int
    terminating: bool
    paths: Optional[Tuple[str, ...]]
    hash_prefixes: Optional[Tuple[str, ...]]

    def covers(self, target_path: str) -> bool:
        """Whether this delegation is trusted for ``target_path`` (spec 4.5, "paths")."""
        if self.paths is not None:
            parts = target_path.split("/")
            return any(_segments_match(parts, p.split("/")) for p in self.paths)
        digest = hashlib.sha256(target_path.encode("utf-8")).hexdigest()
        return any(digest.startswith(p) for p in self.hash_prefixes or ())


def _segments_match(parts: List[str], pattern: List[str]) -> bool:
    return len(parts) == len(pattern) and all(
        fnmatch.fnmatchcase(parts[i], pattern[i]) for i in range(len(parts)))


@dataclass(frozen=True)
class Delegations:
    keys: Mapping[str, rootmeta.Key]
    roles: Tuple[DelegatedRole, ...]

    def role(self, name: str) -> Optional[DelegatedRole]:
        for r in self.roles:
            if r.name == name:
                return r
        return None


@dataclass(frozen=True)
class Targets(Signed):
    targets: Mapping[str, TargetFile] = field(default_factory=dict)
    delegations: Optional[Delegations] = None


# --- parsing --------------------------------------------------------------------------------

def _common(data: bytes, kind: str, what: str) -> Dict[str, Any]:
    signed, sigs = rootmeta.parse_envelope(data, kind, what=what)
    where = what + " signed"
    spec = rootmeta._get(signed, "spec_version", str, what=where)
    if not rootmeta._SPEC_RE.fullmatch(spec) or spec.split(".")[0] != "1":
        raise FormatError(f"{where}: unsupported spec_version {spec!r} (1.x expected)")
    version = rootmeta._get(signed, "version", int, what=where)
    if version < 1:
        raise FormatError(f"{where}: version must be at least 1, found {version}")
    expires = rootmeta.parse_expires(rootmeta._get(signed, "expires", str, what=where),
                                     where + " expires")
    return {"kind": kind, "version": version, "expires": expires,
            "signed": MappingProxyType(signed), "signatures": sigs,
            "signed_bytes": canonjson.encode(signed), "data": data}


def _hashes(obj: Any, what: str) -> Mapping[str, str]:
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise FormatError(f"{what}: hashes must be a non-empty object of strings")
    return MappingProxyType(dict(obj))


def _metafile(obj: Any, what: str) -> MetaFile:
    if not isinstance(obj, dict):
        raise FormatError(f"{what} must be an object")
    version = rootmeta._get(obj, "version", int, what=what)
    length = rootmeta._get(obj, "length", int, what=what) if "length" in obj else None
    if version < 1 or (length is not None and length < 0):
        raise FormatError(f"{what}: version must be >= 1 and length >= 0")
    hashes = _hashes(obj["hashes"], what) if "hashes" in obj else None
    return MetaFile(version, length, hashes)


def parse_timestamp(data: bytes, *, what: str = "timestamp.json") -> Timestamp:
    common = _common(data, "timestamp", what)
    meta = rootmeta._get(dict(common["signed"]), "meta", dict, what=what + " signed")
    if set(meta) != {"snapshot.json"}:
        raise FormatError(f"{what}: meta must list exactly snapshot.json")
    return Timestamp(snapshot=_metafile(meta["snapshot.json"], what + " meta snapshot.json"),
                     **common)


def parse_snapshot(data: bytes, *, what: str = "snapshot.json") -> Snapshot:
    common = _common(data, "snapshot", what)
    meta = rootmeta._get(dict(common["signed"]), "meta", dict, what=what + " signed")
    files = {name: _metafile(obj, f"{what} meta {name}") for name, obj in meta.items()}
    return Snapshot(meta=MappingProxyType(files), **common)


def _target(path: str, obj: Any, what: str) -> TargetFile:
    where = f"{what} target {path}"
    if not isinstance(obj, dict):
        raise FormatError(f"{where} must be an object")
    length = rootmeta._get(obj, "length", int, what=where)
    if length < 0:
        raise FormatError(f"{where}: length must be >= 0")
    custom = obj.get("custom", {})
    if not isinstance(custom, dict):
        raise FormatError(f"{where}: custom must be an object")
    return TargetFile(path, length, _hashes(obj.get("hashes"), where),
                      MappingProxyType(custom))


def _delegated_role(obj: Any, what: str) -> DelegatedRole:
    base = rootmeta._parse_role(obj, what)
    name = rootmeta._get(obj, "name", str, what=what)
    terminating = obj.get("terminating", False)
    if not isinstance(terminating, bool):
        raise FormatError(f"{what}: terminating must be a boolean")
    paths, prefixes = obj.get("paths"), obj.get("path_hash_prefixes")
    if (paths is None) == (prefixes is None):
        raise FormatError(f"{what}: exactly one of paths and path_hash_prefixes is needed")
    for value, label in ((paths, "paths"), (prefixes, "path_hash_prefixes")):
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(p, str) for p in value)):
            raise FormatError(f"{what}: {label} must be a list of strings")
    return DelegatedRole(name, base.keyids, base.threshold, terminating,
                         tuple(paths) if paths is not None else None,
                         tuple(prefixes) if prefixes is not None else None)


def _delegations(obj: Any, what: str) -> Delegations:
    if not isinstance(obj, dict):
        raise FormatError(f"{what} must be an object")
    if "succinct_roles" in obj:
        raise FormatError(f"{what}: succinct_roles (TAP 15) are not supported",
                          hint="delegate with roles and path_hash_prefixes instead")
    keys_obj = rootmeta._get(obj, "keys", dict, what=what)
    keys = {k: rootmeta._parse_key(k, v, f"{what} key {k}") for k, v in keys_obj.items()}
    roles = tuple(_delegated_role(r, f"{what} role {i}")
                  for i, r in enumerate(rootmeta._get(obj, "roles", list, what=what)))
    names = [r.name for r in roles]
    if len(set(names)) != len(names):
        raise FormatError(f"{what}: a role name is delegated twice")
    if any(n in rootmeta.TOP_LEVEL_ROLES for n in names):
        raise FormatError(f"{what}: a top-level role name cannot be delegated to")
    return Delegations(MappingProxyType(keys), roles)


def parse_targets(data: bytes, *, what: str = "targets.json") -> Targets:
    common = _common(data, "targets", what)
    signed = dict(common["signed"])
    targets_obj = rootmeta._get(signed, "targets", dict, what=what + " signed")
    targets = {p: _target(p, o, what) for p, o in targets_obj.items()}
    delegations = (_delegations(signed["delegations"], what + " delegations")
                   if "delegations" in signed else None)
    return Targets(targets=MappingProxyType(targets), delegations=delegations, **common)


# --- checks and names -------------------------------------------------------------------------

def check_length_and_hashes(data: bytes, *, length: Optional[int],
                            hashes: Optional[Mapping[str, str]], what: str) -> None:
    """Spec 5.5.2, 5.6.2, 5.7.3: the length, when given, and EVERY listed hash of a supported
    algorithm must match; hashes listing no supported algorithm are refused."""
    if length is not None and length != len(data):
        raise DigestMismatch(f"{what} is {len(data)} bytes, the signed metadata says {length}",
                             hint="the source holds damaged or altered files")
    if hashes is None:
        return
    known = [a for a in hashes if a in HASHES]
    if not known:
        raise DigestMismatch(f"{what}: no supported hash algorithm among "
                             f"{', '.join(sorted(hashes))} (sha256, sha512 are)",
                             hint="publish sha256 or sha512 hashes")
    for algo in known:
        if HASHES[algo](data).hexdigest() != hashes[algo]:
            raise DigestMismatch(f"{what} does not match the {algo} the signed metadata gives",
                                 hint="the source holds damaged or altered files")


def role_file(role: str, version: Optional[int]) -> str:
    """The file name of a role's metadata on a repository: ``[V.]<quoted role>.json``."""
    quoted = urllib.parse.quote(role, safe="")
    return f"{version}.{quoted}.json" if version is not None else f"{quoted}.json"


def target_file(target: TargetFile, *, consistent: bool) -> Optional[str]:
    """The path of a target on a repository (URL-quoted), hash-prefixed under consistent
    snapshots with the first supported hash listed; None if none is supported."""
    head, _, base = target.path.rpartition("/")
    if consistent:
        algo = next((a for a in target.hashes if a in HASHES), None)
        if algo is None:
            return None
        base = f"{target.hashes[algo]}.{base}"
    path = f"{head}/{base}" if head else base
    return urllib.parse.quote(path, safe="/")
