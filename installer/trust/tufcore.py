"""The TUF client's trusted metadata set: one function per role, bytes in, explicit ``now``,
no I/O (the updater shell, ``tufupdater``, fetches and persists). The TUF specification's
client workflow (1.0.x, section 5) is the reference, and python-tuf's
``ngclient/_internal/trusted_metadata_set.py`` the model for the order of checks:
https://github.com/theupdateframework/python-tuf/blob/develop/tuf/ngclient/_internal/trusted_metadata_set.py

- ``update_root`` (5.3.4-5.3.7): version trusted+1 exactly, signed by a threshold of the
  trusted root's root keys and of its own; intermediate roots may be expired.
- ``update_timestamp`` (5.4): the final root must be unexpired (5.3.10); signed by the root's
  timestamp role; its version and its snapshot version never go down (an equal version keeps
  the trusted one: ``EqualVersion``); it becomes trusted, then must be unexpired (an expired
  one still guards against rollback of the next one).
- ``update_snapshot`` (5.5): length and hashes as the timestamp gives them (not for the
  device's own stored copy); signed by the snapshot role; no file the trusted snapshot lists
  is dropped or goes down; trusted, then it must be unexpired and exactly the version the
  timestamp names.
- ``update_delegated_targets`` (5.6, and 5.6.7.2 for delegations): length and hashes as the
  snapshot gives them; signed by a threshold of the keys the delegator names for the role;
  exactly the version the snapshot names; unexpired.

Expiry goes through ``Expiry`` (the default refuses); the ring layer passes one that lets a
root-signed override extend named expired documents (``tufoverride``), never root.

Fast-forward attack recovery (5.3.11): ``rotated`` tells the shell which of timestamp and
snapshot had their keys changed by the root update, so it deletes both stored documents; a
stored document that no longer verifies under the new root is not trusted either.
"""

from typing import Callable, Dict, FrozenSet, Mapping, Optional, Sequence, Tuple

from installer.errors import FormatError, SignatureError
from installer.trust import rootmeta, tufmeta

ROOT, TIMESTAMP, SNAPSHOT, TARGETS = "root", "timestamp", "snapshot", "targets"


class RollbackError(SignatureError):
    """Metadata older than what this device has already seen (THREATS 15)."""


class MixAndMatchError(SignatureError):
    """Documents from different publications combined (THREATS 16)."""


class ExpiredError(SignatureError):
    """Expired metadata, or a host clock far ahead of it (THREATS 17, 18)."""


class EqualVersion(Exception):
    """The new timestamp is the version already trusted: keep the trusted one (not an error)."""


Expiry = Callable[[tufmeta.Signed, str, rootmeta.Root], None]


def refuse_expired(now: int) -> Expiry:
    """The plain rule: a document is valid strictly before its ``expires``."""
    def check(meta: tufmeta.Signed, role: str, root: rootmeta.Root) -> None:
        if now >= meta.expires:
            raise ExpiredError(
                f"{role} v{meta.version} expired at {rootmeta._iso(meta.expires)} (now is "
                f"{rootmeta._iso(now)})",
                hint="the repository must re-sign it, or check this host's clock")
    return check


def _verify(keys: Mapping[str, rootmeta.Key], keyids: Sequence[str], threshold: int, *,
            meta: tufmeta.Signed, what: str, hint: str) -> None:
    found = rootmeta.count_valid_keys(keys, keyids, meta.signed_bytes,
                                      signatures=meta.signatures)
    if found < threshold:
        raise SignatureError(f"{what} needs {threshold} valid signature(s) from distinct keys, "
                             f"found {found}", hint=hint)


def _key_material(root: rootmeta.Root, role: str) -> FrozenSet[Tuple[str, Optional[bytes]]]:
    r = root.roles[role]
    return frozenset((k, root.keys[k].public if k in root.keys else None) for k in r.keyids)


class TrustedSet:
    """What the client trusts right now. Start from the stored root (checked against its own
    root keys), then call the ``update_*`` functions in workflow order."""

    def __init__(self, root_bytes: bytes, *, now: int, expiry: Optional[Expiry] = None) -> None:
        self.now = now
        self.expiry = expiry or refuse_expired(now)
        self.root = rootmeta.load_trusted_root(root_bytes)
        self.first_root = self.root
        self.timestamp: Optional[tufmeta.Timestamp] = None
        self.snapshot: Optional[tufmeta.Snapshot] = None
        self.targets: Dict[str, tufmeta.Targets] = {}

    # 5.3 root -------------------------------------------------------------------------
    def update_root(self, data: bytes) -> rootmeta.Root:
        if self.timestamp is not None:
            raise RuntimeError("root cannot be updated after timestamp")
        self.root = rootmeta.update_root(self.root, data)
        return self.root

    def rotated(self) -> bool:
        """5.3.11: did the root updates change the timestamp or snapshot keys?"""
        return any(_key_material(self.first_root, r) != _key_material(self.root, r)
                   for r in (TIMESTAMP, SNAPSHOT))

    def check_root(self) -> None:
        """5.3.10: the final root must be unexpired (never extended by an override)."""
        if self.now >= self.root.expires:
            raise ExpiredError(
                f"root v{self.root.version} expired at {rootmeta._iso(self.root.expires)} "
                f"(now is {rootmeta._iso(self.now)})",
                hint="the root keys must sign a new root; or check this host's clock")

    # 5.4 timestamp -----------------------------------------------------------------------
    def update_timestamp(self, data: bytes) -> tufmeta.Timestamp:
        if self.snapshot is not None:
            raise RuntimeError("timestamp cannot be updated after snapshot")
        self.check_root()
        new = tufmeta.parse_timestamp(data)
        r = self.root.roles[TIMESTAMP]
        _verify(self.root.keys, r.keyids, r.threshold, meta=new,
                what=f"timestamp v{new.version} (timestamp role of root v{self.root.version})",
                hint=f"sign with the timestamp keys listed in root v{self.root.version}")
        old = self.timestamp
        if old is not None:
            if new.version < old.version:
                raise RollbackError(f"timestamp v{new.version} is older than v{old.version} "
                                    "already seen here",
                                    hint="this source holds old metadata; bring a fresh copy")
            if new.version == old.version:
                raise EqualVersion()
            if new.snapshot.version < old.snapshot.version:
                raise RollbackError(f"timestamp v{new.version} names snapshot "
                                    f"v{new.snapshot.version}, older than "
                                    f"v{old.snapshot.version} already seen here")
        self.timestamp = new
        self.check_timestamp()
        return new

    def check_timestamp(self) -> None:
        if self.timestamp is None:
            raise RuntimeError("no timestamp")
        self.expiry(self.timestamp, TIMESTAMP, self.root)

    # 5.5 snapshot ------------------------------------------------------------------------
    def update_snapshot(self, data: bytes, *, stored: bool = False) -> tufmeta.Snapshot:
        if self.timestamp is None or self.targets:
            raise RuntimeError("snapshot is updated after timestamp and before targets")
        self.check_timestamp()
        meta = self.timestamp.snapshot
        if not stored:
            tufmeta.check_length_and_hashes(data, length=meta.length, hashes=meta.hashes,
                                            what=f"snapshot v{meta.version}")
        new = tufmeta.parse_snapshot(data)
        r = self.root.roles[SNAPSHOT]
        _verify(self.root.keys, r.keyids, r.threshold, meta=new,
                what=f"snapshot v{new.version} (snapshot role of root v{self.root.version})",
                hint=f"sign with the snapshot keys listed in root v{self.root.version}")
        old = self.snapshot
        if old is not None:
            for name, info in old.meta.items():
                newer = new.meta.get(name)
                if newer is None:
                    raise RollbackError(f"snapshot v{new.version} drops {name}, listed before")
                if newer.version < info.version:
                    raise RollbackError(
                        f"snapshot v{new.version} lists {name} v{newer.version}, older than "
                        f"v{info.version} already seen here")
        self.snapshot = new
        self.check_snapshot()
        return new

    def check_snapshot(self) -> None:
        if self.snapshot is None or self.timestamp is None:
            raise RuntimeError("no snapshot")
        self.expiry(self.snapshot, SNAPSHOT, self.root)
        _require_version(self.snapshot, self.timestamp.snapshot.version, SNAPSHOT)

    # 5.6 targets and delegated targets ----------------------------------------------------
    def update_targets(self, data: bytes) -> tufmeta.Targets:
        return self.update_delegated_targets(data, TARGETS, ROOT)

    def update_delegated_targets(self, data: bytes, role: str, delegator: str) -> tufmeta.Targets:
        if self.snapshot is None:
            raise RuntimeError("targets are updated after snapshot")
        self.check_snapshot()
        info = self.snapshot.meta.get(f"{role}.json")   # unquoted, as the spec writes it
        if info is None:
            raise MixAndMatchError(f"snapshot v{self.snapshot.version} lists no {role}.json",
                                   hint="the repository is incomplete; it must list every "
                                        "role in its snapshot")
        tufmeta.check_length_and_hashes(data, length=info.length, hashes=info.hashes,
                                        what=f"{role} v{info.version}")
        new = tufmeta.parse_targets(data, what=tufmeta.role_file(role, info.version))
        self.verify_delegate(new, role, delegator)
        _require_version(new, info.version, role)
        self.expiry(new, role, self.root)
        self.targets[role] = new
        return new

    def verify_delegate(self, meta: tufmeta.Targets, role: str, delegator: str) -> None:
        """Signed by a threshold of the keys ``delegator`` names for ``role``."""
        if delegator == ROOT:
            r = self.root.roles[TARGETS]
            _verify(self.root.keys, r.keyids, r.threshold, meta=meta,
                    what=f"targets v{meta.version} (targets role of root v{self.root.version})",
                    hint=f"sign with the targets keys listed in root v{self.root.version}")
            return
        parent = self.targets.get(delegator)
        delegation = parent.delegations.role(role) if parent and parent.delegations else None
        if parent is None or parent.delegations is None or delegation is None:
            raise FormatError(f"{delegator} does not delegate to {role}")
        _verify(parent.delegations.keys, delegation.keyids, delegation.threshold, meta=meta,
                what=f"{role} v{meta.version} (delegated by {delegator} v{parent.version})",
                hint=f"sign {role} with the keys {delegator} names for it; a key of another "
                     "role does not count")


def _require_version(meta: tufmeta.Signed, expected: int, role: str) -> None:
    if meta.version != expected:
        raise MixAndMatchError(
            f"{role} is version {meta.version}, but the metadata above it names version "
            f"{expected}", hint="the source mixes files of different publications; copy the "
                                "repository again as a whole")
