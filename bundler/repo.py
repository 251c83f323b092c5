"""The OTA ring repository: a TUF repository in a folder, written with python-tuf's Metadata API.

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

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import SSlibKey
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

from installer import verify
from installer.errors import InstallerError
from installer.fsio import hash_file, iter_file, write_verified

from . import keys
from .errors import BundleError, LocalError, SpecError

DEFAULT_RINGS = ("canary", "beta", "stable")
ISSUED = "x-airgap-issued"
YANKED = "x-airgap-yanked"
DAY = 86400


class RepoRefusal(BundleError):
    """The repository holds the data, but the operation is not allowed (soak, not listed)."""

    exit_code = 4


class UntrustedBundle(BundleError):
    """A bundle whose own signature or contents do not verify against the repository root."""

    exit_code = 3


@dataclass(frozen=True)
class Lifetimes:
    timestamp_days: int = 30
    snapshot_days: int = 90
    ring_days: int = 90


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
              role: str) -> None:
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
        self._sign(md, [k for k in public if isinstance(k, SSlibKey)], r.threshold, role)

    def _sign_ring(self, md: Metadata[Targets], ring: str, targets: Targets) -> None:
        assert targets.delegations is not None and targets.delegations.roles is not None
        role = targets.delegations.roles[ring]
        public = [targets.delegations.keys[k] for k in role.keyids]
        self._sign(md, [k for k in public if isinstance(k, SSlibKey)], role.threshold,
                   f"ring {ring}")
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
        for path, data in pending:
            _write(path, data)
            written.append(path)
        _write(self.meta / "timestamp.json", _bytes(ts))
        written.append(self.meta / "timestamp.json")
        return written


# --- commands -------------------------------------------------------------------------------

def _now(now: int | None) -> int:
    return int(time.time()) if now is None else int(now)


def init_repo(directory: Path | str, keys_dir: Path | str, *,
              rings: tuple[str, ...] = DEFAULT_RINGS,
              ring_keys: dict[str, tuple[int, int]] | None = None,
              lifetimes: Lifetimes = Lifetimes(), passphrase_env: str | None = None,
              now: int | None = None) -> list[Path]:
    """Create the repository: roots from the key directory, one delegated role per ring
    (``ring_keys[ring] = (keys, threshold)``, default one key), empty rings, snapshot and
    timestamp version 1."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env)
    now = _now(now)
    if repo.meta.exists() and any(repo.meta.iterdir()):
        raise SpecError(f"{repo.meta} is not empty: refusing to overwrite a repository",
                        hint="choose another folder, or use publish/promote/refresh on it")
    if not rings or len(set(rings)) != len(rings):
        raise SpecError(f"rings must be distinct names, got {', '.join(rings) or 'none'}")
    counts = ring_keys or {}
    unknown = sorted(set(counts) - set(rings))
    if unknown:
        raise SpecError(f"--ring-keys names unknown ring(s) {', '.join(unknown)}")
    delegations = Delegations(keys={}, roles={})
    assert delegations.roles is not None
    written = repo.sync_roots()
    for ring in rings:
        n, threshold = counts.get(ring, (1, 1))
        if not 1 <= threshold <= n:
            raise SpecError(f"ring {ring}: threshold must be between 1 and {n}, got {threshold}")
    for ring in rings:
        n, threshold = counts.get(ring, (1, 1))
        public, files = keys.create_role_keys(repo.keys_dir, ring, n,
                                              passphrase_env=passphrase_env)
        written += files
        for key in public:
            delegations.keys[key.keyid] = key
        delegations.roles[ring] = DelegatedRole(name=ring, keyids=[k.keyid for k in public],
                                                threshold=threshold, terminating=False,
                                                paths=["*"])
    top = Metadata(Targets(version=1, delegations=delegations))
    ring_md = {ring: Metadata(Targets(version=1)) for ring in rings}
    written += repo.publish_set(rings=ring_md, lifetimes=lifetimes, now=now, new_targets=top)
    repo.targets_dir.mkdir(parents=True, exist_ok=True)
    return written


def _entries(md: Metadata[Targets], name: str, version: str) -> dict[str, TargetFile]:
    return {path: t for path, t in md.signed.targets.items()
            if t.custom.get("name") == name and t.custom.get("version") == version}


def _listed(md: Metadata[Targets]) -> str:
    found = sorted({f"{t.custom.get('name')} {t.custom.get('version')}"
                    for t in md.signed.targets.values()})
    return ", ".join(found) or "nothing"


def _yanked(md: Metadata[Targets], name: str, version: str) -> dict[str, Any] | None:
    for entry in md.signed.unrecognized_fields.get(YANKED, []):
        if entry.get("name") == name and entry.get("version") == version:
            return dict(entry)
    return None


def publish(bundles: list[Path], *, directory: Path | str, keys_dir: Path | str, ring: str,
            lifetimes: Lifetimes = Lifetimes(), passphrase_env: str | None = None,
            now: int | None = None) -> list[dict[str, Any]]:
    """Add bundles to ``ring``: each fully verified against the repository's newest root
    (signature, envelope, every member), stored once by content, listed in the ring."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env)
    now = _now(now)
    repo.sync_roots()
    anchor = (repo.meta / f"{repo.root().signed.version}.root.json").read_bytes()
    md = repo.ring(ring)
    added = []
    for path in bundles:
        try:
            opened = verify.open_bundle(str(path), anchor=anchor, now=now)
            try:
                verify.hash_payload(opened)
            finally:
                opened.close()
        except InstallerError as e:
            raise UntrustedBundle(f"{path} does not verify against root "
                                  f"v{repo.root().signed.version} of {repo.dir}: {e.message}",
                                  hint=e.hint or "build it with the keys of this repository"
                                  ) from None
        m = opened.header.manifest
        if _yanked(md, m.name, m.version):
            raise RepoRefusal(f"{m.name} {m.version} was yanked from ring {ring}",
                              hint="publish a new version instead")
        sha, size = hash_file(path)
        filename = f"{m.name}-{m.version}-{m.arch}.tar"
        dest = repo.targets_dir / f"{sha}.{filename}"
        if not dest.exists():
            try:
                repo.targets_dir.mkdir(parents=True, exist_ok=True)
                with open(path, "rb") as f:
                    write_verified(dest, iter_file(f), sha256=sha, size=size, mode=0o644,
                                   what=str(path))
            except (OSError, InstallerError) as e:
                raise LocalError(f"cannot write {dest}: {e}") from None
        old = md.signed.targets.get(filename)
        if old is not None and old.hashes.get("sha256") != sha:
            raise RepoRefusal(f"ring {ring} already lists {filename} with other content",
                              hint="versions must change when content does")
        entered = old.custom.get("entered", now) if old is not None else now
        md.signed.targets[filename] = TargetFile(size, {"sha256": sha}, filename, {"custom": {
            "name": m.name, "version": m.version, "arch": m.arch, "k3s_version": m.k3s_version,
            "manifest_sha256": opened.digest, "entered": entered, "percent": 100}})
        added.append({"target": filename, "sha256": sha, "length": size, "ring": ring,
                      "stored": str(dest)})
    repo.publish_set(rings={ring: md}, lifetimes=lifetimes, now=now)
    return added


def parse_duration(text: str) -> int:
    """``90``, ``30m``, ``24h``, ``7d`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": DAY}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    if not number.isdigit():
        raise SpecError(f"duration {text!r} is not of the form N, Ns, Nm, Nh or Nd")
    return int(number) * units[unit]


def promote(name: str, version: str, *, directory: Path | str, keys_dir: Path | str,
            source: str, dest: str, min_soak: int = 0, percent: int = 100,
            lifetimes: Lifetimes = Lifetimes(), passphrase_env: str | None = None,
            now: int | None = None) -> list[dict[str, Any]]:
    """List in ``dest`` exactly the entries (same hashes) that ``source`` lists for NAME
    VERSION, once they have soaked ``min_soak`` seconds in ``source``."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env)
    now = _now(now)
    if not 1 <= percent <= 100:
        raise SpecError(f"--percent must be between 1 and 100, got {percent}")
    if source == dest:
        raise SpecError("--from and --to name the same ring")
    repo.sync_roots()
    snap = repo.snapshot()
    src, dst = repo.ring(source, snap), repo.ring(dest, snap)
    found = _entries(src, name, version)
    if not found:
        raise RepoRefusal(f"ring {source} does not list {name} {version}",
                          hint=f"ring {source} lists: {_listed(src)}")
    if _yanked(dst, name, version):
        raise RepoRefusal(f"{name} {version} was yanked from ring {dest}",
                          hint="promote a newer version")
    entered = min(int(t.custom.get("entered", now)) for t in found.values())
    if now - entered < min_soak:
        raise RepoRefusal(
            f"{name} {version} entered ring {source} at {_iso(entered)}; it must soak until "
            f"{_iso(entered + min_soak)} (--min-soak {min_soak}s)",
            hint="wait, or pass a shorter --min-soak")
    out = []
    for path, t in sorted(found.items()):
        old = dst.signed.targets.get(path)
        custom = dict(t.custom)
        custom["entered"] = old.custom.get("entered", now) if old is not None else now
        custom["percent"] = percent
        dst.signed.targets[path] = TargetFile(t.length, dict(t.hashes), path,
                                              {"custom": custom})
        out.append({"target": path, "sha256": t.hashes["sha256"], "ring": dest,
                    "percent": percent})
    repo.publish_set(rings={dest: dst}, lifetimes=lifetimes, now=now)
    return out


def yank(name: str, version: str, *, directory: Path | str, keys_dir: Path | str, ring: str,
         reason: str, lifetimes: Lifetimes = Lifetimes(), passphrase_env: str | None = None,
         now: int | None = None) -> dict[str, Any]:
    """Remove NAME VERSION from ``ring`` and record the signed decision that it must not run
    there; devices on it go back to the newest version the ring still lists."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env)
    now = _now(now)
    if not reason.strip():
        raise SpecError("--reason must say why the version is yanked")
    repo.sync_roots()
    md = repo.ring(ring)
    found = _entries(md, name, version)
    if not found and not _yanked(md, name, version):
        raise RepoRefusal(f"ring {ring} does not list {name} {version}",
                          hint=f"ring {ring} lists: {_listed(md)}")
    for path in found:
        del md.signed.targets[path]
    record = {"name": name, "version": version, "reason": reason, "at": now}
    md.signed.unrecognized_fields[YANKED] = [
        e for e in md.signed.unrecognized_fields.get(YANKED, [])
        if (e.get("name"), e.get("version")) != (name, version)] + [record]
    repo.publish_set(rings={ring: md}, lifetimes=lifetimes, now=now)
    return dict(record, ring=ring, removed=sorted(found))


def refresh(*, directory: Path | str, keys_dir: Path | str, lifetimes: Lifetimes = Lifetimes(),
            passphrase_env: str | None = None, now: int | None = None) -> list[Path]:
    """New roots from the key directory, a new snapshot and timestamp: fresh for travel."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env)
    written = repo.sync_roots()
    return written + repo.publish_set(rings={}, lifetimes=lifetimes, now=_now(now))
