"""The OTA ring repository on disk: reading, signing and writing one publication (python-tuf).

Layout of a repository folder (copied as is onto a stick, or served by any static server)::

    metadata/<N>.root.json          the key directory's roots/, byte for byte
    metadata/timestamp.json         the only file replaced in place (the commit point)
    metadata/<V>.snapshot.json      consistent snapshots: every version kept
    metadata/<V>.targets.json       top-level targets: only the delegations to the rings
    metadata/<V>.<ring>.json        one delegated targets role per ring, own keys and threshold
    targets/<sha256>.<name>-<version>-<arch>.tar   each bundle once, by content

Root, timestamp, snapshot and targets keys are those of the key directory (``bundle keys``);
ring keys are created by ``repo init`` in the same ``keys/`` folder (``<ring>-<n>.pem``).
A ring entry carries, in its signed ``custom`` field, what a device needs to choose: name,
version, arch, K3s version, manifest sha256, when it entered the ring and the rollout percent.
A ring's signed ``x-airgap-yanked`` list names versions that must not run in it. Every
document carries ``x-airgap-issued`` (its signing time) for the devices' time ratchet.

    staged/pending.json             a change still short of signatures (never served)
    staged/metadata/..., staged/targets/...   its documents and bundles, as they will go live

Every command computes and checks the whole change first, then writes it all-or-nothing
through ``repotxn`` (staging folder, journal, ``timestamp.json`` switched last). Key
rotations are followed here: roots from the key directory are copied in, the top-level targets
is re-signed when its keys changed, and a ring whose keys were rotated (``bundle keys rotate
--role RING``, recorded in the key directory's ``rings.json``) gets its new delegation in
targets and a new version signed by its new keys.

A change whose targets or ring signatures are short of the threshold (some, not all, keys
present: threshold signing by separate people), or whose folder lacks the snapshot and
timestamp keys, is staged under ``staged/`` and goes live once signed (``bundle repo sign``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import SSlibKey
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from bundler import keys
from bundler.errors import RefusedError, SpecError, UntrustedInput
from bundler.repo.repotxn import Change, Txn
from installer.errors import InstallerError
from installer.format import canonjson
from installer.trust import tufclient

DEFAULT_RINGS = ("canary", "beta", "stable")
ISSUED = "x-airgap-issued"
RING_SERIALS = "x-airgap-ring-keys"  # in top-level targets: ring -> serial of its key set
PENDING = "staged/pending.json"
YANKED = "x-airgap-yanked"
DAY = 86400


class RepoRefusal(RefusedError):
    """The repository holds the data, but the operation is not allowed (soak, not listed)."""


class UntrustedBundle(UntrustedInput):
    """A bundle whose own signature or contents do not verify against the repository root."""


MAX_DAYS = 3660  # ten years: the longest lifetime a repository command signs


def check_days(days: int, flag: str) -> int:
    if not 1 <= days <= MAX_DAYS:
        raise SpecError(f"{flag} {str(days)[:20]}: must be 1 to {MAX_DAYS} days",
                        hint="metadata is re-signed by every publish/promote/refresh; a long "
                             "lifetime only delays when a leaked key stops working")
    return days


@dataclass(frozen=True)
class Lifetimes:
    timestamp_days: int = 30
    snapshot_days: int = 90
    ring_days: int = 90

    def __post_init__(self) -> None:
        for flag, days in (("--timestamp-days", self.timestamp_days),
                           ("--snapshot-days", self.snapshot_days),
                           ("--ring-days", self.ring_days)):
            check_days(days, flag)


DEFAULT_LIFETIMES = Lifetimes()


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry(now: int, days: int) -> datetime:
    check_days(days, "expiry")
    return datetime.fromtimestamp(now + days * DAY, UTC).replace(microsecond=0)


def _bytes(md: Metadata[Any]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=False)) + b"\n"





@dataclass
class Doc:
    """One targets or ring document of a change: where it goes and who must sign it."""

    role: str            # "targets" or a ring name
    md: Metadata[Targets]

    @property
    def rel(self) -> str:
        return f"metadata/{self.md.signed.version}.{self.role}.json"


@dataclass
class Outcome:
    """What a writing command did: the files it wrote, and the change it staged (if any)."""

    written: list[Path]
    pending: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"written": [str(p) for p in self.written], "pending": self.pending}


class Repo:
    """One repository folder and the key directory that signs it."""

    def __init__(self, directory: Path | str, keys_dir: Path | str, *,
                 passphrase_env: str | None = None) -> None:
        self.dir = Path(directory)
        self.keys_dir = Path(keys_dir)
        self.passphrase_env = passphrase_env
        self.meta = self.dir / "metadata"
        self.targets_dir = self.dir / "targets"
        self.change = Change()
        self.txn = Txn(self.dir)

    def begin(self) -> Repo:
        """Lock the folder for a writing command and finish an interrupted one."""
        self.txn.open()
        return self

    # --- reading (the change being prepared included) -------------------------------------

    def _bytes(self, rel: str) -> bytes | None:
        if rel in self.change.files:
            return self.change.files[rel]
        path = self.dir / rel
        return path.read_bytes() if path.is_file() else None

    def _load(self, name: str) -> Metadata[Any]:
        path = self.meta / name
        data = self._bytes(f"metadata/{name}")
        if data is None:
            raise SpecError(f"{path} does not exist",
                            hint=f"create the repository with `bundle repo init {self.dir}`")
        try:
            return Metadata.from_bytes(data)
        except Exception as e:  # python-tuf raises several kinds for bad metadata
            raise SpecError(f"{path} is not valid TUF metadata: {e}") from None

    def root_version(self) -> int:
        names = [p.name for p in self.meta.glob("*.root.json")] + [
            r.split("/")[-1] for r in self.change.files if r.endswith(".root.json")]
        versions = [int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()]
        if not versions:
            raise SpecError(f"{self.meta} holds no root metadata",
                            hint=f"create the repository with `bundle repo init {self.dir}`")
        return max(versions)

    def root(self) -> Metadata[Root]:
        return self._load(f"{self.root_version()}.root.json")

    def timestamp(self) -> Metadata[Timestamp]:
        return self._load("timestamp.json")

    def snapshot(self) -> Metadata[Snapshot]:
        return self._load(f"{self.timestamp().signed.snapshot_meta.version}.snapshot.json")

    def targets(self, snapshot: Metadata[Snapshot] | None = None) -> Metadata[Targets]:
        snap = snapshot or self.snapshot()
        return self._load(f"{snap.signed.meta['targets.json'].version}.targets.json")

    def rings(self) -> list[str]:
        delegations = self.targets().signed.delegations
        return list(delegations.roles) if delegations and delegations.roles else []

    def ring(self, name: str, snapshot: Metadata[Snapshot] | None = None) -> Metadata[Targets]:
        snap = snapshot or self.snapshot()
        meta = snap.signed.meta.get(f"{name}.json")
        if meta is None:
            raise SpecError(f"the repository {self.dir} has no ring {name!r}",
                            hint="its rings: " + ", ".join(self.rings()))
        return self._load(f"{meta.version}.{name}.json")

    # --- roots --------------------------------------------------------------------------

    def sync_roots(self) -> list[str]:
        """Add to the change the roots the key directory has and the repository lacks;
        refuse any that differ."""
        added: list[str] = []
        if not (self.keys_dir / "roots").is_dir():  # one person's folder: root.json alone
            return self._check_lone_root()
        for version, data in enumerate(keys.root_chain(self.keys_dir), start=1):
            rel = f"metadata/{version}.root.json"
            path = self.dir / rel
            if path.exists():
                if path.read_bytes() != data:
                    raise SpecError(f"{path} differs from {self.keys_dir}/roots/"
                                    f"{version}.root.json",
                                    hint="this repository belongs to another key directory")
                continue
            self.change.files[rel] = data
            added.append(rel)
        return added

    def _check_lone_root(self) -> list[str]:
        """A folder without ``roots/`` brings no new root: its ``root.json`` must be one the
        repository already has."""
        path = self.keys_dir / "root.json"
        try:
            data = path.read_bytes()
            version = Metadata[Root].from_bytes(data).signed.version
        except Exception as e:  # OSError, or python-tuf's several kinds for bad metadata
            raise SpecError(f"{path}: {e}", hint="copy root.json from the key directory"
                            ) from None
        if self._bytes(f"metadata/{version}.root.json") != data:
            raise SpecError(f"{path} (root v{version}) is not a root of {self.dir}",
                            hint="copy the current root.json and roots/ of the key directory "
                                 "into this folder")
        return []

    # --- signing ------------------------------------------------------------------------

    def _signers(self, public: list[Any]) -> list[Any]:
        return keys.signers_for_keys(self.keys_dir, [k for k in public if isinstance(k, SSlibKey)],
                                     passphrase_env=self.passphrase_env)

    def _sign(self, md: Metadata[Any], public: list[Any], threshold: int,
              *, role: str) -> None:
        """Sign with every key of ``public`` this folder holds; refuse below ``threshold``."""
        signers = self._signers(public)
        if len(signers) < threshold:
            raise SpecError(f"{role} needs {threshold} signing key(s), found {len(signers)} "
                            f"in {self.keys_dir / 'keys'}",
                            hint=f"copy the {role} keys into {self.keys_dir / 'keys'} and retry")
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)

    def _sign_top(self, md: Metadata[Any], role: str, root: Root) -> None:
        r = root.roles[role]
        self._sign(md, [root.keys[k] for k in r.keyids], r.threshold, role=role)
        self._cosign(md, role, root)

    def _live_root(self) -> Root | None:
        """The newest root already in the folder (what devices can read now), before this
        command's change adds any."""
        versions = [int(v) for v in (p.name.split(".")[0] for p in self.meta.glob("*.root.json"))
                    if v.isdigit()]
        if not versions:
            return None
        live: Root = Metadata[Root].from_bytes(
            (self.meta / f"{max(versions)}.root.json").read_bytes()).signed
        return live

    def _cosign(self, md: Metadata[Any], role: str, root: Root) -> None:
        """While a newer root goes live, also sign with ``role``'s keys of the root devices
        hold now, those this folder still has (rotation leaves the old key files): a device
        reading between the renames of the switch, which puts the new roots in after
        ``timestamp.json`` (``repotxn._rank``), accepts the new documents under its root."""
        live = self._live_root()
        if live is None or live.version >= root.version:
            return
        r = live.roles[role]
        have = set(md.signatures)
        for signer in self._signers([live.keys[k] for k in r.keyids]):
            if signer.public_key.keyid not in have:
                md.sign(signer, append=True)

    def _has_top(self, role: str, root: Root) -> bool:
        r = root.roles[role]
        return len(self._signers([root.keys[k] for k in r.keyids])) >= r.threshold

    def _add_signatures(self, doc: Doc, root: Root, top: Targets) -> int:
        """Sign ``doc`` with this folder's keys for its role (keeping others' signatures);
        returns how many signatures this folder added."""
        public = _role_keys(doc.role, root, top)
        before = set(doc.md.signatures)
        for signer in self._signers(public):
            doc.md.sign(signer, append=True)
        return len(set(doc.md.signatures) - before)

    # --- rotations ----------------------------------------------------------------------

    def _follow_rotations(self, current: Metadata[Targets], root: Root, *,
                          rings: dict[str, Metadata[Targets]],
                          snap: Metadata[Snapshot]) -> Metadata[Targets] | None:
        """The top-level targets re-signed for key changes, or None when none are needed:
        its own keys rotated in root (it no longer verifies), or a ring's keys rotated in the
        key directory (``rings.json``): its delegation changes, and the ring is re-signed."""
        md = Metadata[Targets].from_bytes(_bytes(current))
        changed = not root.get_verification_result(
            "targets", current.signed_bytes, current.signatures).verified
        delegations = md.signed.delegations
        serials = dict(md.signed.unrecognized_fields.get(RING_SERIALS, {}))
        for ring, record in keys.ring_records(self.keys_dir).items():
            if delegations is None or delegations.roles is None or ring not in delegations.roles:
                continue
            if record.serial <= int(serials.get(ring, 1)):
                continue
            role = delegations.roles[ring]
            for keyid in role.keyids:
                if not any(keyid in r.keyids for n, r in delegations.roles.items() if n != ring):
                    delegations.keys.pop(keyid, None)
            for key in record.keys:
                delegations.keys[key.keyid] = key
            role.keyids = [k.keyid for k in record.keys]
            role.threshold = record.threshold
            serials[ring] = record.serial
            rings.setdefault(ring, self.ring(ring, snap))
            changed = True
        if not changed:
            return None
        md.signed.unrecognized_fields[RING_SERIALS] = serials
        return md

    # --- one publication ----------------------------------------------------------------

    def publish_set(self, *, rings: dict[str, Metadata[Targets]], lifetimes: Lifetimes,
                    now: int, new_targets: Metadata[Targets] | None = None, what: str = "",
                    copies: dict[str, tuple[Path, str, int]] | None = None) -> Outcome:
        """Sign the changed rings (each at version+1) and targets, with the keys this folder
        holds; with every threshold met, a new snapshot and timestamp go live with them,
        else the change is staged (``staged/``) for more signatures."""
        self.sync_roots()
        root = self.root().signed
        first = self._bytes("metadata/timestamp.json") is None
        if first and new_targets is None:
            self.timestamp()  # raises: not a repository (yet)
        snap: Metadata[Snapshot] = (Metadata(Snapshot(meta={})) if first
                                    else self.snapshot())
        if not first and (rings or new_targets is not None or copies):
            self._refuse_if_pending()
        if new_targets is None and not first:
            new_targets = self._follow_rotations(self.targets(snap), root, rings=rings,
                                                 snap=snap)
        docs = []
        if new_targets is not None:
            t = new_targets.signed
            t.version = 1 if first else snap.signed.meta["targets.json"].version + 1
            docs.append(Doc("targets", new_targets))
        for name, md in sorted(rings.items()):
            old = snap.signed.meta.get(f"{name}.json")
            md.signed.version = 1 if old is None else old.version + 1
            docs.append(Doc(name, md))
        top = (new_targets or self.targets(snap)).signed
        for doc in docs:
            doc.md.signed.expires = _expiry(now, lifetimes.ring_days)
            doc.md.signed.unrecognized_fields[ISSUED] = now
            doc.md.signatures.clear()
            if not self._add_signatures(doc, root, top):
                need = _role_need(doc.role, root, top)
                raise SpecError(f"{_what(doc.role)} needs {need} signing key(s), found 0 in "
                                f"{self.keys_dir / 'keys'}",
                                hint=f"copy a {_what(doc.role)} key into "
                                     f"{self.keys_dir / 'keys'} and retry")
        return self._finish(docs, snap, lifetimes=lifetimes, now=now, what=what,
                            copies=copies or {})

    def _finish(self, docs: list[Doc], snap: Metadata[Snapshot], *, lifetimes: Lifetimes,
                now: int, what: str, copies: dict[str, tuple[Path, str, int]],
                deletes: list[str] | None = None) -> Outcome:
        """Live when every threshold is met and this folder holds the snapshot and timestamp
        keys; else staged."""
        root = self.root().signed
        top = next((d.md for d in docs if d.role == "targets"), None)
        top_signed = (top or self.targets(snap)).signed
        short = _shortfalls(docs, root, top_signed)
        can_publish = self._has_top("snapshot", root) and self._has_top("timestamp", root)
        if short or not can_publish:
            if not docs:
                self._sign_top(Metadata(Snapshot()), "snapshot", root)  # raises: which key
                self._sign_top(Metadata(Snapshot()), "timestamp", root)
            return self._stage(docs, copies, what=what, now=now, short=short)
        for doc in docs:
            if doc.role == "targets":
                self._cosign(doc.md, "targets", root)
            self.change.files[doc.rel] = _bytes(doc.md)
            snap.signed.meta[f"{doc.role}.json"] = MetaFile(version=doc.md.signed.version)
        for rel, origin in copies.items():
            self.change.copies[rel] = origin
        self.change.deletes += deletes or []
        return Outcome(self._publish_snapshot(snap, lifetimes=lifetimes, now=now))

    def _publish_snapshot(self, snap: Metadata[Snapshot], *, lifetimes: Lifetimes,
                          now: int) -> list[Path]:
        root = self.root().signed
        first = self._bytes("metadata/timestamp.json") is None
        snap.signed.version = 1 if first else snap.signed.version + 1
        snap.signed.expires = _expiry(now, lifetimes.snapshot_days)
        snap.signed.unrecognized_fields[ISSUED] = now
        self._sign_top(snap, "snapshot", root)
        snap_bytes = _bytes(snap)
        self.change.files[f"metadata/{snap.signed.version}.snapshot.json"] = snap_bytes
        ts = Metadata(Timestamp(version=1 if first else self.timestamp().signed.version + 1,
                                expires=_expiry(now, lifetimes.timestamp_days),
                                snapshot_meta=MetaFile.from_data(snap.signed.version,
                                                                 snap_bytes, ["sha256"])))
        ts.signed.unrecognized_fields[ISSUED] = now
        self._sign_top(ts, "timestamp", root)
        for rel in list(self.change.files) + list(self.change.copies):
            if rel.startswith("metadata/") and rel != "metadata/timestamp.json" and \
                    (self.dir / rel).exists() and not rel.endswith(".root.json"):
                raise SpecError(f"{self.dir / rel} already exists: the repository was changed "
                                "by another run or by hand",
                                hint="run `bundle repo status` and retry")
        self.change.files["metadata/timestamp.json"] = _bytes(ts)
        self._device_check(now)
        return self.txn.commit(self.change)

    def _device_check(self, now: int) -> None:
        """Before anything is written: a device pinned at root v1 must accept the new
        publication for every ring, with the very client devices run
        (``installer.trust.tufclient``)."""
        def fetch(name: str) -> bytes | None:
            return self._bytes(f"metadata/{name}")

        first = fetch("1.root.json")
        assert first is not None
        for ring in self._ring_names(fetch):
            try:
                tufclient.refresh(tufclient.Trusted(root=first), fetch, ring=ring, now=now)
            except tufclient.ExpiredError:
                continue  # a ring nobody re-signed in time: `repo status` warns about it
            except InstallerError as e:
                raise SpecError(f"the new metadata would not verify on a {ring} device: "
                                f"{e.message}", hint=e.hint) from None

    @staticmethod
    def _ring_names(fetch: Any) -> list[str]:
        ts = Metadata[Timestamp].from_bytes(fetch("timestamp.json"))
        snap = Metadata[Snapshot].from_bytes(
            fetch(f"{ts.signed.snapshot_meta.version}.snapshot.json"))
        return sorted(n[:-5] for n in snap.signed.meta if n != "targets.json")

    # --- staged changes (threshold signing by separate people) ----------------------------

    def pending(self) -> dict[str, Any] | None:
        data = self._bytes(PENDING)
        if data is None:
            return None
        try:
            found: dict[str, Any] = canonjson.loads_strict(data, what=str(self.dir / PENDING))
            return found
        except InstallerError as e:
            raise SpecError(f"{self.dir / PENDING} is unreadable: {e.message}",
                            hint="remove the staged/ folder and make the change again") from None

    def _refuse_if_pending(self) -> None:
        found = self.pending()
        if found is not None:
            raise RepoRefusal(f"{self.dir} has a staged change waiting for signatures: "
                              f"{found.get('what', '?')}",
                              hint=f"sign it (`bundle repo sign {self.dir} --keys FOLDER`) or "
                                   f"drop it (`bundle repo sign {self.dir} --drop`) first")

    def pending_docs(self) -> list[Doc]:
        found = self.pending() or {}
        docs = []
        for role, rel in found.get("documents", {}).items():
            data = self._bytes(f"staged/{rel}")
            if data is None:
                raise SpecError(f"{self.dir / 'staged' / rel} is missing",
                                hint="remove the staged/ folder and make the change again")
            docs.append(Doc(role, Metadata[Targets].from_bytes(data)))
        return docs

    def _stage(self, docs: list[Doc], copies: dict[str, tuple[Path, str, int]], *, what: str,
               now: int, short: list[dict[str, Any]]) -> Outcome:
        old = self.pending()
        record = {"what": what or (old or {}).get("what", "change"),
                  "created": (old or {}).get("created", now),
                  "documents": {d.role: d.rel for d in docs},
                  "targets": sorted(set(copies) | set((old or {}).get("targets", [])))}
        for doc in docs:
            self.change.files[f"staged/{doc.rel}"] = _bytes(doc.md)
        for rel, origin in copies.items():
            self.change.copies[f"staged/{rel}"] = origin
        self.change.files[PENDING] = canonjson.encode(record) + b"\n"
        for rel in list(self.change.files):
            if rel.endswith(".root.json"):  # roots go live with the change, not before
                del self.change.files[rel]
        self.txn.commit(self.change)
        return Outcome([], dict(record, signatures=short or self.pending_status()["signatures"]))

    def pending_status(self) -> dict[str, Any]:
        found = self.pending()
        if found is None:
            return {}
        docs = self.pending_docs()
        root = self.root().signed
        top = next((d.md for d in docs if d.role == "targets"), None)
        top_signed = (top or self.targets()).signed
        return dict(found, signatures=[_signature_count(d, root, top_signed) for d in docs])


def _what(role: str) -> str:
    return role if role == "targets" else f"ring {role}"


def _role_keys(role: str, root: Root, top: Targets) -> list[Any]:
    if role == "targets":
        return [root.keys[k] for k in root.roles["targets"].keyids]
    assert top.delegations is not None and top.delegations.roles is not None
    return [top.delegations.keys[k] for k in top.delegations.roles[role].keyids]


def _role_need(role: str, root: Root, top: Targets) -> int:
    if role == "targets":
        return root.roles["targets"].threshold
    assert top.delegations is not None and top.delegations.roles is not None
    return top.delegations.roles[role].threshold


def _signature_count(doc: Doc, root: Root, top: Targets) -> dict[str, Any]:
    holder: Any = root if doc.role == "targets" else top
    result = holder.get_verification_result(doc.role, doc.md.signed_bytes, doc.md.signatures)
    return {"role": doc.role, "version": doc.md.signed.version, "present": len(result.signed),
            "needed": result.threshold, "signed_by": sorted(result.signed),
            "missing": sorted(result.unsigned)}


def _shortfalls(docs: list[Doc], root: Root, top: Targets) -> list[dict[str, Any]]:
    counts = [_signature_count(d, root, top) for d in docs]
    return [c for c in counts if c["present"] < c["needed"]]
