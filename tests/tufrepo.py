"""An in-memory TUF repository for the device client's tests, written with python-tuf's
Metadata API (a dev dependency; the installer never imports it), and a dict store.

``Repo`` holds one signer per role (more on request), publishes metadata into ``served``
(the files a repository would hold: ``N.root.json``, ``timestamp.json``,
``[N.]snapshot.json``, ``[N.]<quoted role>.json``, targets) and records every request
``fetch`` answers, so a test can assert the exact request sequence.
"""

import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from installer.trust import tufupdater

NOW = 1_800_000_000
DAY = 86400
TOP = ("root", "timestamp", "snapshot", "targets")


def when(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def new_signer(kind: str = "ed25519") -> Signer:
    if kind == "ecdsa":
        return CryptoSigner.generate_ecdsa()
    if kind == "rsa":
        return CryptoSigner.generate_rsa()
    return CryptoSigner.generate_ed25519()


@dataclass
class Repo:
    now: int = NOW
    consistent: bool = True
    keytype: str = "ed25519"
    meta_hashes: bool = False
    served: Dict[str, bytes] = field(default_factory=dict)
    requests: List[str] = field(default_factory=list)
    signers: Dict[str, List[Signer]] = field(default_factory=dict)
    md: Dict[str, Metadata[Any]] = field(default_factory=dict)
    parents: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expires = when(self.now + 30 * DAY)
        self.md["root"] = Metadata(Root(expires=expires, consistent_snapshot=self.consistent))
        self.md["timestamp"] = Metadata(Timestamp(expires=expires))
        self.md["snapshot"] = Metadata(Snapshot(expires=expires))
        self.md["targets"] = Metadata(Targets(expires=expires))
        for role in TOP:
            self.signers[role] = []
            self.add_key(role)
        self.publish_root()
        self.publish(bump=False)

    # --- keys --------------------------------------------------------------------------------
    def add_key(self, role: str, signer: Optional[Signer] = None) -> Signer:
        signer = signer or new_signer(self.keytype)
        self.signers.setdefault(role, []).append(signer)
        if role in TOP:
            self.root.add_key(signer.public_key, role)
        else:
            parent = self.md[self.parents[role]].signed
            assert isinstance(parent, Targets) and parent.delegations is not None
            parent.add_key(signer.public_key, role)
        return signer

    def rotate(self, role: str, kind: Optional[str] = None) -> None:
        """Replace every key of a top-level ``role`` with a new one (a root change)."""
        for signer in self.signers[role]:
            self.root.revoke_key(signer.public_key.keyid, role)
        self.signers[role] = []
        self.add_key(role, new_signer(kind or self.keytype))

    @property
    def root(self) -> Root:
        signed = self.md["root"].signed
        assert isinstance(signed, Root)
        return signed

    def targets(self, role: str = "targets") -> Targets:
        signed = self.md[role].signed
        assert isinstance(signed, Targets)
        return signed

    # --- publishing -------------------------------------------------------------------------
    def sign(self, role: str, signers: Optional[Sequence[Signer]] = None) -> bytes:
        md = self.md[role]
        md.signatures.clear()
        for signer in self.signers[role] if signers is None else signers:
            md.sign(signer, append=True)
        return md.to_bytes(JSONSerializer())

    def publish_root(self, *, bump: bool = False, old: Sequence[Signer] = (),
                     signers: Optional[Sequence[Signer]] = None) -> bytes:
        """Sign root (by its own keys, plus ``old`` ones for a rotation) and serve it."""
        if bump:
            self.root.version += 1
        data = self.sign("root", list(old) + list(
            self.signers["root"] if signers is None else signers))
        self.served[f"{self.root.version}.root.json"] = data
        return data

    def _name(self, role: str, version: int) -> str:
        quoted = urllib.parse.quote(role, safe="")
        return f"{version}.{quoted}.json" if self.consistent else f"{quoted}.json"

    def publish(self, roles: Sequence[str] = ("targets",), *, bump: bool = True) -> None:
        """Re-sign ``roles`` (targets roles; a role new to the snapshot keeps version 1),
        then snapshot and timestamp, and serve them."""
        snapshot = self.md["snapshot"].signed
        assert isinstance(snapshot, Snapshot)
        for role in roles:
            self.publish_targets(role, bump=bump and f"{role}.json" in snapshot.meta)
        self.publish_snapshot(bump=bump)
        self.publish_timestamp(bump=bump)

    def publish_targets(self, role: str, *, bump: bool = True) -> bytes:
        t = self.targets(role)
        if bump:
            t.version += 1
        data = self.sign(role)
        self.served[self._name(role, t.version)] = data
        self.snapshot_meta(role, data)
        return data

    def snapshot_meta(self, role: str, data: bytes) -> None:
        snapshot = self.md["snapshot"].signed
        assert isinstance(snapshot, Snapshot)
        info = MetaFile(self.targets(role).version)
        if self.meta_hashes:
            info = MetaFile.from_data(self.targets(role).version, data, ["sha256"])
        snapshot.meta[f"{role}.json"] = info

    def publish_snapshot(self, *, bump: bool = True) -> bytes:
        snapshot = self.md["snapshot"].signed
        assert isinstance(snapshot, Snapshot)
        if bump:
            snapshot.version += 1
        data = self.sign("snapshot")
        self.served[self._name("snapshot", snapshot.version)] = data
        ts = self.md["timestamp"].signed
        assert isinstance(ts, Timestamp)
        ts.snapshot_meta = (MetaFile.from_data(snapshot.version, data, ["sha256"])
                            if self.meta_hashes else MetaFile(snapshot.version))
        return data

    def publish_timestamp(self, *, bump: bool = True) -> bytes:
        ts = self.md["timestamp"].signed
        if bump:
            ts.version += 1
        data = self.sign("timestamp")
        self.served["timestamp.json"] = data
        return data

    # --- delegations and targets --------------------------------------------------------------
    def delegate(self, parent: str, name: str, *, paths: Optional[List[str]] = None,
                 prefixes: Optional[List[str]] = None, terminating: bool = False,
                 threshold: int = 1) -> None:
        t = self.targets(parent)
        if t.delegations is None:
            t.delegations = Delegations({}, roles={})
        assert t.delegations.roles is not None
        t.delegations.roles[name] = DelegatedRole(name, [], threshold, terminating,
                                                  paths=paths if prefixes is None else None,
                                                  path_hash_prefixes=prefixes)
        self.parents[name] = parent
        self.md[name] = Metadata(Targets(expires=when(self.now + 30 * DAY)))
        self.signers[name] = []
        self.add_key(name)

    def add_target(self, role: str, path: str, data: bytes,
                   algorithms: Sequence[str] = ("sha256",)) -> TargetFile:
        target = TargetFile.from_data(path, data, list(algorithms))
        self.targets(role).targets[path] = target
        head, _, base = path.rpartition("/")
        for digest in target.hashes.values():
            name = f"{digest}.{base}" if self.consistent else base
            self.served["targets/" + (f"{head}/{name}" if head else name)] = data
        return target

    def expire(self, role: str, epoch: int) -> None:
        self.md[role].signed.expires = when(epoch)

    # --- the client's side --------------------------------------------------------------------
    def fetch(self, name: str) -> Optional[bytes]:
        self.requests.append(name)
        return self.served.get(name)

    def root_bytes(self, version: int = 1) -> bytes:
        return self.served[f"{version}.root.json"]


class DictStore:
    """The device's trusted metadata, by role name."""

    def __init__(self) -> None:
        self.docs: Dict[str, bytes] = {}
        self.log: List[Tuple[str, str]] = []

    def load(self, role: str) -> Optional[bytes]:
        return self.docs.get(role)

    def save(self, role: str, data: bytes) -> None:
        self.docs[role] = data
        self.log.append(("save", role))

    def remove(self, role: str) -> None:
        self.docs.pop(role, None)
        self.log.append(("remove", role))

    def version(self, role: str) -> Optional[int]:
        data = self.docs.get(role)
        return None if data is None else int(Metadata.from_bytes(data).signed.version)


@dataclass
class Device:
    """A device: its trusted root and store; ``refresh`` runs the real updater."""

    repo: Repo
    root: bytes = b""
    store: DictStore = field(default_factory=DictStore)
    error: Optional[Exception] = None
    updater: Optional[tufupdater.Updater] = None

    def __post_init__(self) -> None:
        self.root = self.root or self.repo.root_bytes(1)

    def trusted_root(self) -> bytes:
        return self.store.docs.get("root", self.root)

    def refresh(self, now: int = NOW) -> bool:
        self.repo.requests.clear()
        self.error = None
        try:
            self.updater = tufupdater.Updater(self.trusted_root(), self.repo.fetch, self.store,
                                              now=now)
            self.updater.refresh()
        except Exception as e:  # noqa: BLE001 - every refusal is an outcome here
            self.error = e
            return False
        return True

    def find(self, path: str, now: int = NOW) -> Optional[str]:
        """Refresh, then look ``path`` up; the role that lists it, or None."""
        if not self.refresh(now):
            return None
        assert self.updater is not None
        try:
            found = self.updater.find_target(path)
        except Exception as e:  # noqa: BLE001
            self.error = e
            return None
        return None if found is None else found[1]

    def versions(self) -> Dict[str, Optional[int]]:
        return {role: self.store.version(role) for role in TOP}
