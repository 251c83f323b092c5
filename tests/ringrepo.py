"""Ring repositories for the tests: real key directories, real bundles, ``bundler.repo`` and
two device-side clients fed the same folder: python-tuf's ``ngclient.Updater`` (with a
local-folder fetcher) and the stdlib ``installer.trust.tufclient`` (as ``airgap-install sync`` runs
it). Nothing is mocked; attacks are made by re-signing real metadata with real keys."""

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from securesystemslib.signer import SSlibKey
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface, Updater

from bundler import keys
from bundler.repo import ringops
from installer import policy
from installer.commands import sync
from installer.errors import InstallerError
from installer.trust import rings, tufclient

from .bundles import KeyDir, default_spec, write_spec

Outcome = Tuple[bool, Optional[str]]  # accepted?, target chosen (path) or None


class FolderFetcher(FetcherInterface):
    """python-tuf's fetcher for ``file://`` URLs: a USB stick, not a network."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        assert url.startswith("file://"), url
        path = url[len("file://"):]
        if not os.path.isfile(path):
            raise DownloadHTTPError(f"{path} not found", 404)
        with open(path, "rb") as f:
            return iter([f.read()])


def newest_for(targets: Targets, arch: str) -> Optional[str]:
    """Independent of installer.trust.rings: the highest version for ``arch``, percent 100."""
    best: Optional[Tuple[str, str]] = None
    for path, t in targets.targets.items():
        c = t.custom
        if c.get("arch") != arch or c.get("percent") != 100:
            continue
        if best is None or policy.compare_versions(c["version"], best[1]) > 0:
            best = (path, c["version"])
    return best[0] if best else None


@dataclass
class PyTufDevice:
    """python-tuf's client with its own metadata folder (its trusted state)."""

    folder: Path
    ring: str
    arch: str = "amd64"

    def pin(self, root: bytes) -> None:
        (self.folder / "meta").mkdir(parents=True, exist_ok=True)
        (self.folder / "meta" / "root.json").write_bytes(root)

    def sync(self, source: Path) -> Outcome:
        try:
            u = Updater(str(self.folder / "meta"), f"file://{source}/metadata/",
                        str(self.folder / "dl"), f"file://{source}/targets/",
                        fetcher=FolderFetcher(), bootstrap=None)
            u.refresh()
            ring = u._load_targets(self.ring, "targets")  # the ring's delegation only
            path = newest_for(ring, self.arch)
            if path is None:
                return True, None
            info = u.get_targetinfo(path)
            assert info is not None
            (self.folder / "dl").mkdir(exist_ok=True)
            u.download_target(info, str(self.folder / "dl" / path))
            return True, path
        except Exception as e:  # python-tuf raises many kinds; all mean "rejected"
            self.error = e
            return False, None


@dataclass
class StdlibDevice:
    """``installer.trust.tufclient`` + ``installer.trust.rings`` + ``sync.copy_target``, its trusted
    state in memory as ``sync`` would persist it."""

    folder: Path
    ring: str
    arch: str = "amd64"
    trusted: Optional[tufclient.Trusted] = None
    error: Optional[Exception] = field(default=None)

    def pin(self, root: bytes) -> None:
        self.trusted = tufclient.Trusted(root=root)

    def sync(self, source: Path, now: Optional[int] = None) -> Outcome:
        assert self.trusted is not None
        try:
            r = tufclient.refresh(self.trusted, sync.folder_fetcher(str(source)),
                                  ring=self.ring, now=int(time.time()) if now is None else now)
            choice = rings.choose(r.entries, arch=self.arch, device_id="d", installed_name=None,
                                  installed_version=None, yanked=r.yanked, failed=(),
                                  ring=self.ring)
            if choice.entry is not None:
                sync.copy_target(str(source), choice.entry, str(self.folder / "dl"))
            self.trusted = r.trusted
            return True, choice.entry.path if choice.entry else None
        except InstallerError as e:
            self.error = e
            return False, None


@dataclass
class World:
    base: Path
    keydir: KeyDir
    repo: Path
    bundles: List[Path]

    def publish(self, version: str, ring: str = "canary", **kw: object) -> None:
        path = write_spec(default_spec(version), self.keydir, self.base / "b")
        ringops.publish([path], directory=self.repo, keys_dir=self.keydir.path, ring=ring,
                     **kw)  # type: ignore[arg-type]

    def snapshot_copy(self, name: str) -> Path:
        """The repository as a stick would carry it now."""
        dest = self.base / name
        shutil.copytree(self.repo, dest)
        return dest

    def root(self) -> bytes:
        return (self.repo / "metadata" / "1.root.json").read_bytes()

    def signers(self, public: List[SSlibKey]) -> list:  # type: ignore[type-arg]
        return keys.signers_for_keys(self.keydir.path, public)


def make_world(base: Path, *, ring_keys: Optional[dict] = None) -> World:  # type: ignore
    (base / "b").mkdir(parents=True)
    kd = KeyDir(base / "keys")
    ringops.init_repo(base / "repo", kd.path, ring_keys=ring_keys or {"stable": (3, 2)})
    return World(base, kd, base / "repo", [])


# --- re-signing real metadata (for attacks) ------------------------------------------------

def _dump(md: Metadata, path: Path) -> bytes:  # type: ignore[type-arg]
    data = md.to_bytes(JSONSerializer(compact=False)) + b"\n"
    path.write_bytes(data)
    return data


def resign_ring(w: World, ring: str, *, signer_ring: Optional[str] = None,
                signers: int = 99) -> None:
    """Write the next version of ``ring`` signed by ``signers`` keys of ``signer_ring`` (default
    its own), then a snapshot and timestamp that name it, correctly signed."""
    r = ringops.Repo(w.repo, w.keydir.path)
    snap = r.snapshot()
    top = r.targets(snap).signed
    md = r.ring(ring, snap)
    md.signed.version += 1
    assert top.delegations is not None and top.delegations.roles is not None
    role = top.delegations.roles[signer_ring or ring]
    public = [top.delegations.keys[k] for k in role.keyids]
    md.signatures.clear()
    for s in w.signers(public)[:signers]:  # type: ignore[arg-type]
        md.sign(s, append=True)
    _dump(md, w.repo / "metadata" / f"{md.signed.version}.{ring}.json")
    snap.signed.meta[f"{ring}.json"] = MetaFile(version=md.signed.version)
    write_snapshot_timestamp(w, snap)


def write_snapshot_timestamp(w: World, snap: Metadata[Snapshot], *,
                             ts_version: Optional[int] = None) -> None:
    r = ringops.Repo(w.repo, w.keydir.path)
    root = r.root().signed
    old_ts = r.timestamp()
    snap.signed.version = max(int(p.name.split(".")[0]) for p in
                              (w.repo / "metadata").glob("*.snapshot.json")) + 1
    snap.signatures.clear()
    for s in w.signers([root.keys[k] for k in root.roles["snapshot"].keyids]):  # type: ignore
        snap.sign(s, append=True)
    data = _dump(snap, w.repo / "metadata" / f"{snap.signed.version}.snapshot.json")
    sign_timestamp(w, MetaFile.from_data(snap.signed.version, data, ["sha256"]),
                   ts_version or old_ts.signed.version + 1)


def sign_timestamp(w: World, snapshot_meta: MetaFile, version: int) -> None:
    r = ringops.Repo(w.repo, w.keydir.path)
    root = r.root().signed
    ts = Metadata(Timestamp(version=version, expires=r.timestamp().signed.expires,
                            snapshot_meta=snapshot_meta))
    for s in w.signers([root.keys[k] for k in root.roles["timestamp"].keyids]):  # type: ignore
        ts.sign(s, append=True)
    _dump(ts, w.repo / "metadata" / "timestamp.json")
