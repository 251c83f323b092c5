"""The TUF client workflow over a trusted set (``tufcore``), a metadata fetcher and a store.

The caller does the I/O through two small interfaces: ``fetch(name)`` returns the bytes of a
repository metadata file (``2.root.json``, ``timestamp.json``, ``7.snapshot.json``,
``3.%3F.json``) or None when the repository has no such file, and raises for any other
failure; a ``Store`` loads, saves and removes the device's trusted copy of a role by role
name (the caller maps names to files). Each document is saved as soon as it is verified
(spec 5.3.8, 5.4.5, 5.5.7, 5.6.6), so a refresh that fails part-way keeps what it verified.

``refresh`` runs spec 5.3-5.6 for the top-level roles (stored copies are used when they are
still valid as final, as python-tuf does, so an unchanged repository costs one root probe
and the timestamp); ``find_target`` walks the delegation tree in pre-order depth-first
order (spec 5.6.7), fetching each role lazily, at most ``MAX_DELEGATIONS`` roles, honouring
``terminating`` and each delegation's paths; ``delegated`` loads one role by name (the ring
layer). ``MAX_DELEGATIONS`` is python-tuf's; ``MAX_ROOT_ROTATIONS`` new roots per refresh
(python-tuf allows 256) is lower: a longer root chain goes on at the next refresh.
"""

from typing import Callable, Dict, List, Optional, Protocol, Set, Tuple

from installer.errors import DigestMismatch, InstallerError, TransferError
from installer.trust import tufmeta
from installer.trust.tufcore import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    EqualVersion,
    Expiry,
    MixAndMatchError,
    TrustedSet,
)

MAX_ROOT_ROTATIONS = 32
MAX_DELEGATIONS = 32

Fetch = Callable[[str], Optional[bytes]]


class Store(Protocol):
    def load(self, role: str) -> Optional[bytes]: ...

    def save(self, role: str, data: bytes) -> None: ...

    def remove(self, role: str) -> None: ...


def _fetch(fetch: Fetch, name: str) -> bytes:
    data = fetch(name)
    if data is None:
        raise TransferError(f"metadata/{name} is missing on the source",
                            hint="copy or serve the whole repository (its metadata/ folder)")
    return data


class Updater:
    def __init__(self, root: bytes, fetch: Fetch, store: Store, *, now: int,
                 expiry: Optional[Expiry] = None,
                 max_root_rotations: int = MAX_ROOT_ROTATIONS,
                 max_delegations: int = MAX_DELEGATIONS) -> None:
        self.trusted = TrustedSet(root, now=now, expiry=expiry)
        self._fetch, self._store = fetch, store
        self._max_roots, self._max_delegations = max_root_rotations, max_delegations
        self._loaded_by: Dict[str, str] = {}

    @property
    def consistent(self) -> bool:
        return self.trusted.root.signed.get("consistent_snapshot") is True

    def refresh(self) -> None:
        self._load_root()
        self._load_timestamp()
        self._load_snapshot()
        self._load_targets(TARGETS, ROOT)

    # --- top-level roles --------------------------------------------------------------------
    def _load_root(self) -> None:
        first = self.trusted.root.version
        try:
            for version in range(first + 1, first + 1 + self._max_roots):
                data = self._fetch(tufmeta.role_file(ROOT, version))
                if data is None:
                    break
                self.trusted.update_root(data)
                self._store.save(ROOT, data)
        finally:
            if self.trusted.rotated():      # 5.3.11 fast-forward attack recovery
                self._store.remove(TIMESTAMP)
                self._store.remove(SNAPSHOT)
        self.trusted.check_root()

    def _load_timestamp(self) -> None:
        stored = self._store.load(TIMESTAMP)
        if stored is not None:
            try:
                self.trusted.update_timestamp(stored)
            except InstallerError:
                pass    # not valid as final; if it verified, it still guards rollback
        data = _fetch(self._fetch, tufmeta.role_file(TIMESTAMP, None))
        try:
            self.trusted.update_timestamp(data)
        except EqualVersion:
            return
        self._store.save(TIMESTAMP, data)

    def _load_snapshot(self) -> None:
        stored = self._store.load(SNAPSHOT)
        if stored is not None:
            try:
                self.trusted.update_snapshot(stored, stored=True)
                return
            except InstallerError:
                pass
        assert self.trusted.timestamp is not None
        version = self.trusted.timestamp.snapshot.version
        data = _fetch(self._fetch, tufmeta.role_file(SNAPSHOT,
                                                     version if self.consistent else None))
        self.trusted.update_snapshot(data)
        self._store.save(SNAPSHOT, data)

    # --- targets and delegated targets -------------------------------------------------------
    def _load_targets(self, role: str, delegator: str) -> tufmeta.Targets:
        loaded = self.trusted.targets.get(role)
        if loaded is not None:
            if self._loaded_by.get(role) != delegator:
                # reached through another delegator: its keys must accept it too
                self.trusted.verify_delegate(loaded, role, delegator)
            return loaded
        stored = self._store.load(role)
        if stored is not None:
            try:
                found = self.trusted.update_delegated_targets(stored, role, delegator)
                self._loaded_by[role] = delegator
                return found
            except InstallerError:
                pass
        snapshot = self.trusted.snapshot
        assert snapshot is not None
        info = snapshot.meta.get(f"{role}.json")
        if info is None:
            raise MixAndMatchError(f"{role} is delegated but snapshot v{snapshot.version} "
                                   "does not list it",
                                   hint="the repository must list every role in its snapshot")
        data = _fetch(self._fetch,
                      tufmeta.role_file(role, info.version if self.consistent else None))
        found = self.trusted.update_delegated_targets(data, role, delegator)
        self._loaded_by[role] = delegator
        self._store.save(role, data)
        return found

    def delegated(self, role: str, delegator: str = TARGETS) -> tufmeta.Targets:
        """Load one delegated role by name (its delegator must be loaded)."""
        return self._load_targets(role, delegator)

    def find_target(self, path: str) -> Optional[Tuple[tufmeta.TargetFile, str]]:
        """Spec 5.6.7: the target ``path`` and the role that lists it, searching delegations in
        pre-order depth-first order; None when no trusted role lists it."""
        to_visit: List[Tuple[str, str]] = [(TARGETS, ROOT)]
        visited: Set[str] = set()
        while to_visit and len(visited) <= self._max_delegations:
            role, delegator = to_visit.pop()
            if role in visited:
                continue
            targets = self._load_targets(role, delegator)
            found = targets.targets.get(path)
            if found is not None:
                return found, role
            visited.add(role)
            if targets.delegations is None:
                continue
            children: List[Tuple[str, str]] = []
            for child in targets.delegations.roles:
                if child.covers(path):
                    children.append((child.name, role))
                    if child.terminating:
                        to_visit.clear()
                        break
            to_visit.extend(reversed(children))
        return None

    def target_file(self, target: tufmeta.TargetFile) -> str:
        """Where ``target`` is on the repository, relative to its targets base (quoted)."""
        name = tufmeta.target_file(target, consistent=self.consistent)
        if name is None:
            raise DigestMismatch(f"target {target.path}: no supported hash algorithm among "
                                 f"{', '.join(sorted(target.hashes))} (sha256, sha512 are)",
                                 hint="publish sha256 or sha512 hashes")
        return name


def verify_target(target: tufmeta.TargetFile, data: bytes) -> None:
    """Spec 5.7.3: the target's length and every supported hash it lists."""
    tufmeta.check_length_and_hashes(data, length=target.length, hashes=target.hashes,
                                    what=f"target {target.path}")
