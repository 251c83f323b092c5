"""The ring repository as a use of the device's TUF client (``tufupdater``). Pure: bytes
in (through ``fetch``), explicit ``now``, no I/O of its own.

For one ring: ``tufupdater.Updater.refresh`` runs the TUF client workflow for the top-level
roles (root chain, timestamp, snapshot, targets: every rule is ``tufcore``'s), then the ring,
a role the top-level targets delegates to by name with its own keys and threshold, is loaded
through the same trusted set (a key of another ring counts for nothing). Only entries whose
path the ring's delegation covers are used. Every verified document is handed to
``persist`` as soon as it is verified (spec 5.3.8, 5.4.5, 5.5.7), so a refresh that fails
part-way keeps what it verified; ``Refreshed.trusted`` holds them all after a success.

Time: expiry is checked at ``max(now, ratchet)``. The ratchet is the newest
``x-airgap-issued`` of verified metadata, but only dates up to the DEVICE CLOCK + 24 h move
it (THREATS 48): metadata dated later is used but ignored for time, so no online key can
move the device's notion of time past its own clock + 24 h, however many refreshes it
signs, and a root rotation always recovers a device whose clock is right. A clock reset to
1970 cannot revive stale metadata (the saved ratchet still counts), and the ratchet does not
move while the clock is wrong; a clock years ahead shows an "expired" error naming both
times. An expired timestamp, snapshot, targets or ring document passes only when
``metadata/override.json`` (root-signed, unexpired, naming that document's exact bytes:
``tufoverride``) extends it (THREATS 17). Root expiry is never extended.
"""

import hashlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from installer.errors import ConfigError, FormatError, SignatureError
from installer.trust import rootmeta, tufmeta, tufoverride, tufupdater
from installer.trust.tufcore import ExpiredError as ExpiredError  # re-exported: ring errors
from installer.trust.tufcore import MixAndMatchError as MixAndMatchError
from installer.trust.tufcore import RollbackError as RollbackError

Fetch = Callable[[str], Optional[bytes]]  # metadata file name -> bytes, None when absent
Persist = Callable[[str, Optional[bytes]], None]  # role -> verified bytes, None: delete

ISSUED = tufmeta.ISSUED
YANKED = "x-airgap-yanked"
FUTURE_SLACK = tufoverride.FUTURE_SLACK


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


class _Freshness:
    """Expiry at the clock's time; an expired document passes only when a valid, unexpired,
    root-signed override (``tufoverride``) names its exact bytes (THREATS 17)."""

    def __init__(self, fetch: Fetch, ring: str, clock: "_Clock") -> None:
        self._fetch, self._ring, self.now, self._clock = fetch, ring, clock.now, clock.clock
        self._loaded = False
        self._override: Optional[tufoverride.Override] = None
        self._why = ""
        self.used: List[str] = []

    def check(self, meta: tufmeta.Signed, role: str, root: rootmeta.Root) -> None:
        if self.now < meta.expires:
            return
        if not self._loaded:
            self._override, self._why = tufoverride.usable(
                self._fetch(tufoverride.FILE), root, self.now, clock=self._clock)
            self._loaded = True
        sha = hashlib.sha256(meta.data).hexdigest()
        if self._override is not None and self._override.covers(
                role=role, version=meta.version, sha256=sha):
            if role not in self.used:
                self.used.append(role)
            return
        what = f"ring {role}" if role == self._ring else role
        raise ExpiredError(
            f"{what} v{meta.version} expired at {rootmeta._iso(meta.expires)} (now is "
            f"{rootmeta._iso(self.now)}){self._why}",
            hint="bring freshly refreshed metadata (`bundle repo refresh`), a root-signed "
                 "override (`bundle repo extend`), or check this host's clock")

    def summary(self) -> Optional[Mapping[str, Any]]:
        if not self.used or self._override is None:
            return None
        return tufoverride.summary(self._override, tuple(self.used))


class _Clock:
    """The time ratchet (THREATS 18, 48): moves to an ``x-airgap-issued`` date only when
    that date is at most the device clock + 24 h."""

    def __init__(self, now: int, ratchet: int) -> None:
        self.clock = now
        self.ratchet = ratchet
        self.now = max(now, ratchet)

    def saw(self, meta: tufmeta.Signed) -> None:
        issued = meta.issued
        if issued is not None and self.ratchet < issued <= self.clock + FUTURE_SLACK:
            self.ratchet = issued


class _Store:
    """The device's trusted documents in memory, each verified one also handed to
    ``persist``; the ring is stored under its own role name."""

    def __init__(self, trusted: Trusted, ring: str, persist: Optional[Persist]) -> None:
        self.docs: Dict[str, Optional[bytes]] = {
            "timestamp": trusted.timestamp, "snapshot": trusted.snapshot,
            "targets": trusted.targets, ring: trusted.ring}
        self.root: Optional[bytes] = None
        self._persist = persist

    def load(self, role: str) -> Optional[bytes]:
        return self.docs.get(role)

    def save(self, role: str, data: bytes) -> None:
        if role == "root":
            self.root = data
        else:
            self.docs[role] = data
        if self._persist is not None:
            self._persist(role, data)

    def remove(self, role: str) -> None:
        self.docs[role] = None
        if self._persist is not None:
            self._persist(role, None)


def _ring_role(targets: tufmeta.Targets, ring: str) -> tufmeta.DelegatedRole:
    d = targets.delegations
    if d is None:
        raise ConfigError(f"targets v{targets.version} delegates to no rings",
                          hint="the repository was not made with `bundle repo init`")
    role = d.role(ring)
    if role is None:
        names = ", ".join(r.name for r in d.roles)
        raise ConfigError(f"the repository has no ring {ring!r} (its rings: {names or 'none'})",
                          hint="set this device's ring with `airgap-install config ring NAME`")
    return role


def _entries(ring_meta: tufmeta.Targets, role: tufmeta.DelegatedRole) -> Tuple[Entry, ...]:
    return tuple(Entry(t.path, t.length, t.hashes, t.custom)
                 for path, t in sorted(ring_meta.targets.items()) if role.covers(path))


def _yanked(ring_meta: tufmeta.Targets, ring: str) -> Tuple[Mapping[str, Any], ...]:
    yanked = ring_meta.signed.get(YANKED, [])
    if not isinstance(yanked, list) or not all(
            isinstance(y, dict) and isinstance(y.get("name"), str)
            and isinstance(y.get("version"), str) for y in yanked):
        raise FormatError(f"ring {ring} v{ring_meta.version}: {YANKED} must list "
                          "{name, version} objects")
    return tuple(MappingProxyType(dict(y)) for y in yanked)


def refresh(trusted: Trusted, fetch: Fetch, *, ring: str, now: int,
            persist: Optional[Persist] = None) -> Refreshed:
    """Run the TUF client workflow for ``ring`` from ``trusted`` over ``fetch``."""
    clock = _Clock(now, trusted.ratchet)
    fresh = _Freshness(fetch, ring, clock)
    store = _Store(trusted, ring, persist)
    updater = tufupdater.Updater(trusted.root, fetch, store, now=clock.now, expiry=fresh.check)
    updater.refresh()
    ts, snap = updater.trusted.timestamp, updater.trusted.snapshot
    top = updater.trusted.targets["targets"]
    assert ts is not None and snap is not None
    role = _ring_role(top, ring)
    try:
        ring_meta = updater.delegated(ring)
    except SignatureError as e:
        if isinstance(e, (ExpiredError, RollbackError, MixAndMatchError)):
            raise
        raise SignatureError(f"ring {ring}: {e.message}", hint=e.hint) from None
    for meta in (ts, snap, top, ring_meta):
        clock.saw(meta)
    root = updater.trusted.root
    versions = {"root": {"version": root.version, "expires": root.expires}}
    for name, meta in (("timestamp", ts), ("snapshot", snap), ("targets", top),
                       (ring, ring_meta)):
        versions[name] = {"version": meta.version, "expires": meta.expires}
    new_trusted = Trusted(root=store.root or trusted.root, timestamp=ts.data,
                          snapshot=snap.data, targets=top.data, ring=ring_meta.data,
                          ratchet=clock.ratchet)
    return Refreshed(new_trusted, root, store.root, ring, _entries(ring_meta, role),
                     _yanked(ring_meta, ring), versions, clock.now, fresh.summary())
