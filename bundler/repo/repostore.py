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

Writes never replace a versioned file; ``timestamp.json`` is written last, so an interrupted
command leaves the previous publication intact.
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
from bundler.errors import LocalError, RefusedError, SpecError, UntrustedInput
from installer.errors import InstallerError
from installer.fsio import write_verified
from installer.trust import tufclient

DEFAULT_RINGS = ("canary", "beta", "stable")
ISSUED = "x-airgap-issued"
YANKED = "x-airgap-yanked"
DAY = 86400


class RepoRefusal(RefusedError):
    """The repository holds the data, but the operation is not allowed (soak, not listed)."""


class UntrustedBundle(UntrustedInput):
    """A bundle whose own signature or contents do not verify against the repository root."""


@dataclass(frozen=True)
class Lifetimes:
    timestamp_days: int = 30
    snapshot_days: int = 90
    ring_days: int = 90


DEFAULT_LIFETIMES = Lifetimes()


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry(now: int, days: int) -> datetime:
    if days < 1:
        raise SpecError(f"expiry must be at least 1 day, got {days}")
    return datetime.fromtimestamp(now + days * DAY, UTC).replace(microsecond=0)


def _bytes(md: Metadata[Any]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=False)) + b"\n"


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_verified(path, [data], mode=0o644)
    except (OSError, InstallerError) as e:
        raise LocalError(f"cannot write {path}: {e}", hint="check space and permissions") from None


class Repo:
    """One repository folder and the key directory that signs it."""

    def __init__(self, directory: Path | str, keys_dir: Path | str, *,
                 passphrase_env: str | None = None) -> None:
        self.dir = Path(directory)
        self.keys_dir = Path(keys_dir)
        self.passphrase_env = passphrase_env
        self.meta = self.dir / "metadata"
        self.targets_dir = self.dir / "targets"

    # --- reading ------------------------------------------------------------------------

    def _load(self, name: str) -> Metadata[Any]:
        path = self.meta / name
        try:
            return Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError:
            raise SpecError(f"{path} does not exist",
                            hint=f"create the repository with `bundle repo init {self.dir}`"
                            ) from None
        except Exception as e:  # python-tuf raises several kinds for bad metadata
            raise SpecError(f"{path} is not valid TUF metadata: {e}") from None

    def root(self) -> Metadata[Root]:
        versions = sorted(int(p.name.split(".")[0]) for p in self.meta.glob("*.root.json")
                          if p.name.split(".")[0].isdigit())
        if not versions:
            raise SpecError(f"{self.meta} holds no root metadata",
                            hint=f"create the repository with `bundle repo init {self.dir}`")
        return self._load(f"{versions[-1]}.root.json")

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

    def sync_roots(self) -> list[Path]:
        """Copy roots the key directory has and the repository lacks; refuse any that differ."""
        written = []
        for version, data in enumerate(keys.root_chain(self.keys_dir), start=1):
            path = self.meta / f"{version}.root.json"
            if path.exists():
                if path.read_bytes() != data:
                    raise SpecError(f"{path} differs from {self.keys_dir}/roots/"
                                    f"{version}.root.json",
                                    hint="this repository belongs to another key directory")
                continue
            _write(path, data)
            written.append(path)
        return written

    # --- signing ------------------------------------------------------------------------

    def _sign(self, md: Metadata[Any], public: list[SSlibKey], threshold: int,
              *, role: str) -> None:
        signers = keys.signers_for_keys(self.keys_dir, public,
                                        passphrase_env=self.passphrase_env)
        if len(signers) < threshold:
            raise SpecError(f"{role} needs {threshold} signing key(s), found {len(signers)} "
                            f"in {self.keys_dir / 'keys'}",
                            hint=f"copy the {role} keys into {self.keys_dir / 'keys'} and retry")
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)

    def _sign_top(self, md: Metadata[Any], role: str, root: Root) -> None:
        r = root.roles[role]
        public = [root.keys[k] for k in r.keyids]
        self._sign(md, [k for k in public if isinstance(k, SSlibKey)], r.threshold, role=role)

    def _sign_ring(self, md: Metadata[Targets], ring: str, targets: Targets) -> None:
        assert targets.delegations is not None and targets.delegations.roles is not None
        role = targets.delegations.roles[ring]
        public = [targets.delegations.keys[k] for k in role.keyids]
        self._sign(md, [k for k in public if isinstance(k, SSlibKey)], role.threshold,
                   role=f"ring {ring}")
        targets.verify_delegate(ring, md.signed_bytes, md.signatures)

    # --- one publication ----------------------------------------------------------------

    def publish_set(self, *, rings: dict[str, Metadata[Targets]], lifetimes: Lifetimes,
                    now: int, new_targets: Metadata[Targets] | None = None) -> list[Path]:
        """Sign and write the changed rings (each at version+1), then a new snapshot and
        timestamp (written last). ``new_targets`` is the top-level role, when it changed."""
        root = self.root().signed
        first = not (self.meta / "timestamp.json").exists()
        if first and new_targets is None:
            self.timestamp()  # raises: not a repository (yet)
        snap: Metadata[Snapshot] = (Metadata(Snapshot(meta={})) if first
                                    else self.snapshot())
        top = new_targets or self.targets(snap)
        written: list[Path] = []
        pending: list[tuple[Path, bytes]] = []
        if new_targets is not None:
            t = new_targets.signed
            t.version = 1 if first else snap.signed.meta["targets.json"].version + 1
            t.expires = _expiry(now, lifetimes.ring_days)
            t.unrecognized_fields[ISSUED] = now
            self._sign_top(new_targets, "targets", root)
            pending.append((self.meta / f"{t.version}.targets.json", _bytes(new_targets)))
            snap.signed.meta["targets.json"] = MetaFile(version=t.version)
        for name, md in sorted(rings.items()):
            old = snap.signed.meta.get(f"{name}.json")
            md.signed.version = 1 if old is None else old.version + 1
            md.signed.expires = _expiry(now, lifetimes.ring_days)
            md.signed.unrecognized_fields[ISSUED] = now
            self._sign_ring(md, name, top.signed)
            pending.append((self.meta / f"{md.signed.version}.{name}.json", _bytes(md)))
            snap.signed.meta[f"{name}.json"] = MetaFile(version=md.signed.version)
        snap.signed.version = 1 if first else snap.signed.version + 1
        snap.signed.expires = _expiry(now, lifetimes.snapshot_days)
        snap.signed.unrecognized_fields[ISSUED] = now
        self._sign_top(snap, "snapshot", root)
        snap_bytes = _bytes(snap)
        pending.append((self.meta / f"{snap.signed.version}.snapshot.json", snap_bytes))
        ts = Metadata(Timestamp(version=1 if first else self.timestamp().signed.version + 1,
                                expires=_expiry(now, lifetimes.timestamp_days),
                                snapshot_meta=MetaFile.from_data(snap.signed.version,
                                                                 snap_bytes, ["sha256"])))
        ts.signed.unrecognized_fields[ISSUED] = now
        self._sign_top(ts, "timestamp", root)
        for path, _ in pending:
            if path.exists():
                raise SpecError(f"{path} already exists: the repository was changed by "
                                "another run or by hand",
                                hint="run `bundle repo status` and retry")
        ts_bytes = _bytes(ts)
        self._device_check(dict(pending + [(self.meta / "timestamp.json", ts_bytes)]), now)
        for path, data in pending:
            _write(path, data)
            written.append(path)
        _write(self.meta / "timestamp.json", ts_bytes)
        written.append(self.meta / "timestamp.json")
        return written

    def _device_check(self, pending: dict[Path, bytes], now: int) -> None:
        """Before anything is written: a device pinned at root v1 must accept the new
        publication for every ring, with the very client devices run
        (``installer.trust.tufclient``)."""
        def fetch(name: str) -> bytes | None:
            path = self.meta / name
            if path in pending:
                return pending[path]
            return path.read_bytes() if path.is_file() else None

        first = fetch("1.root.json")
        assert first is not None
        for ring in self._ring_names(pending, fetch):
            try:
                tufclient.refresh(tufclient.Trusted(root=first), fetch, ring=ring, now=now)
            except tufclient.ExpiredError:
                continue  # a ring nobody re-signed in time: `repo status` warns about it
            except InstallerError as e:
                raise SpecError(f"the new metadata would not verify on a {ring} device: "
                                f"{e.message}", hint=e.hint) from None

    @staticmethod
    def _ring_names(pending: dict[Path, bytes], fetch: Any) -> list[str]:
        ts = Metadata[Timestamp].from_bytes(fetch("timestamp.json"))
        snap = Metadata[Snapshot].from_bytes(
            fetch(f"{ts.signed.snapshot_meta.version}.snapshot.json"))
        return sorted(n[:-5] for n in snap.signed.meta if n != "targets.json")
