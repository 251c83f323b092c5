"""The device's TUF client for the ring repository: pure, bytes in, explicit ``now``, no I/O.

The TUF client workflow (spec 5.3-5.6), for one ring:

1. root: fetch ``N+1.root.json``, ``N+2`` ... until absent; each step checked by
   ``rootmeta.advance_root`` (threshold of the old and of the new root keys); the final root
   must be unexpired.
2. timestamp: signed by the root's timestamp role; its version and the snapshot version it
   names never go down (rollback); an equal version keeps the trusted one; unexpired.
3. snapshot: the version (and length/hashes, when given) the timestamp names; signed by the
   snapshot role; no role listed by the trusted snapshot is dropped or goes down; unexpired.
4. targets: the version the snapshot names; signed by the targets role; unexpired. Its
   delegations name the ring's keys and threshold.
5. the ring: the version the snapshot names (mix-and-match is refused: every document must be
   exactly the version the one above it names); signed by a threshold of the ring's keys
   (a key of another ring counts for nothing); unexpired. Only entries whose path the
   delegation covers are used.

Time: expiry is checked at ``max(now, ratchet)``; the ratchet is the newest ``x-airgap-issued``
of verified metadata, ignoring any dated more than a day after that time (a build host with a
wrong clock must not lock devices out). A clock reset to 1970 thus cannot revive stale metadata,
and a clock years ahead shows an "expired" error naming both times. An expired timestamp,
snapshot, targets or ring document passes only when ``metadata/override.json`` (root-signed,
unexpired, naming that document's exact bytes: ``tufoverride``) extends it (THREATS 17).

Signature counting, key parsing, the root chain and canonical JSON are ``trust``'s and
``canonjson``'s; nothing is re-implemented here.
"""

import fnmatch
import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from installer.errors import (
    ConfigError,
    DigestMismatch,
    FormatError,
    SignatureError,
    TransferError,
)
from installer.format import canonjson
from installer.trust import rootmeta, tufoverride

Fetch = Callable[[str], Optional[bytes]]  # metadata file name -> bytes, None when absent

ISSUED = "x-airgap-issued"
YANKED = "x-airgap-yanked"
MAX_ROOT_STEPS = 256
FUTURE_SLACK = 86400
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


class RollbackError(SignatureError):
    """Metadata older than what this device has already seen (THREATS 15)."""


class MixAndMatchError(SignatureError):
    """Documents from different publications combined (THREATS 16)."""


class ExpiredError(SignatureError):
    """Expired metadata, or a host clock far ahead of it (THREATS 17, 18)."""


@dataclass(frozen=True)
class Meta:
    """A parsed metadata document (not yet, or already, verified: see ``_verified``)."""

    kind: str
    version: int
    expires: int
    signed: Mapping[str, Any] = field(repr=False)
    signatures: Tuple[rootmeta.Signature, ...] = field(repr=False)
    data: bytes = field(repr=False)

    @property
    def issued(self) -> Optional[int]:
        value = self.signed.get(ISSUED)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Trusted:
    """What the device verified last time (bytes as fetched), plus its time ratchet."""

    root: bytes
    timestamp: Optional[bytes] = None
    snapshot: Optional[bytes] = None
    targets: Optional[bytes] = None
    ring: Optional[bytes] = None
    ratchet: int = 0


@dataclass(frozen=True)
class Entry:
    """One bundle a ring lists."""

    path: str
    length: int
    hashes: Mapping[str, str]
    custom: Mapping[str, Any]

    @property
    def sha256(self) -> str:
        return self.hashes.get("sha256", "")


@dataclass(frozen=True)
class Refreshed:
    trusted: Trusted                  # to persist: every document verified in this run
    root: rootmeta.Root
    root_bytes: Optional[bytes]       # the newest root, when newer than the trusted one
    ring: str
    entries: Tuple[Entry, ...]
    yanked: Tuple[Mapping[str, Any], ...]
    versions: Dict[str, Dict[str, int]]   # role -> {"version", "expires"}
    now: int                          # the time expiry was checked at
    override: Optional[Mapping[str, Any]] = None   # when expired documents passed under one


def parse_meta(data: bytes, kind: str, *, what: str) -> Meta:
    """Parse a TUF metadata envelope strictly (``trust``'s rules); no signature check."""
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
    return Meta(kind, version, expires, MappingProxyType(signed), sigs, data)


def _signed_bytes(meta: Meta) -> bytes:
    return canonjson.encode(dict(meta.signed))


def _meta_file(meta: Meta, name: str, what: str) -> Dict[str, Any]:
    files = rootmeta._get(dict(meta.signed), "meta", dict, what=what)
    entry = files.get(name)
    if not isinstance(entry, dict):
        raise MixAndMatchError(f"{what} lists no {name}",
                               hint="the repository is incomplete; run `bundle repo refresh`")
    version = rootmeta._get(entry, "version", int, what=f"{what} meta {name}")
    if version < 1:
        raise FormatError(f"{what} meta {name}: version must be at least 1")
    return entry


def _check_file(entry: Mapping[str, Any], data: bytes, what: str) -> None:
    """Length and hashes a signed document gives for ``data``, when it gives them."""
    length = entry.get("length")
    if length is not None and length != len(data):
        raise DigestMismatch(f"{what} is {len(data)} bytes, the signed metadata says {length}")
    hashes = entry.get("hashes")
    if hashes is None:
        return
    if not isinstance(hashes, dict) or not hashes:
        raise FormatError(f"hashes for {what} must be a non-empty object")
    for algo, value in hashes.items():
        if algo not in _HASHES:
            raise FormatError(f"hashes for {what}: unsupported algorithm {algo!r}")
        if _HASHES[algo](data).hexdigest() != value:
            raise DigestMismatch(f"{what} does not match the {algo} the signed metadata gives",
                                 hint="the medium holds damaged or altered metadata")


def _require_version(meta: Meta, expected: int, what: str) -> None:
    if meta.version != expected:
        raise MixAndMatchError(
            f"{what} is version {meta.version}, but the metadata above it names version "
            f"{expected}", hint="the medium mixes files of different publications; copy the "
                                "repository again as a whole")


class _Freshness:
    """Expiry at the clock's time; an expired document passes only when a valid, unexpired,
    root-signed override (``tufoverride``) names its exact bytes (THREATS 17)."""

    def __init__(self, fetch: Fetch, root: rootmeta.Root, now: int) -> None:
        self._fetch, self._root, self.now = fetch, root, now
        self._loaded = False
        self._override: Optional[tufoverride.Override] = None
        self._why = ""
        self.used: List[str] = []

    def check(self, meta: Meta, *, role: str, what: str) -> None:
        if self.now < meta.expires:
            return
        if not self._loaded:
            self._override, self._why = tufoverride.usable(
                self._fetch(tufoverride.FILE), self._root, self.now)
            self._loaded = True
        sha = hashlib.sha256(meta.data).hexdigest()
        if self._override is not None and self._override.covers(
                role=role, version=meta.version, sha256=sha):
            self.used.append(role)
            return
        raise ExpiredError(
            f"{what} v{meta.version} expired at {rootmeta._iso(meta.expires)} (now is "
            f"{rootmeta._iso(self.now)}){self._why}",
            hint="bring freshly refreshed metadata (`bundle repo refresh`), a root-signed "
                 "override (`bundle repo extend`), or check this host's clock")

    def summary(self) -> Optional[Mapping[str, Any]]:
        if not self.used or self._override is None:
            return None
        return tufoverride.summary(self._override, tuple(self.used))


def _delegation(targets: Meta, ring: str) -> Tuple[rootmeta.Root, Tuple[str, ...]]:
    """The ring's keys and threshold, as a role of a ``rootmeta.Root``-shaped key set, and the
    path patterns the delegation covers."""
    what = f"targets v{targets.version} delegations"
    d = targets.signed.get("delegations")
    if not isinstance(d, dict):
        raise ConfigError(f"targets v{targets.version} delegates to no rings",
                          hint="the repository was not made with `bundle repo init`")
    keys_obj = rootmeta._get(d, "keys", dict, what=what)
    roles = rootmeta._get(d, "roles", list, what=what)
    found = [r for r in roles if isinstance(r, dict) and r.get("name") == ring]
    if not found:
        names = ", ".join(str(r.get("name")) for r in roles if isinstance(r, dict))
        raise ConfigError(f"the repository has no ring {ring!r} (its rings: {names or 'none'})",
                          hint="set this device's ring with `airgap-install config ring NAME`")
    if len(found) > 1:
        raise FormatError(f"{what} name ring {ring!r} twice")
    role = rootmeta._parse_role(found[0], f"{what} role {ring}")
    paths = found[0].get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise FormatError(f"{what} role {ring}: paths must be a list of strings")
    keys = {k: rootmeta._parse_key(k, keys_obj[k], f"{what} key {k}")
            for k in role.keyids if k in keys_obj}
    holder = rootmeta.Root(version=targets.version, expires=targets.expires,
                        keys=MappingProxyType(keys), roles=MappingProxyType({ring: role}),
                        signed=MappingProxyType({}), signatures=(), signed_bytes=b"")
    return holder, tuple(paths)


def _covered(path: str, patterns: Tuple[str, ...]) -> bool:
    parts = path.split("/")
    for pattern in patterns:
        pp = pattern.split("/")
        if len(pp) == len(parts) and all(
                fnmatch.fnmatchcase(parts[i], pp[i]) for i in range(len(pp))):
            return True
    return False


def _entries(ring_meta: Meta, patterns: Tuple[str, ...], what: str) -> Tuple[Entry, ...]:
    targets = rootmeta._get(dict(ring_meta.signed), "targets", dict, what=what)
    out: List[Entry] = []
    for path, obj in sorted(targets.items()):
        where = f"{what} target {path}"
        if not isinstance(obj, dict):
            raise FormatError(f"{where} must be an object")
        length = rootmeta._get(obj, "length", int, what=where)
        hashes = rootmeta._get(obj, "hashes", dict, what=where)
        if length < 0 or not hashes or not all(isinstance(v, str) for v in hashes.values()):
            raise FormatError(f"{where}: needs a length >= 0 and hashes")
        custom = obj.get("custom", {})
        if not isinstance(custom, dict):
            raise FormatError(f"{where}: custom must be an object")
        if _covered(path, patterns):
            out.append(Entry(path, length, MappingProxyType(dict(hashes)),
                             MappingProxyType(custom)))
    return tuple(out)


def _fetch(fetch: Fetch, name: str) -> bytes:
    data = fetch(name)
    if data is None:
        raise TransferError(f"metadata/{name} is missing on the source",
                            hint="copy the whole repository folder (`bundle repo` output)")
    return data


class _Clock:
    def __init__(self, now: int, ratchet: int) -> None:
        self.ratchet = ratchet
        self.now = max(now, ratchet)

    def saw(self, meta: Meta) -> None:
        issued = meta.issued
        if issued is not None and self.ratchet < issued <= self.now + FUTURE_SLACK:
            self.ratchet = issued


def refresh(trusted: Trusted, fetch: Fetch, *, ring: str, now: int) -> Refreshed:
    """Run the TUF client workflow for ``ring`` from ``trusted`` over ``fetch``."""
    clock = _Clock(now, trusted.ratchet)
    # 1. root
    current = rootmeta.load_trusted_root(trusted.root)
    chain: List[bytes] = []
    for version in range(current.version + 1, current.version + 1 + MAX_ROOT_STEPS):
        data = fetch(f"{version}.root.json")
        if data is None:
            break
        chain.append(data)
    root = rootmeta.advance_root(trusted.root, chain, clock.now)
    root_bytes = chain[-1] if chain and root.version > current.version else None
    fresh = _Freshness(fetch, root, clock.now)

    # 2. timestamp
    new_ts = parse_meta(_fetch(fetch, "timestamp.json"), "timestamp", what="timestamp.json")
    rootmeta.verify_threshold(root, "timestamp", _signed_bytes(new_ts),
                              signatures=new_ts.signatures,
                              what=f"timestamp v{new_ts.version}")
    ts = new_ts
    if trusted.timestamp is not None:
        old = parse_meta(trusted.timestamp, "timestamp", what="trusted timestamp")
        if new_ts.version < old.version:
            raise RollbackError(f"timestamp v{new_ts.version} is older than v{old.version} "
                                "already seen here",
                                hint="this medium holds old metadata; bring a fresh copy")
        old_snap = _meta_file(old, "snapshot.json", "trusted timestamp")["version"]
        new_snap = _meta_file(new_ts, "snapshot.json", "timestamp")["version"]
        if new_ts.version > old.version and new_snap < old_snap:
            raise RollbackError(f"timestamp v{new_ts.version} names snapshot v{new_snap}, "
                                f"older than v{old_snap} already seen here")
        if new_ts.version == old.version:
            ts = old
    fresh.check(ts, role="timestamp", what="timestamp")
    clock.saw(ts)

    # 3. snapshot
    snap_file = _meta_file(ts, "snapshot.json", "timestamp")
    snap_name = f"{snap_file['version']}.snapshot.json"
    snap_data = _fetch(fetch, snap_name)
    _check_file(snap_file, snap_data, snap_name)
    snap = parse_meta(snap_data, "snapshot", what=snap_name)
    rootmeta.verify_threshold(root, "snapshot", _signed_bytes(snap), signatures=snap.signatures,
                           what=f"snapshot v{snap.version}")
    _require_version(snap, snap_file["version"], "snapshot")
    if trusted.snapshot is not None:
        old = parse_meta(trusted.snapshot, "snapshot", what="trusted snapshot")
        if snap.version < old.version:
            raise RollbackError(f"snapshot v{snap.version} is older than v{old.version} "
                                "already seen here")
        new_files = rootmeta._get(dict(snap.signed), "meta", dict, what=snap_name)
        old_files = rootmeta._get(dict(old.signed), "meta", dict, what="trusted snapshot")
        for name, entry in old_files.items():
            newer = new_files.get(name)
            if not isinstance(newer, dict) or not isinstance(entry, dict):
                raise RollbackError(f"snapshot v{snap.version} drops {name}, listed before")
            if rootmeta._get(newer, "version", int, what=snap_name) < entry.get("version", 0):
                raise RollbackError(
                    f"snapshot v{snap.version} lists {name} v{newer['version']}, older than "
                    f"v{entry['version']} already seen here")
    fresh.check(snap, role="snapshot", what="snapshot")
    clock.saw(snap)

    # 4. targets, 5. the ring
    metas = {}
    delegator: Optional[Meta] = None
    for role in ("targets", ring):
        file = _meta_file(snap, f"{role}.json", f"snapshot v{snap.version}")
        name = f"{file['version']}.{role}.json"
        data = _fetch(fetch, name)
        _check_file(file, data, name)
        meta = parse_meta(data, "targets", what=name)
        if delegator is None:
            rootmeta.verify_threshold(root, "targets", _signed_bytes(meta),
                                      signatures=meta.signatures,
                                      what=f"targets v{meta.version}")
        else:
            holder, patterns = _delegation(delegator, ring)
            found = rootmeta.count_valid(holder, ring, _signed_bytes(meta),
                                         signatures=meta.signatures)
            need = holder.roles[ring].threshold
            if found < need:
                raise SignatureError(
                    f"ring {ring} v{meta.version} needs {need} valid signature(s) from its "
                    f"own keys (delegated by targets v{delegator.version}), found {found}",
                    hint="sign the ring with its keys; a key of another ring does not count")
        _require_version(meta, file["version"], role)
        fresh.check(meta, role=role, what="targets" if delegator is None else f"ring {ring}")
        clock.saw(meta)
        metas[role] = meta
        delegator = meta
    _, patterns = _delegation(metas["targets"], ring)
    ring_meta = metas[ring]
    entries = _entries(ring_meta, patterns, f"ring {ring} v{ring_meta.version}")
    yanked = ring_meta.signed.get(YANKED, [])
    if not isinstance(yanked, list) or not all(
            isinstance(y, dict) and isinstance(y.get("name"), str)
            and isinstance(y.get("version"), str) for y in yanked):
        raise FormatError(f"ring {ring} v{ring_meta.version}: {YANKED} must list "
                          "{name, version} objects")
    versions = {"root": {"version": root.version, "expires": root.expires}}
    for role_name, meta in (("timestamp", ts), ("snapshot", snap), ("targets", metas["targets"]),
                            (ring, ring_meta)):
        versions[role_name] = {"version": meta.version, "expires": meta.expires}
    new_trusted = Trusted(root=root_bytes or trusted.root, timestamp=ts.data, snapshot=snap.data,
                          targets=metas["targets"].data, ring=ring_meta.data,
                          ratchet=clock.ratchet)
    return Refreshed(new_trusted, root, root_bytes, ring, entries,
                     tuple(MappingProxyType(dict(y)) for y in yanked), versions, clock.now,
                     fresh.summary())

